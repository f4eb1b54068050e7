"""Keep freed host memory in the process (glibc ``mallopt``), so big tensors do not page-fault anew.

Training allocates and frees the same few-megabyte tensors (node tables, chunks of sparse products)
every step. glibc serves blocks above its mmap threshold with fresh ``mmap`` pages and returns freed
heap tops to the system, so each step touches new pages and pays a minor page fault per 4 KiB.
:func:`keep_freed_memory` raises the mmap threshold to 32 MiB (glibc's maximum on 64-bit), disables
trimming and pads heap growth, so freed blocks are reused: same results, fewer page faults (0.4-0.6M
instead of 1.0M per COPF step benchmark process) and a small gain, 1.02x on a COPF Taobao step
(``benchmarks/bench_allocator.py``). The resident size then stays at the peak working set instead of
shrinking between steps.

32 MiB is glibc's ceiling for that threshold, so bigger blocks (COPF's ``[anchors, items]`` contrastive
logits on Taobao: 45 MB, allocated and freed every step) still get fresh pages. ``MBREC_MALLOC_MMAP=0``
also turns glibc's mmap off (``M_MMAP_MAX = 0``), so those blocks come from the kept heap as well
(``benchmarks/bench_allocator.py`` compares the three settings; on a Zen 4 EPYC the COPF step was slower with
mmap off, 0.346 vs 0.300 s, so it stays on by default).

One arena (``M_ARENA_MAX = 1``): every thread allocates from the main heap, so memory that one thread
frees serves the next. With glibc's default each new thread gets an arena of its own, and since nothing is
trimmed each arena keeps its own peak: HMG's parallel task backwards (:mod:`mbrec.train.hmg`) raised
the MBSSL Beibei benchmark's peak RSS from 5.1 to 6.2 GB that way, 5.3-5.5 GB with one arena, at the same speed.

It does nothing on other C libraries, when ``MBREC_MALLOC_TUNING=0``, or when the user already set
glibc's own ``MALLOC_*`` environment variables.

Transparent huge pages: blocks above the mmap threshold still fault in 4 KiB at a time, and on a 2-core
EPYC allocating and first touching a 45 MB logit matrix took 25-50 ms, longer than the matmul that fills
it. PyTorch's CPU allocator advises 2 MB pages for blocks of 2 MB and more when ``THP_MEM_ALLOC_ENABLE=1``
(it reads the variable once, at its first allocation, so it must be set before ``import torch``).
:func:`request_huge_pages` sets it (unless the user set it, or ``MBREC_MALLOC_TUNING=0``) and is called by
``import mbrec``: the ``mbrec`` command gets huge pages; a program that imports torch before mbrec sets the
variable itself. The kernel honours the advice when ``/sys/kernel/mm/transparent_hugepage/enabled`` is
``madvise`` or ``always``. Same results; ``benchmarks/bench_allocator.py`` measures the step with and
without.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -2, -3, -4, -8
MMAP_THRESHOLD = 32 * 1024 * 1024          # glibc's upper limit for M_MMAP_THRESHOLD on 64-bit
TOP_PAD = 64 * 1024 * 1024
TRIM_THRESHOLD = 2**31 - 1                # never trim (mallopt takes an int)
DEFAULT_MMAP = "1"                        # MBREC_MALLOC_MMAP when unset
HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"   # read by PyTorch's CPU allocator at its first allocation
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"
_applied: bool | None = None


def request_huge_pages() -> bool:
    """Set ``THP_MEM_ALLOC_ENABLE=1`` for PyTorch's CPU allocator if it is still in time (module docstring).

    Returns True when this call set it. It leaves the environment alone once torch is imported (too late
    for this process; the variable would only reach child processes), when the variable is already set
    (the user's choice wins) and when ``MBREC_MALLOC_TUNING=0``.
    """
    if ("torch" in sys.modules or HUGE_PAGES_ENV in os.environ
            or os.environ.get("MBREC_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux")):
        return False
    os.environ[HUGE_PAGES_ENV] = "1"
    return True


def huge_pages() -> bool:
    """Whether PyTorch's allocator asks for huge pages in this process and the kernel may grant them.

    Assumes the variable has not changed since torch's first allocation (it is read once, then).
    """
    try:
        requested = int(os.environ.get(HUGE_PAGES_ENV, "0")) != 0
    except ValueError:
        return False
    try:
        with open(THP_MODE_FILE) as f:
            mode = f.read()
    except OSError:
        return False
    return requested and ("[always]" in mode or "[madvise]" in mode)


def keep_freed_memory() -> bool:
    """Apply the glibc settings once per process; True when they are in effect."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if (not sys.platform.startswith("linux") or os.environ.get("MBREC_MALLOC_TUNING", "1") == "0"
            or any(k.startswith("MALLOC_") for k in os.environ)):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = [(M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD),
                (M_ARENA_MAX, 1)]
    if not mmap_enabled():
        settings.append((M_MMAP_MAX, 0))
    _applied = all(mallopt(param, value) == 1 for param, value in settings)
    return _applied


def mmap_enabled() -> bool:
    """Whether the tuning leaves glibc's mmap on for blocks above the threshold (``MBREC_MALLOC_MMAP``)."""
    value = os.environ.get("MBREC_MALLOC_MMAP", DEFAULT_MMAP)
    if value not in ("0", "1"):
        raise ValueError(f"MBREC_MALLOC_MMAP must be 0 or 1, got {value!r}")
    return value == "1"


def freed_memory_kept() -> bool:
    """Whether :func:`keep_freed_memory` has put the settings into effect in this process (applies nothing)."""
    return bool(_applied)
