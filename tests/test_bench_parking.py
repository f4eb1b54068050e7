"""Benchmark grids across machines: parked checkpoints, newer-checkpoint choice, busy cells, --seeds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from bench_helpers import TRAIN_SET, make_grid, quiet_run

from mbrec.bench import grid as grid_module
from mbrec.bench.grid import cell_status, expand_grid
from mbrec.bench.spec import GridSpec
from mbrec.config import ConfigError
from mbrec.train.trainer import Trainer


def crash_first_epochs(monkeypatch, grid: GridSpec, only: list[str]) -> None:
    """Run the ``only`` rows of the grid so that every cell fails right after its first epoch."""
    def crash(self, history):
        raise RuntimeError("simulated crash")

    with monkeypatch.context() as m:
        m.setattr(Trainer, "_write_metrics_log", crash)
        assert {s for _, s, _ in quiet_run(grid, only=only).outcomes} == {"failed"}


def test_parked_checkpoint_resumes_on_a_fresh_machine(finished, tmp_path, monkeypatch):
    straight_grid = finished[0]
    grid = make_grid(tmp_path, parked_dir=str(tmp_path / "parked"))
    crash_first_epochs(monkeypatch, grid, ["LGN-M"])
    lines: list[str] = []
    report = grid_module.park_grid(grid, only=["LGN-M"], log=lines.append)
    assert [s for _, s, _ in report.outcomes] == ["parked", "parked"]
    assert lines == ["LGN-M tiny s1: parked (epoch 1)", "LGN-M tiny s2: parked (epoch 1)",
                     f"grid tiny: 2 cells: 2 parked (in {tmp_path / 'parked'})"]
    parked = tmp_path / "parked" / "LGN-M-tiny-s1"
    assert sorted(p.name for p in parked.iterdir()) == ["best.pt", "last.pt"]  # the crash skipped metrics.jsonl
    assert (parked / "last.pt").read_bytes() == (Path(grid.output_dir) / "LGN-M-tiny-s1" / "last.pt").read_bytes()
    again = grid_module.park_grid(grid, only=["LGN-M"], log=lambda m: None)  # as new: nothing copied
    assert [(s, d) for _, s, d in again.outcomes] == [("kept", "epoch 1")] * 2
    # the evaluations so far are in the results folder, with the command that resumes the cell
    progress = Path(grid.results_dir) / "progress-LGN-M-tiny-s1.jsonl"
    head, *entries = [json.loads(line) for line in progress.read_text().splitlines()]
    assert head["progress_of"] == "LGN-M-tiny-s1" and head["epoch"] == 1 and "not a result" in head["note"]
    assert head["command"] == "mbrec bench run tiny --only LGN-M --seeds 1"
    assert entries == torch.load(parked / "last.pt", weights_only=False)["history"]
    assert [e["epoch"] for e in entries] == [1]

    shutil.rmtree(grid.output_dir)  # the machine is gone; only the parked folder survived
    cells = expand_grid(grid, only=["LGN-M"])
    assert [cell_status(c) for c in cells] == [("resume", "from parked epoch 1")] * 2
    second = quiet_run(grid, only=["LGN-M"])
    assert [s for _, s, _ in second.outcomes] == ["finished", "finished"]
    assert not (tmp_path / "parked").exists()  # finished cells are unparked
    assert not progress.exists()                 # and their progress logs replaced by the records
    for seed in (1, 2):
        name = f"LGN-M-tiny-s{seed}.json"
        resumed = json.loads((Path(grid.results_dir) / name).read_text())
        straight = json.loads((Path(straight_grid.results_dir) / name).read_text())
        for a, b in zip(resumed["history"], straight["history"], strict=True):
            assert {k: a[k] for k in ("epoch", "test", "loss")} == {k: b[k] for k in ("epoch", "test", "loss")}


def test_progress_only_logs_a_given_up_cell_and_keeps_no_checkpoint(tmp_path, monkeypatch):
    grid = make_grid(tmp_path, parked_dir=str(tmp_path / "parked"), seeds=[1])
    crash_first_epochs(monkeypatch, grid, ["MF"])
    grid_module.park_grid(grid, only=["MF"], log=lambda m: None)          # parked first, then given up
    assert (tmp_path / "parked" / "MF-tiny-s1" / "last.pt").exists()
    lines: list[str] = []
    report = grid_module.park_grid(grid, only=["MF"], log=lines.append, progress_only=True)
    assert [(s, d) for _, s, d in report.outcomes] == [("logged", "epoch 1, no checkpoint kept")]
    assert not (tmp_path / "parked").exists()                            # nothing left that claims to resume it
    head, *entries = [json.loads(line) for line in
                      (Path(grid.results_dir) / "progress-MF-tiny-s1.jsonl").read_text().splitlines()]
    assert head["parked"] is None and head["epoch"] == 1 and [e["epoch"] for e in entries] == [1]
    assert lines[-1] == f"grid tiny: 1 cells: 1 logged (in {tmp_path / 'parked'})"
    shutil.rmtree(grid.output_dir)                                       # no run folder: nothing to log
    again = grid_module.park_grid(grid, only=["MF"], log=lambda m: None, progress_only=True)
    assert [s for _, s, _ in again.outcomes] == ["run"]


def test_newer_local_checkpoint_wins_over_an_older_parked_one(tmp_path, monkeypatch):
    grid = make_grid(tmp_path, parked_dir=str(tmp_path / "parked"), seeds=[1])
    crash_first_epochs(monkeypatch, grid, ["MF"])
    grid_module.park_grid(grid, only=["MF"], log=lambda m: None)
    cell = expand_grid(grid, only=["MF"])[0]
    assert cell_status(cell) == ("resume", "from epoch 1")  # same epoch locally: no restore needed
    # a parked checkpoint of another config is ignored
    other = expand_grid(make_grid(tmp_path, parked_dir=str(tmp_path / "parked"), seeds=[1],
                                  set=[*TRAIN_SET, "train.lr=0.02"]), only=["MF"])[0]
    shutil.rmtree(grid.output_dir)
    assert cell_status(other) == ("run", "")


def test_a_cell_that_another_process_runs_is_skipped(tmp_path):
    grid = make_grid(tmp_path, seeds=[1, 2])
    cells = expand_grid(grid, only=["MF"])
    with grid_module.cell_lock(cells[0]) as mine:
        assert mine
        with grid_module.cell_lock(cells[0]) as second:  # a second holder (another process) is refused
            assert not second
        assert cell_status(cells[0]) == ("busy", "another process runs it")
        report = quiet_run(grid, only=["MF"])
    assert [(c.seed, s) for c, s, _ in report.outcomes] == [(1, "busy"), (2, "finished")]
    assert cell_status(cells[0]) == ("run", "")  # released
    assert [c.seed for c in expand_grid(grid, seeds=[2])] == [2, 2]
    with pytest.raises(ConfigError, match="--seeds: 9 is not a seed"):
        expand_grid(grid, seeds=[9])
