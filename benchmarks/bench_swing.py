r"""Swing similarity and false-negative sets on Beibei (mbssl.md §3): ours against a per-row loop.

Ours: :func:`mbrec.models.mbssl.swing.swing_similarity` on the target (buy) training graph, users
(``R``) and items (``Rᵀ``), then :func:`~mbrec.models.mbssl.swing.false_negative_sets` with N = 10 on
each side (the released Beibei settings, ``sim_behaviors: target``), without the disk cache. Timed as wall
and process-CPU seconds, medians over ``--repeats`` runs; the goal is both sides in under 60 s on 2 cores.

Reference: the straightforward computation the released code does, one row at a time, in plain Python
sets: for a row s, every row s' ≠ s that shares a column with it, every unordered pair {a, b} of their
shared columns, and :math:`1 / (\alpha + |N(a) \cap N(b)|)` with the intersection counted on the spot.
It is far too slow for every row, so it runs on ``--sample`` rows per side drawn with ``--seed``; its time
per row times the number of rows is the *extrapolated* reference time (rows differ in cost, so this is an
estimate, labelled as such in the record). On the sampled rows the reference's similarity values (relative
difference ≤ 1e-12; the sums run in another order) and its false-negative sets (the N-th largest value
counting zeros, strictly greater) are compared with ours.

    python benchmarks/bench_swing.py --threads 2
"""

from __future__ import annotations

import argparse
import itertools
import resource
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from benchlib import clock, command_record, load_average, load_or_skip, machine_record, median_times, since

from mbrec.models.mbssl.swing import FalseNegatives, false_negative_sets, swing_similarity
from mbrec.train.checkpoint import atomic_write_json

ROOT = Path(__file__).resolve().parent
GOAL_S = 60.0


def neighbour_sets(mat: sp.csr_matrix) -> list[set[int]]:
    return [set(mat.indices[mat.indptr[r]:mat.indptr[r + 1]].tolist()) for r in range(mat.shape[0])]


def reference_row(s: int, rows: list[set[int]], columns: list[set[int]], alpha: float) -> dict[int, float]:
    """``{s': S(s, s')}`` for one row, by loops over row pairs and their shared column pairs."""
    candidates = set().union(*(columns[a] for a in rows[s])) - {s}
    out = {}
    for other in candidates:
        shared = sorted(rows[s] & rows[other])
        value = sum(1.0 / (alpha + len(columns[a] & columns[b])) for a, b in itertools.combinations(shared, 2))
        if value > 0:
            out[other] = value
    return out


def reference_false_negatives(row: dict[int, float], n: int) -> set[int]:
    """``{s' : S(s, s') > t}``, t = the n-th largest value of the row counting zeros (float32, as ours)."""
    values = np.array(sorted(row.values(), reverse=True), dtype=np.float32)
    threshold = values[n - 1] if len(values) >= n else np.float32(0.0)
    return {k for k, v in row.items() if np.float32(v) > threshold}


def one_side(mat: sp.csr_matrix, alpha: float, n: int) -> tuple[sp.csr_matrix, FalseNegatives]:
    similarity = swing_similarity(mat, alpha)
    return similarity, false_negative_sets(similarity, n)


def compare_sample(name: str, mat: sp.csr_matrix, ours: tuple[sp.csr_matrix, FalseNegatives], alpha: float,
                   n: int, sample: int, rng: np.random.Generator) -> dict:
    """Reference on ``sample`` random rows with at least two columns: time per row and agreement."""
    rows, columns = neighbour_sets(mat), neighbour_sets(mat.T.tocsr())
    eligible = np.flatnonzero(np.diff(mat.indptr) >= 2)
    picked = np.sort(rng.choice(eligible, size=min(sample, len(eligible)), replace=False))
    similarity, fn = ours
    max_diff, fn_equal = 0.0, 0            # relative: |ours - reference| / max(1, |reference|)
    start = clock()
    reference = {int(s): reference_row(int(s), rows, columns, alpha) for s in picked}
    wall, cpu = since(start)
    for s, row in reference.items():
        ours_row = similarity.getrow(s)
        dense_ours = dict(zip(ours_row.indices.tolist(), ours_row.data.tolist(), strict=True))
        keys = set(dense_ours) | set(row)
        max_diff = max([max_diff, *(abs(dense_ours.get(k, 0.0) - row.get(k, 0.0)) / max(1.0, abs(row.get(k, 0.0)))
                                    for k in keys)])
        fn_equal += set(fn.indices[fn.indptr[s]:fn.indptr[s + 1]].tolist()) == reference_false_negatives(row, n)
    per_row = {"wall_s": wall / len(picked), "cpu_s": cpu / len(picked)}
    record = {"rows": int(mat.shape[0]), "sampled_rows": len(picked), "reference_per_row": per_row,
              "reference_extrapolated": {k: v * mat.shape[0] for k, v in per_row.items()},
              "max_rel_diff": max_diff, "fn_sets_equal": f"{fn_equal}/{len(picked)}",
              "match": max_diff <= 1e-12 and fn_equal == len(picked)}
    print(f"{name}: reference {per_row['wall_s'] * 1e3:.0f} ms/row on {len(picked)} rows -> "
          f"~{record['reference_extrapolated']['wall_s'] / 60:.0f} min for all {mat.shape[0]:,} rows; "
          f"max rel. diff {max_diff:.1e}, FN sets equal {record['fn_sets_equal']}", flush=True)
    return record


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (scipy is single-threaded)")
    parser.add_argument("--dataset", default="beibei")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--fn-users", type=int, default=10)
    parser.add_argument("--fn-items", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sample", type=int, default=40, help="rows per side for the per-row reference")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_swing.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = load_average()
    ds = load_or_skip(args.dataset)
    target = ds.target_train.tocsr()
    sides = {"user": (target, args.fn_users), "item": (target.T.tocsr(), args.fn_items)}

    samples, results = [], {}
    for _ in range(args.repeats):
        start = clock()
        results = {side: one_side(mat, args.alpha, n) for side, (mat, n) in sides.items()}
        samples.append(since(start))
    ours = median_times(samples)
    print(f"ours: users + items, similarity + FN sets: {ours['wall_s']:.1f} s (cpu {ours['cpu_s']:.1f}); "
          f"goal < {GOAL_S:.0f} s", flush=True)
    peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20

    rng = np.random.default_rng(args.seed)
    reference = {side: compare_sample(side, mat, results[side], args.alpha, n, args.sample, rng)
                 for side, (mat, n) in sides.items()}
    reference_total = {k: sum(r["reference_extrapolated"][k] for r in reference.values()) for k in ours}
    ratio = {k: reference_total[k] / ours[k] for k in ours}
    print(f"reference (extrapolated) / ours: {ratio['wall_s']:.0f}x (cpu {ratio['cpu_s']:.0f}x)")
    record = {
        "benchmark": "swing similarity + false-negative sets (target graph), ours vs per-row loops",
        "command": command_record(), "machine": machine_record(load_before),
        "dataset": args.dataset, "graph": f"{ds.behaviors[-1]} (target) training interactions",
        "alpha": args.alpha, "fn": {"user": args.fn_users, "item": args.fn_items},
        "repeats": args.repeats, "samples": samples, "ours": ours, "goal_s": GOAL_S,
        "met": ours["wall_s"] < GOAL_S, "peak_rss_gb": peak_rss_gb,
        "output": {side: {"similarity_nnz": int(sim.nnz), "mean_fn": float(fn.counts().mean())}
                   for side, (sim, fn) in results.items()},
        "reference": reference, "reference_extrapolated_total": reference_total,
        "ratio_reference_over_ours": ratio,
        "note": "the reference time is extrapolated from the sampled rows (time per row x rows)",
    }
    atomic_write_json(args.out, record)
    print(f"wrote {args.out}")
    if not all(r["match"] for r in reference.values()):
        raise SystemExit("the per-row reference disagrees with ours on a sampled row (see 'reference')")
    return record


if __name__ == "__main__":
    main()
