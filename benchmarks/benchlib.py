"""Pieces shared by the ``benchmarks/bench_*.py`` scripts: machine and command records, timing, datasets.

The scripts are run as ``python benchmarks/<script>.py``, so this folder is first on ``sys.path`` and they
import this file as the sibling module ``benchlib``.

Benchmarks measure what training does. The ``mbrec`` command asks PyTorch's allocator for transparent huge
pages before torch loads (:func:`mbrec.train.allocator.request_huge_pages`); a script imports torch first,
so when ``THP_MEM_ALLOC_ENABLE`` is unset (and ``MBREC_MALLOC_TUNING`` is not 0) importing this module
restarts the script once with it set to 1. Set it to 0 to measure without.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from mbrec.data.dataset import MultiBehaviorDataset
from mbrec.data.registry import DatasetNotFound, load_dataset
from mbrec.train.allocator import HUGE_PAGES_ENV, freed_memory_kept, huge_pages, mmap_enabled
from mbrec.train.runner import describe_device

REPO = Path(__file__).resolve().parent.parent


def _restart_with_huge_pages() -> None:
    """Re-run this benchmark script with ``THP_MEM_ALLOC_ENABLE=1`` when it is unset (module docstring)."""
    script = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    if (script is None or script.parent != REPO / "benchmarks" or HUGE_PAGES_ENV in os.environ
            or os.environ.get("MBREC_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux")):
        return
    os.environ[HUGE_PAGES_ENV] = "1"
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


_restart_with_huge_pages()


# ------------------------------------------------------------------------------------- records
def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded to 0.01 (a loaded machine inflates wall times)."""
    return [round(v, 2) for v in os.getloadavg()]


def machine_record(load_before: list[float] | None = None) -> dict:
    """The CPU (:func:`describe_device`), cores, torch threads and torch version, plus the load average.

    With ``load_before`` (a :func:`load_average` taken at the start; call this at the end) the record holds
    ``load_average_before`` and ``load_average_after`` (now). Without it (call this at the start) it also
    holds the platform and the Python version, and the current load as ``load_average_1_5_15``; the
    caller then stores :func:`load_average` at the end as ``load_average_after`` itself.
    """
    record = {"description": describe_device(torch.device("cpu"))}
    if load_before is None:
        record["platform"] = platform.platform()
    record |= {"cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
               "malloc_tuning": freed_memory_kept(), "malloc_mmap": mmap_enabled() if freed_memory_kept() else True,
               "huge_pages": huge_pages()}
    if load_before is None:
        return record | {"python": platform.python_version(), "load_average_1_5_15": load_average()}
    return record | {"load_average_before": load_before, "load_average_after": load_average()}


# the environment that changes what a benchmark measures
RECORDED_ENV = ("LD_PRELOAD", "MBREC_MALLOC_TUNING", "MBREC_MALLOC_MMAP", HUGE_PAGES_ENV)


def command_record() -> str:
    """The command line as run from the repository root: ``[VAR=value ...] python benchmarks/<script>.py <args>``,
    with the environment variables of :data:`RECORDED_ENV` that are set (paths under the repository relative)."""
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(REPO) if script.is_relative_to(REPO) else script
    env = [f"{name}={shlex.quote(os.environ[name]).replace(str(REPO) + '/', '$PWD/')}"
           for name in RECORDED_ENV if os.environ.get(name)]
    return " ".join([*env, "python", shlex.quote(str(shown)), *(shlex.quote(a) for a in sys.argv[1:])])


def write_result(out: str | Path, benchmark: str, load_before: list[float], **fields: object) -> dict:
    """Write ``{"benchmark", "command", "machine", **fields}`` to ``out`` atomically, say so, return it."""
    from mbrec.train.checkpoint import atomic_write_json

    record = {"benchmark": benchmark, "command": command_record(), "machine": machine_record(load_before), **fields}
    atomic_write_json(Path(out), record)
    print(f"wrote {out}")
    return record


# ------------------------------------------------------------------------------------- timing
def clock() -> tuple[float, float]:
    """(wall, process CPU) clock readings; process CPU time is less sensitive to other processes."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    """(wall, process CPU) seconds elapsed since ``start`` (a :func:`clock` reading)."""
    wall, cpu = clock()
    return wall - start[0], cpu - start[1]


def timed(fn: Callable[..., object], *args: object) -> tuple[float, float]:
    """(wall, process CPU) seconds of one call ``fn(*args)``."""
    start = clock()
    fn(*args)
    return since(start)


def median_times(samples: list[tuple[float, float]]) -> dict[str, float]:
    """``{"wall_s", "cpu_s"}``: the medians of (wall, CPU) samples."""
    return {"wall_s": statistics.median(s[0] for s in samples),
            "cpu_s": statistics.median(s[1] for s in samples)}


# ------------------------------------------------------------------------------------- data
def load_or_skip(name: str) -> MultiBehaviorDataset:
    """:func:`mbrec.data.registry.load_dataset` (``$MBREC_DATA_ROOT``, else ``../shared/datasets``); when
    the dataset is not found, print ``skipped: ...`` and exit with status 0."""
    try:
        return load_dataset(name)
    except DatasetNotFound as e:
        print(f"skipped: dataset {name!r} not found ({e})")
        raise SystemExit(0) from None


# ------------------------------------------------------------------------------------- subprocesses
def copf_step_in_subprocess(env: dict[str, str], threads: int, steps: int) -> tuple[dict, int]:
    """Run ``bench_copf_step.py`` in a fresh process with environment ``env``: (its record, the process's
    minor page faults). For A/B benchmarks of process-wide settings (allocator, preloaded libraries)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "step.json"
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
        subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_copf_step.py"), "--threads", str(threads),
                        "--steps", str(steps), "--out", str(out)], check=True, env=env, stdout=subprocess.DEVNULL)
        faults = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before
        return json.loads(out.read_text()), faults
