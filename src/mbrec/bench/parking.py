r"""Parked checkpoints: carry an unfinished grid cell from one machine (or session) to the next.

A run folder (``runs/...``) is scratch space that does not survive the machine it was written on. Parking a
cell copies the files its resume needs — ``last.pt`` (model, optimiser, RNG states, history), ``best.pt``
(the model selected so far) and ``metrics.jsonl`` — into ``<parked_dir>/<cell name>/``, a folder that is
meant to be committed (``parked_dir`` defaults to ``benchmarks/parked/<grid name>``)::

    mbrec bench park benchmarks/grids/copf_taobao.yaml        # before the machine goes away; commit the folder
    mbrec bench run  benchmarks/grids/copf_taobao.yaml        # on the next machine: continues from the parked epoch

When a cell's run folder holds no checkpoint, or one of an earlier epoch, and a parked checkpoint of the
same config exists, :func:`mbrec.bench.grid.cell_status` reports ``resume (from parked epoch N)``; the
grid restores the parked files into the run folder and resumes there (bit-identically: the checkpoint
holds the RNG states). A cell that finishes removes its parked folder. Every copy is atomic (temporary
file + rename), so an interrupted park or restore never leaves half a checkpoint.

Parking also writes the cell's evaluations so far to ``<results_dir>/progress-<cell name>.jsonl``
(:func:`write_progress`: a header line with the command, machine and epoch, then one line per evaluation,
monitor evaluations included), so every number quoted for an unfinished run is in the results folder;
the cell's final record replaces it when it finishes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from mbrec.train.checkpoint import atomic_write_bytes, load_checkpoint

PARKED_FILES = ("last.pt", "best.pt", "metrics.jsonl")


def copy_atomic(src: Path, dst: Path) -> None:
    """Copy one file so that ``dst`` is either the old file or the whole new one."""
    with open(src, "rb") as fh:
        atomic_write_bytes(dst, lambda out: shutil.copyfileobj(fh, out, 1 << 20))


def copy_run_files(src_dir: Path, dst_dir: Path) -> None:
    """Copy the parked files present in ``src_dir``; ``last.pt`` goes last, so a reader that sees the new
    ``last.pt`` also sees the ``best.pt`` and ``metrics.jsonl`` that belong to it. Files of the set that
    ``src_dir`` lacks are removed from ``dst_dir`` (a stale ``best.pt`` must not outlive its run)."""
    for name in sorted(PARKED_FILES, key=lambda n: n == "last.pt"):
        src, dst = src_dir / name, dst_dir / name
        if src.exists():
            copy_atomic(src, dst)
        elif dst.exists():
            dst.unlink()


def park(run_dir: Path, parked: Path) -> None:
    """Copy a run folder's resume files to ``parked``."""
    if not (run_dir / "last.pt").exists():
        raise FileNotFoundError(f"{run_dir / 'last.pt'}: no checkpoint to park")
    copy_run_files(run_dir, parked)


def restore(parked: Path, run_dir: Path) -> None:
    """Copy a parked checkpoint back into the run folder."""
    if not (parked / "last.pt").exists():
        raise FileNotFoundError(f"{parked / 'last.pt'}: no parked checkpoint")
    run_dir.mkdir(parents=True, exist_ok=True)
    copy_run_files(parked, run_dir)


def unpark(parked: Path) -> None:
    """Remove a finished cell's parked folder (and the grid's parked folder once it is empty)."""
    if parked.exists():
        shutil.rmtree(parked)
    parent = parked.parent
    if parent.exists() and not any(parent.iterdir()):
        parent.rmdir()


def progress_path(results_dir: Path, cell_name: str) -> Path:
    return Path(results_dir) / f"progress-{cell_name}.jsonl"


def write_progress(path: Path, run_dir: Path, header: dict) -> None:
    """``header`` (plus a note that this is no result), then every evaluation in the run folder's
    ``last.pt`` (scheduled and monitor evaluations, by epoch), one JSON line each, written atomically."""
    state = load_checkpoint(run_dir / "last.pt")
    entries = sorted(state.get("history", []) + state.get("monitor", []), key=lambda e: e["epoch"])
    head = {"progress_of": path.stem.removeprefix("progress-"),
            "note": "evaluations of an unfinished (parked) run, not a result; 'seconds' = training seconds "
                    "so far", **header}
    text = "\n".join(json.dumps(line) for line in [head, *entries]) + "\n"
    atomic_write_bytes(path, lambda fh: fh.write(text.encode("utf-8")))
