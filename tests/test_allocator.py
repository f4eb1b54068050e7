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
x = torch.ones(6_000_000)
print(applied, libc.mallinfo2().hblkhd - before)
"""


def mmapped_growth(mode: str, env: dict | None = None) -> tuple[str, int]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "MBREC_MALLOC_TUNING"}
    environ.update(env or {})
    result = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, env=environ)
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
