r"""Does one wide sparse product beat T narrow ones? The bound on batching HMG's task backwards.

HMG (:mod:`mbrec.train.hmg`) needs one gradient per task, so it back-propagates through the shared
encoder once per task (T times). Batching the T backwards (``autograd.grad(..., is_grads_batched=True)``
with a vmap rule for the sparse product) would turn T products :math:`\hat A^T G_t` with ``G_t [n, d]``
into one product with ``[n, T·d]`` columns. Everything else in those backwards is dense and scales
with T either way, so the sparse part is where batching can save time, and this script measures that
saving on the MBSSL Beibei graphs (symmetric-normalised bipartite view / cart / buy, as MBSSL uses them):

* ``separate``: T products ``Â X_t`` with ``X_t [n, d]``, each through :func:`mbrec.graph.spmm`'s
  product (32-column chunks on CPU when the graph has >= 16 nonzeros per row): what HMG does now;
* ``separate_plain``: the same T products, each in one piece (``torch`` CSR @ 64 columns);
* ``wide``: one product ``Â [X_1 … X_T]`` with ``[n, T·d]`` columns (what batching would do);
* ``wide_chunked``: the wide input in 32-column chunks.

Reported per graph and T: medians of ``--repeats`` timed calls and ``ratio = separate / best wide``
(> 1: batching saves sparse time). Results go to ``benchmarks/results/bench_spmm_width.json``.

    python benchmarks/bench_spmm_width.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
from benchlib import clock, command_record, load_average, load_or_skip, machine_record

from mbrec.graph import SparseOperator
from mbrec.graph.spmm import csr_product
from mbrec.train.checkpoint import atomic_write_json

ROOT = Path(__file__).resolve().parent
CHUNK = 32


def median_wall(fn, repeats: int) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        start = clock()
        fn()
        samples.append(clock()[0] - start[0])
    return statistics.median(samples)


def measure(op: SparseOperator, dim: int, tasks: int, repeats: int) -> dict:
    n = op.shape[1]
    parts = [torch.randn(n, dim) for _ in range(tasks)]
    wide = torch.cat(parts, dim=1)
    separate = median_wall(lambda: [csr_product(op.matrix, x) for x in parts], repeats)
    plain = median_wall(lambda: [op.matrix @ x for x in parts], repeats)
    whole = median_wall(lambda: op.matrix @ wide, repeats)
    chunked = median_wall(lambda: torch.cat([op.matrix @ c.contiguous() for c in wide.split(CHUNK, 1)], 1),
                          repeats)
    check = torch.cat([op.matrix @ x for x in parts], dim=1)
    assert torch.equal(check, op.matrix @ wide), "a wide product must equal the separate ones"
    return {"tasks": tasks, "separate_s": separate, "separate_plain_s": plain, "wide_s": whole,
            "wide_chunked_s": chunked, "ratio_separate_over_best_wide": separate / min(whole, chunked)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="beibei")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--tasks", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_spmm_width.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = load_average()
    ds = load_or_skip(args.dataset)
    rows = []
    for behavior, mat in zip(ds.behaviors, ds.matrices(), strict=True):
        op = SparseOperator.from_interactions(mat, "symmetric")
        for tasks in args.tasks:
            row = {"graph": behavior, "nnz": op.nnz, "dim": args.dim} | measure(op, args.dim, tasks, args.repeats)
            rows.append(row)
            ms = {k: f"{row[k] * 1e3:7.1f} ms" for k in ("separate_s", "separate_plain_s", "wide_s", "wide_chunked_s")}
            print(f"{behavior:>5} nnz {op.nnz:>9,} T={tasks}: separate {ms['separate_s']} (in one piece each "
                  f"{ms['separate_plain_s']}), wide {ms['wide_s']}, wide in {CHUNK}-column chunks "
                  f"{ms['wide_chunked_s']} -> ratio {row['ratio_separate_over_best_wide']:.2f}")
    atomic_write_json(Path(args.out), {
        "benchmark": "sparse product: T separate [n, d] inputs vs one [n, T*d] input (HMG batching bound)",
        "command": command_record(), "machine": machine_record(load_before), "dataset": args.dataset,
        "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
