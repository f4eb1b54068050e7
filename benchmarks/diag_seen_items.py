r"""Where trained models put the test items a user had already viewed or carted (:mod:`mbrec.eval.seen`).

For each checkpoint (``best.pt`` of a run): the overall HR@k, and per auxiliary behavior the share of test
pairs seen in it, HR@k on those pairs, how many of the top-k slots hold items seen in it, and HR@k among the
user's own items of that behavior; the same for test items seen in no auxiliary behavior. Same candidates
and masking as the run's evaluation. Writes one JSON with the command and the machine.

    python benchmarks/diag_seen_items.py runs/bench/copf_taobao/COPF-L411-taobao-s1/best.pt \
        runs/bench/taobao/PKEF-taobao-s2/best.pt --k 10
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from benchlib import load_average, write_result

from mbrec.eval.seen import seen_breakdown
from mbrec.train.runner import load_trained

ROOT = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "results" / "diag_seen_items.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = load_average()
    rows = []
    for path in args.checkpoints:
        model, dataset, cfg = load_trained(path, device="cpu")
        out = seen_breakdown(model, dataset, k=args.k, batch_size=cfg.train.eval_batch_size,
                             mask_behaviors=cfg.data.mask_behaviors)
        rows.append({"checkpoint": path, "model": cfg.model, "dataset": dataset.name, "params": cfg.params, **out})
        parts = ", ".join(f"{b}: share {v['share']:.3f} hit {v['hit']:.4f} top {v['top_slots']:.2f} "
                          f"within {v['hit_within']:.4f}" for b, v in out["behaviors"].items())
        u = out["unseen"]
        print(f"{path}: HR@{args.k} {out['hit']:.4f}; {parts}; unseen: share {u['share']:.3f} hit {u['hit']:.4f} "
              f"top {u['top_slots']:.2f}", flush=True)
    return write_result(args.out, "test items against the users' auxiliary histories", load_before, k=args.k,
                        runs=rows)


if __name__ == "__main__":
    main()
