r"""Full-ranking evaluation cost against the scoring matmul alone (Beibei, all test users).

A LightGCN-sized score function — random user and item tables ``U [M, 64]``, ``V [N, 64]``, scores
``U[users] V^T`` — is evaluated with :func:`mbrec.eval.evaluate` on every Beibei test user (21,716 users
x 7,977 items: masking of the training buys, exact ranks, HR/NDCG/Recall/Precision@{10,50} and MRR). The
reference is the time of the scoring matmuls alone for the same user batches. Both run ``--warmup``
untimed passes and ``--repeats`` timed ones; the report gives the medians (wall and process CPU time)
and ``ratio = evaluate / matmul``, i.e. what the evaluation adds on top of scoring. The dataset is
``--dataset`` (default ``beibei``, found by name under the data root); when it is missing the script prints
``skipped: ...`` and exits 0. Results go to ``benchmarks/results/bench_eval.json`` (atomic write).

    python benchmarks/bench_eval.py --threads 2
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from benchlib import command_record, load_average, load_or_skip, machine_record, median_times
from benchlib import timed as timed_call
from torch import nn

from mbrec.data.dataset import MultiBehaviorDataset
from mbrec.eval import evaluate
from mbrec.models.base import Recommender
from mbrec.train.checkpoint import atomic_write_json

ROOT = Path(__file__).resolve().parent


class RandomTables(Recommender):
    """Scores ``U[users] V^T`` from fixed random tables (the final step of LightGCN's scoring)."""

    def __init__(self, dataset: MultiBehaviorDataset, dim: int, seed: int = 0) -> None:
        super().__init__(dataset)
        gen = torch.Generator().manual_seed(seed)
        self.user_emb = nn.Parameter(0.1 * torch.randn(dataset.n_users, dim, generator=gen))
        self.item_emb = nn.Parameter(0.1 * torch.randn(dataset.n_items, dim, generator=gen))

    @torch.no_grad()
    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_emb[users] @ self.item_emb.T


def timed(fn: Callable[[], object], warmup: int, repeats: int) -> dict:
    """Medians of the wall and process-CPU seconds of ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    samples = [timed_call(fn) for _ in range(repeats)]
    med = median_times(samples)
    return {"median_s": med["wall_s"], "cpu_median_s": med["cpu_s"], "all_s": [s[0] for s in samples]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="beibei",
                        help="dataset name under the data root ($MBREC_DATA_ROOT, else ../shared/datasets) or path")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=2048, help="users per evaluation batch")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch thread counts to run with (default: torch's default, then 2)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_eval.json"))
    args = parser.parse_args(argv)
    threads = args.threads or list(dict.fromkeys([torch.get_num_threads(), 2]))

    host = machine_record()
    dataset = load_or_skip(args.dataset)
    model = RandomTables(dataset, args.dim).eval()
    users = dataset.eval_users("test")
    batches = [torch.from_numpy(users[s:s + args.batch_size]) for s in range(0, len(users), args.batch_size)]
    ks = [10, 50]

    def run_evaluate():
        return evaluate(model, dataset, ks=ks, batch_size=args.batch_size)

    def run_matmul():
        with torch.no_grad():
            for batch in batches:
                model.score_users(batch)

    runs = []
    for n in threads:
        torch.set_num_threads(n)
        ev = timed(run_evaluate, args.warmup, args.repeats)
        mm = timed(run_matmul, args.warmup, args.repeats)
        run = {"torch_threads": n, "evaluate": ev, "matmul": mm,
               "ratio": ev["median_s"] / mm["median_s"], "ratio_cpu": ev["cpu_median_s"] / mm["cpu_median_s"]}
        runs.append(run)
        print(f"threads={n}: evaluate {ev['median_s']:.2f} s (cpu {ev['cpu_median_s']:.2f}), "
              f"matmul {mm['median_s']:.2f} s (cpu {mm['cpu_median_s']:.2f}), ratio {run['ratio']:.1f}x "
              f"(cpu {run['ratio_cpu']:.1f}x)")
    metrics = run_evaluate().metrics
    candidates = dataset.n_items - np.diff(dataset.target_train.indptr)[users]
    record = {
        "benchmark": "full-ranking evaluation vs scoring matmul",
        "command": command_record(),
        "machine": host,
        "load_average_after": load_average(),
        "dataset": {"name": dataset.name, "n_users": dataset.n_users, "n_items": dataset.n_items,
                    "test_users": int(len(users)), "test_pairs": int(dataset.test.nnz),
                    "masked_train_pairs": int(dataset.target_train.nnz)},
        "dim": args.dim, "batch_size": args.batch_size, "ks": ks,
        "warmup": args.warmup, "repeats": args.repeats,
        "random_model_metrics": metrics,
        "random_ranking_hr10_expectation": float(np.mean(10 / candidates)),
        "runs": runs,
    }
    atomic_write_json(args.out, record)
    print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
