"""End to end through the CLI: import a log, train, evaluate, recommend in original ids, resume."""

from __future__ import annotations

import csv
import json

import pytest

from mbrec.cli import main
from mbrec.data.registry import load_dataset


def _write_log(path, n_users=40, n_items=30, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    rows = []
    t = 0
    for u in range(n_users):
        liked = rng.choice(n_items, size=8, replace=False)
        for i in liked:
            t += 1
            rows.append((f"user-{u}", f"sku-{i}", "view", t))
        for i in liked[:5]:
            t += 1
            rows.append((f"user-{u}", f"sku-{i}", "buy", t))
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["user", "item", "behavior", "timestamp"])
        w.writerows(rows)


def test_record_counts_the_model_build_apart_from_training(tmp_path, monkeypatch):
    """Warm starts run while the model is built: the record reports that time as build_seconds."""
    import time

    import mbrec.train.runner as runner

    real = runner.build_for_run

    def slow_build(*args, **kwargs):
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "build_for_run", slow_build)
    log = tmp_path / "events.csv"
    _write_log(log)
    assert main(["data", "import", str(log), "--behaviors", "view,buy", "--out", str(tmp_path / "shop")]) == 0
    assert main(["train", "--model", "mf", "--dataset", str(tmp_path / "shop"), "--output-dir", str(tmp_path / "runs"),
                 "--results-dir", str(tmp_path / "results"), "--name", "shop", "--no-progress",
                 "--set", "train.epochs=1", "--set", "params.dim=8", "--set", "train.protocol=paper"]) == 0
    record = json.loads((tmp_path / "results" / "shop.json").read_text())
    assert 0.3 <= record["build_seconds"] < 30


def test_import_train_evaluate_recommend(tmp_path, capsys):
    log = tmp_path / "events.csv"
    _write_log(log)
    data_dir = tmp_path / "shop"
    assert main(["data", "import", str(log), "--behaviors", "view,buy", "--out", str(data_dir)]) == 0
    runs = tmp_path / "runs"
    results = tmp_path / "results"
    code = main(["train", "--model", "lightgcn_m", "--dataset", str(data_dir), "--output-dir", str(runs),
                 "--results-dir", str(results), "--name", "shop", "--no-progress",
                 "--set", "train.epochs=3", "--set", "train.eval_every=1", "--set", "params.dim=8",
                 "--set", "train.protocol=paper", "--set", "train.batch_size=64"])
    assert code == 0
    record = json.loads((results / "shop.json").read_text())
    for key in ("model", "dataset", "protocol", "seed", "epochs", "wall_seconds", "device", "command",
                "config", "metrics", "history"):
        assert key in record
    assert record["model"] == "lightgcn_m" and record["protocol"] == "paper"
    assert [h["epoch"] for h in record["history"]] == [1, 2, 3]
    assert "HR@10" in record["metrics"]
    lines = (runs / "shop" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3

    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(runs / "shop" / "best.pt"), "--ks", "10"]) == 0
    out = json.loads(capsys.readouterr().out)
    best = record["history"][record["selected_epoch"] - 1]["test"]
    assert out["metrics"]["HR@10"] == pytest.approx(best["HR@10"])

    assert main(["recommend", "--checkpoint", str(runs / "shop" / "best.pt"), "--users", "user-3,user-7",
                 "--k", "4", "--format", "json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    ds = load_dataset(str(data_dir))
    bought = {ds.item_ids[i] for i in ds.target_train[list(ds.user_ids).index("user-3")].indices}
    assert recs[0]["user"] == "user-3" and len(recs[0]["items"]) == 4
    assert all(item.startswith("sku-") for item in recs[0]["items"])
    assert not bought & set(recs[0]["items"])  # already-bought items are never recommended
    assert recs[0]["scores"] == sorted(recs[0]["scores"], reverse=True)


def test_resume_continues_run(tmp_path, capsys):
    args = ["train", "--model", "mf", "--dataset", "synthetic:tiny", "--output-dir", str(tmp_path),
            "--name", "r", "--no-progress", "--set", "train.eval_every=1", "--set", "train.protocol=paper"]
    assert main([*args, "--set", "train.epochs=2"]) == 0
    assert main([*args, "--set", "train.epochs=4", "--resume"]) == 0
    capsys.readouterr()
    record = json.loads((tmp_path / "r" / "result.json").read_text())
    assert [h["epoch"] for h in record["history"]] == [1, 2, 3, 4]


@pytest.mark.parametrize("argv, needle", [
    (["train", "--model", "nope", "--dataset", "synthetic:tiny"], "unknown model 'nope'"),
    (["train", "--model", "mf", "--dataset", "synthetic:tiny", "--set", "train.lrr=1"],
     "unknown key train.lrr"),
    (["train", "--model", "mf", "--dataset", "synthetic:tiny", "--set", "params.dim=abc"], "params.dim"),
    (["train", "--model", "mf", "--dataset", "synthetic:tiny", "--set", "train.protocol=validation"],
     "validation split"),
    (["evaluate", "--checkpoint", "/nonexistent/best.pt"], "/nonexistent/best.pt: file not found"),
])
def test_cli_errors_are_one_line(argv, needle, tmp_path, capsys):
    code = main([*argv, *(["--output-dir", str(tmp_path)] if argv[0] == "train" else [])])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("error: ") and needle in err
    assert len(err.splitlines()) == 1


def test_config_file_errors(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: mf\ntrain:\n  epochs: [1\n")
    assert main(["train", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "invalid YAML" in err


def test_evaluate_groups_and_noise_config(tmp_path, capsys):
    args = ["train", "--model", "mf", "--dataset", "synthetic:tiny", "--output-dir", str(tmp_path),
            "--name", "g", "--no-progress", "--set", "train.epochs=1", "--set", "train.protocol=paper"]
    assert main(args) == 0
    capsys.readouterr()
    plot = tmp_path / "groups.png"
    assert main(["evaluate", "--checkpoint", str(tmp_path / "g" / "best.pt"), "--groups",
                 "--groups-plot", str(plot)]) == 0
    out = capsys.readouterr().out
    overall = json.loads(out[: out.index("\n}\n") + 3])
    groups = json.loads(out[out.index("\n}\n") + 3:])["groups"]
    assert [g["group"] for g in groups] == ["<9", "9-12", "13-16", "17-19", ">=20"]
    assert sum(g["n_users"] for g in groups) == overall["users"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["evaluate", "--checkpoint", str(tmp_path / "g" / "best.pt"), "--ks", "10,50", "--seen"]) == 0
    out = capsys.readouterr().out
    seen = json.loads(out[out.index("\n}\n") + 3:])["seen"]
    assert seen["k"] == 10 and seen["users"] == overall["users"]
    assert seen["hit"] == pytest.approx(overall["metrics"]["HR@10"])
    assert set(seen["behaviors"]) == {"view", "cart"}

    from mbrec.config import load_run_config
    from mbrec.train.runner import load_run_dataset

    clean = load_run_dataset(load_run_config(base={"dataset": "synthetic:tiny"}))
    noisy = load_run_dataset(load_run_config(base={"dataset": "synthetic:tiny"},
                                             overrides=["data.noise_ratio=0.2", "data.noise_seed=3"]))
    for b in clean.behaviors[:-1]:
        assert noisy.train[b].nnz == clean.train[b].nnz + int(0.2 * clean.train[b].nnz)
    assert (noisy.target_train != clean.target_train).nnz == 0


def test_python_dash_m_runs_the_cli(tmp_path):
    """``python -m mbrec`` (what the GPU-machine scripts use, with nothing installed) is the same CLI."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src"
    env = {**os.environ, "PYTHONPATH": str(src)}
    done = subprocess.run([sys.executable, "-m", "mbrec", "models"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0 and "copf" in done.stdout and "mbssl" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "mbrec", "train", "--config", "nope.yaml"], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "nope.yaml" in bad.stderr
