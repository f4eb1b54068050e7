"""Benchmark grids (run, skip finished cells, resume interrupted ones), summaries, statistics, plots, CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from bench_helpers import REPO, TRAIN_SET, make_grid, quiet_run

from mbrec.bench import grid as grid_module
from mbrec.bench.grid import cell_status, expand_grid
from mbrec.bench.spec import load_grid
from mbrec.bench.summary import (
    write_summary,
)
from mbrec.cli import bench as bench_cli
from mbrec.config import ConfigError
from mbrec.train.trainer import Trainer


def records_by_label(results: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for path in sorted(results.glob("*-tiny-s*.json")):
        record = json.loads(path.read_text())
        out.setdefault(path.name.rsplit("-tiny-", 1)[0], []).append(record)
    return out


# ------------------------------------------------------------------------------------ grid spec
def test_grid_spec_errors_name_the_key(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({"name": "g", "datasets": ["tiny"], "seeds": [1], "epochs": 3,
                                    "models": [{"label": "MF", "model": "mf"}]}))
    with pytest.raises(ConfigError, match=r"g\.yaml: unknown key epochs"):
        load_grid(path)
    with pytest.raises(ConfigError, match="labels: MF appears twice"):
        make_grid(tmp_path, models=[{"label": "MF", "model": "mf"}, {"label": "MF", "model": "lightgcn"}])
    with pytest.raises(ConfigError, match="baseline_labels: unknown label 'GHCF'"):
        make_grid(tmp_path, baseline_labels=["GHCF"])
    with pytest.raises(ConfigError, match=r"models\[1\]\.datasets: 'beibei'"):
        make_grid(tmp_path, models=[{"label": "MF", "model": "mf"},
                                    {"label": "X", "model": "mf", "datasets": ["beibei"]}])
    with pytest.raises(ConfigError, match="--only: unknown label 'COPF'"):
        expand_grid(make_grid(tmp_path), only=["COPF"])
    with pytest.raises(ConfigError, match="imports.MF: must be .* not a label of this grid"):
        make_grid(tmp_path, imports={"MF": "elsewhere"})
    with pytest.raises(ConfigError, match="imports.COPF: the results folder"):
        make_grid(tmp_path, imports={"COPF": ""})
    grid = make_grid(tmp_path, imports={"COPF": "elsewhere"}, proposed_labels=["COPF"])
    assert grid.row_labels == [*grid.labels, "COPF"]
    assert [c.label for c in expand_grid(grid)] == [c.label for c in expand_grid(make_grid(tmp_path))]
    meta = json.loads(grid_module.write_grid_meta(grid, None).read_text())
    assert (meta["labels"], meta["imports"]) == (["MF", "LGN-M", "COPF"], {"COPF": "elsewhere"})


def test_cell_configs_layer_file_grid_and_entry_overrides(tmp_path):
    cfg_file = tmp_path / "lgn_tiny.yaml"
    cfg_file.write_text(yaml.safe_dump({"model": "lightgcn", "dataset": "elsewhere",
                                        "params": {"dim": 4, "layers": 3, "reg": 0.5},
                                        "train": {"epochs": 50, "seed": 7, "lr": 0.1}}))
    grid = make_grid(tmp_path, datasets=["tiny", "beibei:small"], models=[
        {"label": "LGN", "model": "lightgcn", "config": str(tmp_path / "lgn_{dataset}.yaml"),
         "set": ["params.layers=2", "train.epochs=3"]},
        {"label": "MF", "model": "mf", "datasets": ["tiny"]}])
    cells = expand_grid(grid)
    assert [c.name for c in cells] == ["LGN-tiny-s1", "LGN-tiny-s2", "MF-tiny-s1", "MF-tiny-s2",
                                       "LGN-beibei-small-s1", "LGN-beibei-small-s2"]
    cfg = cells[1].config
    assert (cfg.model, cfg.dataset, cfg.train.seed, cfg.name) == ("lightgcn", "tiny", 2, "LGN-tiny-s2")
    assert cfg.params == {"dim": 8, "layers": 2, "reg": 0.5}  # file, then grid set, then entry set
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.batch_size) == (3, 0.01, 64)
    assert cfg.results_dir == str(tmp_path / "results") and cfg.output_dir == str(tmp_path / "runs")
    # beibei has no lgn_beibei.yaml: skipped, not an error
    missing = f"no config {tmp_path / 'lgn_beibei.yaml'}"
    assert [cell_status(c) for c in cells[4:]] == [("skipped", missing)] * 2
    assert [cell_status(c)[0] for c in cells[:4]] == ["run"] * 4

    with pytest.raises(ConfigError, match="is a config of model 'lightgcn', the entry says 'mf'"):
        expand_grid(make_grid(tmp_path, models=[{"label": "M", "model": "mf", "config": str(cfg_file)}]))
    with pytest.raises(ConfigError, match="MF on tiny: unknown key params.layers"):
        expand_grid(make_grid(tmp_path, models=[{"label": "MF", "model": "mf", "set": ["params.layers=2"]}]))


# ------------------------------------------------------------------------------------ running
def test_all_cells_run_once_and_are_then_skipped(finished, monkeypatch):
    grid, report, lines = finished
    assert [(c.name, s) for c, s, _ in report.outcomes] == [
        ("MF-tiny-s1", "finished"), ("MF-tiny-s2", "finished"),
        ("LGN-M-tiny-s1", "finished"), ("LGN-M-tiny-s2", "finished")]
    assert lines[0] == "[1/4] MF tiny s1: run" and lines[1].startswith("[1/4] MF tiny s1: finished (HR@10=")
    results = Path(grid.results_dir)
    for cell, _, _ in report.outcomes:
        record = json.loads((results / f"{cell.name}.json").read_text())
        assert record["config"]["train"]["seed"] == cell.seed and record["epochs"] == 2
        assert record["command"] == f"mbrec bench run tiny --only {cell.label} --seeds {cell.seed}"  # reruns it
        assert [h["epoch"] for h in record["history"]] == [1, 2]
    assert json.loads((results / "grid.json").read_text())["labels"] == ["MF", "LGN-M"]

    def must_not_train(*args, **kwargs):
        raise AssertionError("a finished cell was run again")

    monkeypatch.setattr(grid_module, "run_training", must_not_train)
    again: list[str] = []
    rerun = quiet_run(grid, again)
    assert [s for _, s, _ in rerun.outcomes] == ["done"] * 4 and rerun.exit_code == 0
    assert again[-1] == "grid tiny: 4 cells: 4 done"

    # a changed config is not "the same cell": it runs again
    changed = make_grid(Path(grid.output_dir).parent, set=[*TRAIN_SET, "train.lr=0.02"])
    assert {cell_status(c)[0] for c in expand_grid(changed)} == {"run"}

    # command-line overrides come last; threads, progress and device do not change what a cell computes
    threaded = expand_grid(grid, extra_set=["train.threads=1", "train.progress=true", "train.device=auto"])
    assert threaded[0].config.train.threads == 1
    assert [cell_status(c)[0] for c in threaded] == ["done"] * 4
    hmg_threads = expand_grid(grid, extra_set=["train.hmg.task_threads=2"])
    assert [cell_status(c)[0] for c in hmg_threads] == ["done"] * 4
    # a record written before train.hmg.task_threads existed (no such key) is still the same cell
    record_path = Path(threaded[0].config.results_dir) / f"{threaded[0].name}.json"
    record = json.loads(record_path.read_text())
    record["config"]["train"]["hmg"].pop("task_threads")
    record_path.write_text(json.dumps(record))
    assert cell_status(threaded[0])[0] == "done"
    # nor is one written before a computing setting existed whose default keeps the old behaviour
    for key in ("projection", "scale_norm", "scope"):
        record["config"]["train"]["hmg"].pop(key)
    record_path.write_text(json.dumps(record))
    assert cell_status(threaded[0])[0] == "done"
    # but a record with that setting at another value, or with a key today's config does not know, is another cell
    record["config"]["train"]["hmg"]["projection"] = "always"
    record_path.write_text(json.dumps(record))
    assert cell_status(threaded[0])[0] != "done"        # (it resumes from the run folder's checkpoint)
    record["config"]["train"]["hmg"].pop("projection")
    record["config"]["train"]["hmg"]["renamed_switch"] = 1
    record_path.write_text(json.dumps(record))
    assert cell_status(threaded[0])[0] != "done"
    record["config"]["train"]["hmg"].pop("renamed_switch")
    record_path.write_text(json.dumps(record))
    assert cell_status(threaded[0])[0] == "done"
    shorter = expand_grid(grid, only=["MF"], extra_set=["train.epochs=1"])
    assert [(c.config.train.epochs, cell_status(c)[0]) for c in shorter] == [(1, "run"), (1, "run")]


def test_interrupted_cell_resumes_from_its_checkpoint(finished, tmp_path, monkeypatch, capsys):
    straight_grid = finished[0]
    grid = make_grid(tmp_path)
    crashes = []

    def crash_after_first_epoch(self, history):
        crashes.append(history[-1]["epoch"])
        raise RuntimeError("simulated crash")

    with monkeypatch.context() as m:
        m.setattr(Trainer, "_write_metrics_log", crash_after_first_epoch)
        first = quiet_run(grid, only=["LGN-M"])
    assert crashes == [1, 1] and [s for _, s, _ in first.outcomes] == ["failed", "failed"]
    assert first.exit_code == 1 and "RuntimeError: simulated crash" in first.outcomes[0][2]
    assert not list(Path(grid.results_dir).glob("LGN-M-*.json"))

    cells = expand_grid(grid, only=["LGN-M"])
    assert [cell_status(c) for c in cells] == [("resume", "from epoch 1")] * 2
    dry = quiet_run(grid, only=["LGN-M"], dry_run=True)
    assert [s for _, s, _ in dry.outcomes] == ["resume", "resume"]
    capsys.readouterr()
    second = quiet_run(grid, only=["LGN-M"])
    assert [s for _, s, _ in second.outcomes] == ["finished", "finished"]
    assert capsys.readouterr().err.count("at epoch 1") == 2  # the trainer's "resumed from ..." lines

    # the resumed runs equal the uninterrupted runs of the same cells
    for seed in (1, 2):
        name = f"LGN-M-tiny-s{seed}.json"
        resumed = json.loads((Path(grid.results_dir) / name).read_text())
        straight = json.loads((Path(straight_grid.results_dir) / name).read_text())
        for a, b in zip(resumed["history"], straight["history"], strict=True):
            assert {k: a[k] for k in ("epoch", "test", "valid", "loss")} == {
                k: b[k] for k in ("epoch", "test", "valid", "loss")}


# ------------------------------------------------------------------------------------ summary
def test_summary_means_and_stds_equal_numpy_of_the_records(finished):
    grid = finished[0]
    results = Path(grid.results_dir)
    md_path, json_path = write_summary(results)
    summary = json.loads(json_path.read_text())
    md = md_path.read_text()
    records = records_by_label(results)
    assert summary["seeds"] == [1, 2] and summary["runs"] == 4
    section = summary["datasets"]["tiny"]["protocols"]
    for protocol, split in (("paper", "test"), ("validation", "valid")):
        rows = {r["label"]: r for r in section[protocol]["rows"]}
        assert list(rows) == ["MF", "LGN-M"] and section[protocol]["metrics"] == ["HR@10", "NDCG@10"]
        for label, recs in records.items():
            # plain reference: the last history entry with the largest HR@10 on the selection split
            chosen = []
            for rec in recs:
                best = max(range(len(rec["history"])), key=lambda i: (rec["history"][i][split]["HR@10"], i))
                chosen.append(rec["history"][best]["test"])
            for metric in ("HR@10", "NDCG@10"):
                values = np.array([c[metric] for c in chosen])
                stat = rows[label]["metrics"][metric]
                assert stat["mean"] == pytest.approx(np.mean(values), abs=1e-15)
                assert stat["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-15)
                row_line = next(line for line in md.split(f"### Protocol: {protocol}")[1].splitlines()
                                if line.startswith(f"| {label} |"))
                assert f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}" in row_line
    assert "- seeds: 1, 2" in md and "- machine: cpu: " in md and "- protocols: paper" in md


# ------------------------------------------------------------------------------------ plots
def test_plots_are_png_files(finished, tmp_path):
    pytest.importorskip("matplotlib")
    from mbrec.bench.plots import plot_results

    results = Path(finished[0].results_dir)
    paths = plot_results(results, tmp_path / "plots")
    assert sorted(p.relative_to(tmp_path / "plots").as_posix() for p in paths) == [
        "bars_tiny.png", "curves/LGN-M-tiny-s1.png", "curves/LGN-M-tiny-s2.png",
        "curves/MF-tiny-s1.png", "curves/MF-tiny-s2.png", "groups_tiny.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "plots").rglob("*.tmp"))


# ------------------------------------------------------------------------------------ CLI and grid files
def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mbrec")
    bench_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_cli_run_summary_and_errors(finished, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ndatasets: [tiny]\nseeds: [1]\nmodels: [{label: X, model: nope}]\n")
    assert cli(["bench", "run", str(bad), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: X on tiny: unknown model 'nope'") and err.count("\n") == 1
    assert cli(["bench", "summary", str(tmp_path / "missing")]) == 2
    assert "no such results folder" in capsys.readouterr().err

    grid_file = tmp_path / "grid.yaml"
    grid_file.write_text(yaml.safe_dump(json.loads(json.dumps(
        {**vars(finished[0]), "models": [vars(m) for m in finished[0].models]}))))
    assert cli(["bench", "run", str(grid_file), "--only", "MF", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    results = finished[0].results_dir
    assert out[:2] == [f"[1/2] MF tiny s1: done (cached {results}/MF-tiny-s1.json)",
                       f"[2/2] MF tiny s2: done (cached {results}/MF-tiny-s2.json)"]
    assert cli(["bench", "run", str(grid_file), "--only", "MF", "--dry-run", "--set", "train.threads=1"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("[1/2] MF tiny s1: done")
    assert cli(["bench", "run", str(grid_file), "--dry-run", "--set", "train.nope=1"]) == 2
    assert "unknown key" in capsys.readouterr().err
    assert cli(["bench", "summary", finished[0].results_dir]) == 0
    assert "## tiny" in capsys.readouterr().out
    assert cli(["bench", "run", str(grid_file), "--seeds", "2", "--only", "MF", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"[1/1] MF tiny s2: done (cached {results}/MF-tiny-s2.json)"
    assert cli(["bench", "park", str(grid_file), "--only", "MF"]) == 0  # finished cells: nothing to park
    assert capsys.readouterr().out.splitlines()[-1].startswith("grid tiny: 2 cells: 2 done (in ")
    assert cli(["bench", "park", str(grid_file), "--seeds", "5"]) == 2
    assert "--seeds: 5 is not a seed" in capsys.readouterr().err


def test_cli_summary_of_several_folders_fills_the_readme(finished, tmp_path, capsys):
    import shutil

    first = Path(finished[0].results_dir)
    second = tmp_path / "second"
    shutil.copytree(first, second)
    readme = tmp_path / "README.md"
    readme.write_text("# x\n<!-- results:start -->\nold\n<!-- results:end -->\n")
    assert cli(["bench", "summary", str(first), str(second), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old" not in text
    assert f"**{first.name}**" in text and "**second**" in text
    assert text.count("| model |") == 2
    assert f"Generated by `mbrec bench summary {first} {second} --readme {readme}` (do not edit by hand)." in text


def test_shipped_grid_files_are_valid(monkeypatch):
    monkeypatch.chdir(REPO)  # config paths in grid files are relative to the repository root
    smoke = load_grid("benchmarks/grids/smoke.yaml")
    assert smoke.datasets == ["synthetic"] and len(smoke.seeds) == 2
    assert sorted(m.model for m in smoke.models) == ["lightgcn", "lightgcn_m", "mf"]
    cells = expand_grid(smoke)  # every smoke cell has its config and validates
    assert len(cells) == 6 and all(c.config is not None and c.config.train.epochs <= 6 for c in cells)
    expected = {"mf", "lightgcn", "lightgcn_m", "copf", "mbssl", "ghcf", "ehcf", "mbgcn", "crgcn", "mbcgcn",
                "pkef", "lightgcn_m_dfme", "dfme"}
    for name in ("taobao", "beibei"):
        grid = load_grid(REPO / f"benchmarks/grids/{name}.yaml")
        assert grid.datasets == [name] and grid.seeds == [1, 2, 3]
        assert {m.model for m in grid.models} == expected
        assert all(m.config == f"configs/{m.model}_{{dataset}}.yaml" for m in grid.models if m.model != "dfme")
        grid_cells = expand_grid(grid)
        plugin_cells = [c for c in grid_cells if c.config and c.config.model == "dfme" and c.seed == 1]
        probes = {"taobao": {"CRGCN+DFME-L411": "crgcn", "MB-CGCN+DFME-bbreg0": "mbcgcn",
                  "MB-CGCN+DFME-cold": "mbcgcn", "CRGCN+DFME-reg0": "crgcn", "CRGCN+DFME-reg1e-4": "crgcn",
                  "MB-CGCN+DFME-reg1e-4": "mbcgcn", "MB-CGCN+DFME-cold-reg1e-4": "mbcgcn",
                  "MB-CGCN+DFME-cold-std0.3-reg1e-4": "mbcgcn"}, "beibei": {}}[name]
        assert {c.label: c.config.params["backbone"] for c in plugin_cells} == {
            "CRGCN+DFME": "crgcn", "MB-CGCN+DFME": "mbcgcn", "PKEF+DFME": "pkef", **probes}
        if name == "taobao":     # the probes differ from their rows in the one setting they test (and the monitor)
            cells = {c.label: c.config for c in grid_cells if c.config and c.seed == 1}
            assert cells["CRGCN+DFME-L411"].params["backbone_params"]["layers"] == [4, 1, 1]
            assert cells["MB-CGCN+DFME-bbreg0"].params["backbone_reg"] == 0.0
            assert cells["MB-CGCN+DFME"].params.get("backbone_reg") is None
            assert cells["MB-CGCN+DFME-cold"].params["backbone_params"]["pretrain_epochs"] == 0
            assert cells["MB-CGCN+DFME"].params["backbone_params"]["pretrain_epochs"] == 800
            # the μ probes change the L2 term's μ and nothing else of their row's config
            for probe, row, mu in [("CRGCN+DFME-reg0", "CRGCN+DFME", 0.0), ("CRGCN+DFME-reg1e-4", "CRGCN+DFME", 1e-4),
                                   ("MB-CGCN+DFME-reg1e-4", "MB-CGCN+DFME", 1e-4),
                                   ("LightGCN-M+DFME-reg0", "LightGCN-M+DFME", 0.0),
                                   ("LightGCN-M+DFME-reg1e-3", "LightGCN-M+DFME", 1e-3),
                                   ("LightGCN-M+DFME-reg1e-4", "LightGCN-M+DFME", 1e-4)]:
                assert cells[row].params["reg"] == 0.01 and cells[probe].params["reg"] == mu
                assert {**cells[probe].params, "reg": 0.01} == cells[row].params
                assert cells[probe].train.monitor_every == 10 and cells[row].train.monitor_every == 0
            cold = cells["MB-CGCN+DFME-cold-reg1e-4"].params                 # and the cold start at μ = 1e-4
            assert cold["reg"] == 1e-4 and cold["backbone_params"]["pretrain_epochs"] == 0
            assert {**cold, "reg": 0.01} == cells["MB-CGCN+DFME-cold"].params
            wide = cells["MB-CGCN+DFME-cold-std0.3-reg1e-4"].params          # and at a wider initialisation
            assert wide["backbone_params"]["init_std"] == 0.3 and cold["backbone_params"]["init_std"] == 0.01
            assert {**wide, "backbone_params": {**wide["backbone_params"], "init_std": 0.01}} == cold
        valid_rows = {"beibei": {"COPF-valid", "MBSSL-valid"}, "taobao": set()}[name]
        assert set(grid.proposed_labels) == {"COPF", "MBSSL"} | set(grid.imports)  # -valid rows: fewer buys
        assert {c.label for c in grid_cells if c.config and c.config.data.validation == "holdout"} == valid_rows
    copf_grid = load_grid(REPO / "benchmarks/grids/copf_taobao.yaml")
    # the Taobao table imports COPF's final configuration from the grid that trains it
    assert load_grid(REPO / "benchmarks/grids/taobao.yaml").imports == {"COPF-L411": str(copf_grid.results_path)}
    assert "COPF-L411" in copf_grid.labels and load_grid(REPO / "benchmarks/grids/beibei.yaml").imports == {}
    copf = expand_grid(copf_grid)
    assert len(copf) == 54 and all(c.config.model == "copf" for c in copf)
    # the Table 3 ablations run 120 of the 200 epochs (a stated CPU budget), every other row all 200
    assert {c.label: c.config.train.epochs for c in copf if c.config.train.epochs != 200} == {
        label: 120 for label in ("wo-COGCN", "wo-DFME", "wo-con", "wo-fit")}
    switches = {c.label: (c.config.params.get("variant"), c.config.params["stop_grad"], c.config.params["tau"])
                for c in copf}
    assert switches["COPF"] == (None, "official", 0.1) and switches["COPF-sg-paper"][1] == "paper"
    assert switches["COPF-tau0.2"][2] == 0.2 and switches["wo-con"][0] == "wo_con"
    assert switches["COPF-L411-tau0.2"][2] == 0.2 and switches["COPF-L411-tau0.3"][2] == 0.3
    layers = {c.label: c.config.params["cogcn_layers"] for c in copf}
    assert layers["COPF"] == [1, 1, 1] and layers["COPF-L2"] == [2, 2, 2] and layers["COPF-L3"] == [3, 3, 3]
    assert layers["COPF-L411"] == [4, 1, 1] and layers["COPF-L411-sg-paper"] == [4, 1, 1]
    assert layers["COPF-L411-valid"] == [4, 1, 1]             # the final configuration, validation-selected too
    assert layers["COPF-L411-tau0.2"] == layers["COPF-L411-tau0.3"] == [4, 1, 1]
    scales = {c.label: c.config.params.get("fit_scale", 0.1) for c in copf}
    assert scales["COPF-L411-fit1"] == 1.0 and layers["COPF-L411-fit1"] == [4, 1, 1] and scales["COPF-L411"] == 0.1
    weights = {c.label: c.config.params["bpr_weights"] for c in copf}
    assert layers["COPF-L411-w033"] == [4, 1, 1] and weights["COPF-L411-w033"] == pytest.approx([0, 2 / 3, 1 / 3])
    assert weights["COPF-L411"] == pytest.approx([1 / 3] * 3)
    assert switches["COPF-L411-sg-paper"][1] == "paper"
    schedules = {c.label: c.config.train.lr_schedule for c in copf}
    assert schedules["COPF-L411-sg-paper-constlr"] == "constant" and schedules["COPF-L411-sg-paper"] == "staircase"
    assert layers["COPF-L411-sg-paper-constlr"] == [4, 1, 1] and switches["COPF-L411-sg-paper-constlr"][1] == "paper"
    holdout = {c.label for c in copf if c.config.data.validation == "holdout"}
    assert holdout == {"COPF-valid", "COPF-L411-valid"}
    # MBGCN search (baselines.md 2.5): with the taobao grid's MBGCN row, item_score_weight x lr is the full 2 x 3 grid
    search = expand_grid(load_grid(REPO / "benchmarks/grids/mbgcn_taobao.yaml"))
    taobao_mbgcn = [c for c in expand_grid(load_grid(REPO / "benchmarks/grids/taobao.yaml")) if c.label == "MBGCN"]
    points = {(c.config.params["item_score_weight"], c.config.train.lr) for c in search + taobao_mbgcn}
    assert points == {(w, lr) for w in (0.1, 1.0) for lr in (1e-4, 3e-4, 1e-3)} and len(search) == 15
    assert all(c.config.model == "mbgcn" and c.config.params["pretrain_epochs"] == 50 for c in search)
