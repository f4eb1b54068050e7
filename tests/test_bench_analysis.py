"""Group analysis and noise robustness of benchmark grids: records, backfill, summary tables, plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bench_helpers import DATASET

from mbrec.bench.analysis import backfill_groups, noise_section
from mbrec.bench.spec import GridSpec
from mbrec.bench.summary import build_summary, render_markdown
from mbrec.config import ConfigError, RunConfig, from_dict
from mbrec.eval.evaluator import evaluate
from mbrec.eval.groups import assign_groups
from mbrec.train.checkpoint import load_checkpoint
from mbrec.train.runner import build_for_run


def test_records_hold_the_group_metrics_of_the_selected_model(finished):
    grid = finished[0]
    path = Path(grid.results_dir) / "LGN-M-tiny-s1.json"
    record = json.loads(path.read_text())
    groups = record["groups"]
    assert groups["protocol"] == "paper" and groups["epoch"] == record["selected_epoch"]
    assert [r["group"] for r in groups["rows"]] == ["<9", "9-12", "13-16", "17-19", ">=20"]
    # every tiny user has 3 train buys: all in the first group, whose means equal the selected metrics
    assert [r["n_users"] for r in groups["rows"]] == [DATASET.n_users, 0, 0, 0, 0]
    assert groups["rows"][1]["metrics"]["HR@10"] is None
    for m, v in record["metrics"].items():
        assert groups["rows"][0]["metrics"][m] == pytest.approx(v, abs=1e-12)


def test_group_means_equal_a_plain_recomputation_from_best_pt(finished):
    grid = finished[0]
    cfg_record = json.loads((Path(grid.results_dir) / "MF-tiny-s2.json").read_text())
    run_dir = Path(grid.output_dir) / "MF-tiny-s2"
    state = load_checkpoint(run_dir / "best.pt")
    run_cfg = from_dict(RunConfig, state["run_config"])
    model, _ = build_for_run(run_cfg, DATASET, skip_warm_start=True)
    model.load_state_dict(state["model"])
    res = evaluate(model, DATASET, "test", ks=[10])
    # group by hand with a loop over the per-user values
    counts = np.diff(DATASET.target_train.indptr)[res.users]
    groups = assign_groups(counts)
    for g, row in enumerate(cfg_record["groups"]["rows"]):
        members = [i for i in range(len(res.users)) if groups[i] == g]
        if members:
            assert row["metrics"]["NDCG@10"] == pytest.approx(
                sum(res.per_user["NDCG@10"][i] for i in members) / len(members), abs=1e-12)


def test_backfill_adds_groups_to_records_that_lack_them(finished, tmp_path):
    grid = finished[0]
    results = Path(grid.results_dir)
    path = results / "MF-tiny-s1.json"
    original = json.loads(path.read_text())
    stripped = {k: v for k, v in original.items() if k != "groups"}
    path.write_text(json.dumps(stripped))
    lines: list[str] = []
    counts = backfill_groups(grid, log=lines.append, load_dataset=lambda cfg: DATASET)
    assert counts == {"added": 1, "present": 3}
    assert "MF tiny s1: added" in lines
    restored = json.loads(path.read_text())
    assert restored["groups"] == original["groups"]
    assert json.loads((Path(grid.output_dir) / "MF-tiny-s1" / "result.json").read_text())["groups"] == \
        original["groups"]
    # a record whose checkpoint is gone (trained on another machine): reported, not changed
    best = Path(grid.output_dir) / "MF-tiny-s1" / "best.pt"
    best.rename(tmp_path / "best.pt")
    path.write_text(json.dumps(stripped))
    try:
        counts = backfill_groups(grid, log=lambda m: None, load_dataset=lambda cfg: DATASET)
        assert counts["no checkpoint"] == 1 and "groups" not in json.loads(path.read_text())
    finally:
        (tmp_path / "best.pt").rename(best)
        path.write_text(json.dumps(original))


def test_summary_group_table_is_the_mean_and_std_over_seeds(finished):
    grid = finished[0]
    summary = build_summary(grid.results_dir)
    section = summary["datasets"]["tiny"]["groups"]
    assert section["groups"][0] == "<9" and section["n_users"][0] == DATASET.n_users
    rows = {r["label"]: r for r in section["rows"]}
    for label in ("MF", "LGN-M"):
        values = [json.loads((Path(grid.results_dir) / f"{label}-tiny-s{s}.json").read_text())
                  ["groups"]["rows"][0]["metrics"]["HR@10"] for s in (1, 2)]
        stat = rows[label]["metrics"]["HR@10"][0]
        assert stat["mean"] == pytest.approx(np.mean(values)) and stat["std"] == pytest.approx(np.std(values, ddof=1))
    assert rows["MF"]["metrics"]["HR@10"][1] is None          # an empty group has no value
    md = render_markdown(summary)
    assert "### Metrics by user group" in md and f"<9 ({DATASET.n_users:,})" in md
    assert "| MF | 2 | " in md and "| – | – | – | – |" in md


def hand(label: str, seed: int, hr: float, ratio: float = 0.0) -> dict:
    dataset = f"d-noise{ratio:g}" if ratio else "d"     # as inject_noise names the noisy dataset
    return {"model": "m", "dataset": dataset, "device": "cpu: test", "metrics": {"HR@10": hr},
            "config": {"name": f"{label}-d-s{seed}", "dataset": "d", "data": {"noise_ratio": ratio},
                       "train": {"seed": seed, "select_metric": "HR@10"}},
            "history": [{"epoch": 1, "test": {"HR@10": hr, "NDCG@10": hr / 2}}]}


def test_noise_rows_report_the_relative_drop_of_the_seed_means(tmp_path):
    folder = tmp_path / "res"
    folder.mkdir()
    for seed, (clean, noisy) in enumerate([(0.20, 0.15), (0.30, 0.21)], 1):
        (folder / f"A-d-s{seed}.json").write_text(json.dumps(hand("A", seed, clean)))
        (folder / f"A-noise-d-s{seed}.json").write_text(json.dumps(hand("A-noise", seed, noisy, 0.2)))
    (folder / "grid.json").write_text(json.dumps({"labels": ["A", "A-noise"], "noise_of": {"A-noise": "A"}}))
    summary = build_summary(folder)
    assert list(summary["datasets"]) == ["d"]            # noisy rows share their clean rows' table
    (entry,) = summary["datasets"]["d"]["noise"]
    assert entry["clean"] == "A" and entry["noise_ratio"] == [0.2] and entry["seeds"] == [1, 2]
    # clean mean 0.25, noisy mean 0.18: drop 28 %
    assert entry["metrics"]["HR@10"]["relative_drop"] == pytest.approx((0.25 - 0.18) / 0.25)
    assert entry["metrics"]["NDCG@10"]["relative_drop"] == pytest.approx((0.125 - 0.09) / 0.125)
    md = render_markdown(summary)
    assert "### Noise robustness" in md and "| A-noise | A | 0.2 | 2 | 0.1800 / 0.2500 (+28.0%)" in md
    # no clean row: nothing to compare
    assert noise_section(summary["datasets"]["d"]["protocols"]["paper"]["rows"][1:], [], {"A-noise": "A"},
                         lambda r: "") == []


def test_noise_of_must_name_another_row():
    base = {"name": "g", "datasets": ["tiny"], "seeds": [1]}
    for bad in ("missing", "A"):
        with pytest.raises(ConfigError, match="noise_of"):
            from_dict(GridSpec, {**base, "models": [{"label": "A", "model": "mf", "noise_of": bad}]}).validate()
    spec = from_dict(GridSpec, {**base, "models": [{"label": "A", "model": "mf"},
                                                   {"label": "B", "model": "mf", "noise_of": "A"}]})
    spec.validate()
