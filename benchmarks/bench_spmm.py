r"""Forward + backward of one graph propagation: mbrec's ``spmm`` against ``torch.sparse.mm``.

Graph: the Taobao view behavior as a left-normalised bipartite adjacency
:math:`\hat A = D^{-1}\mathrm{bip}(R_{view})`, ``(M+N) x (M+N)`` = 27,402², 1.75 M nonzeros, and a dense
table ``X [M+N, 64]``. One timed call is ``Y = \hat A X`` then ``Y.backward(G)``
(``dL/dX = \hat A^T G``). Contenders:

* ``mbrec_spmm``: :func:`mbrec.graph.spmm` (CSR forward, backward with the cached CSR transpose);
* ``torch_coo``: ``torch.sparse.mm`` on a coalesced COO tensor (plain autograd);
* ``torch_csr``: ``torch.sparse.mm`` on a CSR tensor (plain autograd; transposes on every backward).

Each contender runs ``--warmup`` untimed calls, then ``--repeats`` timed ones; the medians of the wall
time and of the process CPU time (less sensitive to other processes on a shared machine) are reported
with the ratios ``torch_* / mbrec_spmm`` (goal: >= 5x against ``torch_csr``). Outputs and gradients of
the contenders are compared once. The machine record includes the load average, since a loaded machine
inflates wall times. The dataset is ``--dataset`` (default ``taobao``, found by name under the data root);
when it is missing the script prints ``skipped: ...`` and exits 0. Results go to
``benchmarks/results/bench_spmm.json`` (atomic write).

    python benchmarks/bench_spmm.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from benchlib import clock, command_record, load_average, load_or_skip, machine_record

from mbrec.graph import SparseOperator, normalized_bipartite, spmm
from mbrec.train.checkpoint import atomic_write_json

ROOT = Path(__file__).resolve().parent


def coo_tensor(mat: sp.csr_matrix) -> torch.Tensor:
    coo = mat.tocoo()
    idx = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    return torch.sparse_coo_tensor(idx, torch.from_numpy(coo.data.astype(np.float32)), coo.shape,
                                   check_invariants=False).coalesce()


def forward_backward(product: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                     upstream: torch.Tensor) -> tuple[dict[str, float], torch.Tensor, torch.Tensor]:
    """Wall and process-CPU seconds of the forward and the backward of one call, Y and dL/dX."""
    leaf = x.detach().requires_grad_()
    w0, c0 = clock()
    y = product(leaf)
    w1, c1 = clock()
    y.backward(upstream)
    w2, c2 = clock()
    seconds = {"forward": w1 - w0, "backward": w2 - w1, "total": w2 - w0,
               "forward_cpu": c1 - c0, "backward_cpu": c2 - c1, "total_cpu": c2 - c0}
    return seconds, y.detach(), leaf.grad


def bench(contenders: dict[str, Callable], x: torch.Tensor, upstream: torch.Tensor, warmup: int,
          repeats: int) -> dict:
    """Median seconds per contender and the ratios of the medians (wall and CPU) to ``mbrec_spmm``."""
    timings: dict[str, dict] = {}
    for name, product in contenders.items():
        for _ in range(warmup):
            forward_backward(product, x, upstream)
        samples = [forward_backward(product, x, upstream)[0] for _ in range(repeats)]
        timings[name] = {f"{key}_median_s": statistics.median(s[key] for s in samples) for key in samples[0]}
        timings[name]["total_all_s"] = [s["total"] for s in samples]
    ratios = {}
    for key in ("total", "total_cpu", "backward"):
        ours = timings["mbrec_spmm"][f"{key}_median_s"]
        for name, t in timings.items():
            if name != "mbrec_spmm":
                ratios[f"{name}/mbrec_spmm ({key})"] = t[f"{key}_median_s"] / ours
    return {"timings": timings, "ratios": ratios}


def max_differences(contenders: dict[str, Callable], x: torch.Tensor, upstream: torch.Tensor) -> dict:
    _, y_ref, g_ref = forward_backward(contenders["mbrec_spmm"], x, upstream)
    out = {}
    for name, product in contenders.items():
        if name != "mbrec_spmm":
            _, y, g = forward_backward(product, x, upstream)
            out[name] = {"output": float((y - y_ref).abs().max()), "gradient": float((g - g_ref).abs().max())}
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="taobao",
                        help="dataset name under the data root ($MBREC_DATA_ROOT, else ../shared/datasets) or path")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch thread counts to run with (default: torch's default, then 2)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_spmm.json"))
    args = parser.parse_args(argv)
    threads = args.threads or list(dict.fromkeys([torch.get_num_threads(), 2]))

    host = machine_record()
    dataset = load_or_skip(args.dataset)
    adjacency = normalized_bipartite(dataset.train["view"], "left")
    op = SparseOperator(adjacency)
    coo = coo_tensor(adjacency)
    contenders = {
        "mbrec_spmm": lambda x: spmm(op, x),
        "torch_coo": lambda x: torch.sparse.mm(coo, x),
        "torch_csr": lambda x: torch.sparse.mm(op.matrix, x),
    }
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(adjacency.shape[0], args.dim, generator=gen)
    upstream = torch.randn(adjacency.shape[0], args.dim, generator=gen)

    runs = []
    for n in threads:
        torch.set_num_threads(n)
        result = {"torch_threads": n, **bench(contenders, x, upstream, args.warmup, args.repeats)}
        runs.append(result)
        line = ", ".join(f"{k} {t['total_median_s'] * 1e3:.0f} ms (cpu {t['total_cpu_median_s'] * 1e3:.0f})"
                         for k, t in result["timings"].items())
        ratio = ", ".join(f"{k} = {v:.1f}x" for k, v in result["ratios"].items() if "(total" in k)
        print(f"threads={n}: {line}; {ratio}")
    record = {
        "benchmark": "spmm forward+backward",
        "command": command_record(),
        "machine": host,
        "load_average_after": load_average(),
        "graph": {"dataset": dataset.name, "behavior": "view", "normalization": "left",
                  "shape": list(adjacency.shape), "nnz": int(adjacency.nnz), "symmetric": op.symmetric},
        "dim": args.dim, "warmup": args.warmup, "repeats": args.repeats,
        "max_abs_difference_vs_mbrec_spmm": max_differences(contenders, x, upstream),
        "runs": runs,
    }
    atomic_write_json(args.out, record)
    print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
