"""The opt-in MKL vendor-check shim (scripts/mkl_amd_shim.sh): it is reported, and results agree without it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROBE = """
import json, sys, numpy as np, scipy.sparse as sp, torch
from mbrec.graph import SparseOperator, spmm
from mbrec.train.runner import describe_device
torch.manual_seed(0)
a, b = torch.randn(300, 64), torch.randn(2000, 64)
op = SparseOperator(sp.random(500, 500, density=0.05, format="csr", random_state=0, dtype=np.float32))
x = torch.randn(500, 64)
out = {"device": describe_device(torch.device("cpu")), "gemm": (a @ b.T).exp().sum(1).tolist(),
       "spmm": spmm(op, x).sum(0).tolist()}
json.dump(out, sys.stdout)
"""


def probe(preload: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    if preload:
        env["LD_PRELOAD"] = preload
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("gcc") is None,
                    reason="the shim is built with gcc for Linux")
def test_shim_is_reported_and_changes_no_result(tmp_path):
    if "avx2" not in Path("/proc/cpuinfo").read_text():
        pytest.skip("the shim script refuses CPUs without AVX2")
    library = tmp_path / "libmkl_amd_shim.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(library), str(REPO / "scripts" / "mkl_amd_shim.c")],
                   check=True)
    plain, shimmed = probe(None), probe(str(library))
    assert "MKL vendor-check shim" not in plain["device"]
    assert "(MKL vendor-check shim)," in shimmed["device"]          # before the core count: see bench park
    for key in ("gemm", "spmm"):
        for p, s in zip(plain[key], shimmed[key], strict=True):
            assert s == pytest.approx(p, rel=1e-4, abs=1e-4)


def test_hint_only_for_amd_cpus_with_avx2(monkeypatch):
    from mbrec.train import mkl_shim as runner

    monkeypatch.setattr(runner, "mkl_shim_loaded", lambda: False)   # the tests may run with the shim preloaded
    amd = "vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 fma\n"
    assert runner.mkl_shim_hint("vendor_id\t: GenuineIntel\nflags\t\t: fpu avx2\n") is None
    assert runner.mkl_shim_hint("vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2\n") is None
    hint = runner.mkl_shim_hint(amd)
    assert hint is not None and "scripts/mkl_amd_shim.sh" in hint and "\n" not in hint
    monkeypatch.setattr(runner, "mkl_shim_loaded", lambda: True)
    assert runner.mkl_shim_hint(amd) is None                              # nothing to suggest once it is loaded
