"""The opt-in MKL vendor-check shim (``scripts/mkl_amd_shim.sh``, README "Faster on AMD CPUs"): is it loaded,
and a one-line note for AMD CPUs that run MKL's generic kernels without it."""

from __future__ import annotations

import sys
from pathlib import Path

import torch


def mkl_shim_loaded() -> bool:
    """Whether ``scripts/mkl_amd_shim.sh``'s library is preloaded into this process (Linux; else False)."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as fh:
            return any("libmkl_amd_shim" in line for line in fh)
    except OSError:
        return False


def mkl_shim_hint(cpuinfo: str | None = None) -> str | None:
    """A one-line note for an AMD CPU with AVX2 running MKL's generic kernels (no shim loaded), else None.

    ``cpuinfo``: the text of ``/proc/cpuinfo`` (read when None; no file: None)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
    amd = any(line.startswith("vendor_id") and "AuthenticAMD" in line for line in cpuinfo.splitlines())
    if not amd or " avx2" not in cpuinfo or not torch.backends.mkl.is_available() or mkl_shim_loaded():
        return None
    return ("note: AMD CPU: MKL runs its generic kernels here; `bash scripts/mkl_amd_shim.sh` and "
            "LD_PRELOAD=build/libmkl_amd_shim.so make COPF steps ~1.4x faster (README: Faster on AMD CPUs)")


_hint_shown = False


def note_mkl_shim_once() -> None:
    """Print :func:`mkl_shim_hint` to stderr, at most once per process (when a CPU run starts)."""
    global _hint_shown
    if not _hint_shown and (hint := mkl_shim_hint()) is not None:
        print(hint, file=sys.stderr)
    _hint_shown = True
