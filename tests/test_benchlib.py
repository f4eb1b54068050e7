"""Benchmark records name the command to rerun, with the environment that changes what they measure."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
import benchlib  # noqa: E402


def test_command_record_keeps_the_environment_that_changes_a_benchmark(monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(REPO / "benchmarks" / "bench_x.py"), "--threads", "2"])
    for name in benchlib.RECORDED_ENV:
        monkeypatch.delenv(name, raising=False)
    assert benchlib.command_record() == "python benchmarks/bench_x.py --threads 2"
    monkeypatch.setenv("LD_PRELOAD", str(REPO / "build" / "libmkl_amd_shim.so"))
    monkeypatch.setenv("MBREC_MALLOC_MMAP", "0")
    monkeypatch.setenv("OMP_PROC_BIND", "close")          # not one of RECORDED_ENV
    assert benchlib.command_record() == ("LD_PRELOAD=$PWD/build/libmkl_amd_shim.so MBREC_MALLOC_MMAP=0 "
                                         "python benchmarks/bench_x.py --threads 2")
