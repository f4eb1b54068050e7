"""The glibc allocator settings: big tensors come from the reusable heap, not from fresh mmap pages."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

# bytes glibc holds in mmapped chunks (mallinfo2().hblkhd) grow by a live 24 MB tensor unless the mmap
# threshold was raised above it; freed mmapped chunks go back to the system (new page faults next step)
SCRIPT = """
import ctypes, sys, torch
from mbrec.train.allocator import freed_memory_kept, keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "on" else False
assert freed_memory_kept() == applied
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                              "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
before = libc.mallinfo2().hblkhd
x = torch.ones(int(sys.argv[2]))
print(applied, libc.mallinfo2().hblkhd - before)
"""


def clean_environ() -> dict:
    """This process's environment without the allocator settings a test sets itself."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("MALLOC_") and k not in ("MBREC_MALLOC_TUNING", "MBREC_MALLOC_MMAP")}


def mmapped_growth(mode: str, env: dict | None = None, floats: int = 6_000_000) -> tuple[str, int]:
    environ = clean_environ()
    environ.update(env or {})
    result = subprocess.run([sys.executable, "-c", SCRIPT, mode, str(floats)], capture_output=True, text=True,
                            env=environ)
    if result.returncode != 0:
        pytest.skip(f"no glibc mallinfo2: {result.stderr.strip().splitlines()[-1]}")
    applied, growth = result.stdout.split()
    return applied, int(growth)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_big_tensors_come_from_the_heap_once_tuned():
    assert mmapped_growth("off") == ("False", pytest.approx(24_000_000, rel=0.01))
    assert mmapped_growth("on") == ("True", 0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_opt_out_and_user_settings_are_respected():
    assert mmapped_growth("on", {"MBREC_MALLOC_TUNING": "0"})[0] == "False"
    assert mmapped_growth("on", {"MALLOC_ARENA_MAX": "2"})[0] == "False"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_blocks_above_the_threshold_leave_mmap_only_when_it_is_off():
    # 40 MB is above glibc's 32 MiB ceiling for the mmap threshold: mapped unless mmap is off
    big = 10_000_000
    assert mmapped_growth("on", {"MBREC_MALLOC_MMAP": "1"}, big) == ("True", pytest.approx(40_000_000, rel=0.01))
    assert mmapped_growth("on", {"MBREC_MALLOC_MMAP": "0"}, big) == ("True", 0)
    assert mmapped_growth("on", {"MBREC_MALLOC_MMAP": "0"}) == ("True", 0)


HUGE_PAGES_SCRIPT = """
import os, sys
if sys.argv[1] == "torch-first":
    import torch
import mbrec
print(os.environ.get("THP_MEM_ALLOC_ENABLE", "unset"))
"""


def huge_pages_env_after_import(order: str, env: dict | None = None) -> str:
    environ = {k: v for k, v in os.environ.items() if k not in ("MBREC_MALLOC_TUNING", "THP_MEM_ALLOC_ENABLE")}
    environ.update(env or {})
    result = subprocess.run([sys.executable, "-c", HUGE_PAGES_SCRIPT, order], capture_output=True, text=True,
                            env=environ, check=True)
    return result.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PyTorch's huge-page advice is Linux-only")
def test_import_mbrec_asks_for_huge_pages_only_while_torch_can_still_see_it():
    assert huge_pages_env_after_import("mbrec-first") == "1"
    # torch read the variable at its first allocation: setting it now would change nothing in this process
    assert huge_pages_env_after_import("torch-first") == "unset"
    assert huge_pages_env_after_import("mbrec-first", {"THP_MEM_ALLOC_ENABLE": "0"}) == "0"
    assert huge_pages_env_after_import("mbrec-first", {"MBREC_MALLOC_TUNING": "0"}) == "unset"


HUGE_PAGES_USED_SCRIPT = """
import sys
if sys.argv[1] == "torch-first":
    import torch, mbrec
else:
    import mbrec, torch
x = torch.ones(20_000_000)                     # 80 MB: above the 2 MB threshold of the advice
print(sum(int(line.split()[1]) for line in open("/proc/self/smaps_rollup") if line.startswith("AnonHugePages")))
"""


def thp_mode() -> str | None:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return f.read().split("[")[1].split("]")[0]
    except (OSError, IndexError):
        return None


@pytest.mark.skipif(thp_mode() != "madvise", reason="needs transparent huge pages in madvise mode")
def test_big_tensors_get_huge_pages_when_mbrec_is_imported_first():
    environ = {k: v for k, v in os.environ.items() if k not in ("MBREC_MALLOC_TUNING", "THP_MEM_ALLOC_ENABLE")}

    def huge_kib(order: str) -> int:
        return int(subprocess.run([sys.executable, "-c", HUGE_PAGES_USED_SCRIPT, order], capture_output=True,
                                  text=True, env=environ, check=True).stdout)

    assert huge_kib("mbrec-first") > 0
    assert huge_kib("torch-first") == 0


ARENAS = """
import ctypes, os, sys, tempfile, threading, torch
from mbrec.train.allocator import keep_freed_memory
keep_freed_memory() if sys.argv[1] == "on" else None
kept = []
worker = threading.Thread(target=lambda: kept.append(torch.ones(2_000_000)))   # 8 MB from the thread's arena
worker.start(); worker.join()
libc = ctypes.CDLL("libc.so.6")
libc.fopen.restype = ctypes.c_void_p
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
path = os.path.join(tempfile.mkdtemp(), "malloc.xml")
stream = libc.fopen(path.encode(), b"w")
libc.malloc_info(0, stream)
libc.fclose(stream)
print(open(path).read().count("<heap nr="))
"""


def heap_count(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", ARENAS, mode], capture_output=True, text=True,
                            env=clean_environ())
    if result.returncode != 0:
        pytest.skip(f"no glibc malloc_info: {result.stderr.strip().splitlines()[-1]}")
    return int(result.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_threads_share_one_arena_once_tuned():
    assert heap_count("off") >= 2                 # glibc gives the new thread an arena of its own
    assert heap_count("on") == 1
