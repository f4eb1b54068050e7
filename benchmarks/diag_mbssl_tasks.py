r"""How MBSSL's auxiliary (SSL) gradients sit against its target gradient, per parameter tensor.

For each checkpoint (an MBSSL ``best.pt``/``last.pt``): one training batch of target users (seeded), the
model's losses in training mode, and every task's gradient per parameter tensor :math:`P`:

* raw norms :math:`\|g_0\|, \|g_t\|` and :math:`\cos(g_t, g_0)` for every auxiliary task t;
* what HMG (``mbssl`` strategy, mbssl.md §7) makes of them with the checkpoint's moving norms, and what the
  plain sum (MBSSL "w/o HMG") gives: :math:`\cos(G, g_0)` and :math:`\|G\| / \|g_0\|` of the combined gradient;
* the SSL geometry of the batch: mean cosine of each anchor with its positive and with all candidates,
  and the mean norm of the pooled target rows.

A checkpoint trained without SSL (``use_inter``/``use_intra`` false; SSL adds no parameters) is loaded into
the same model with both SSL tasks on, and HMG uses this batch's norms (it has no moving norms).
A combined gradient whose cosine with :math:`g_0` is small moves the parameters mostly along the SSL tasks.
Writes one JSON with the command and the machine.

    python benchmarks/diag_mbssl_tasks.py runs/bench/beibei/MBSSL-beibei-s1/last.pt \
        runs/bench/mbssl_beibei_probe/MBSSL-rec-beibei-s1/last.pt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from benchlib import load_average, write_result

from mbrec.data.samplers import Batch
from mbrec.models.base import loss_role
from mbrec.train.checkpoint import load_checkpoint
from mbrec.train.hmg import combine_gradients
from mbrec.train.runner import build_for_run, load_trained

ROOT = Path(__file__).resolve().parent


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    na, nb = a.norm(), b.norm()
    return float(a.dot(b) / (na * nb)) if na > 0 and nb > 0 else float("nan")


def ssl_geometry(model, users: np.ndarray) -> dict:
    """Mean positive / all-candidate cosines of the inter (pass 0) and intra (views) user anchors."""
    with torch.no_grad():
        out = model.encode(with_views=True)
        m, t = model.n_users, model.target_index
        rows, _ = model.labels[t].pairs(users)
        anchors = torch.as_tensor(np.unique(users[rows]))
        table = out.nodes[0][:m]
        result = {"target_row_norm": float(table[anchors, t].norm(dim=1).mean())}

        def stats(anchor_rows: torch.Tensor, candidates: torch.Tensor) -> dict:
            a, c = F.normalize(anchor_rows, dim=1), F.normalize(candidates, dim=1)
            sims = a @ c.T
            return {"positive": float(sims[torch.arange(len(anchors)), anchors].mean()),
                    "all": float(sims.mean()), "top1_is_positive": float((sims.argmax(1) == anchors).float().mean())}

        for k in model.aux_indices:
            result[f"inter/{model.behaviors[k]}"] = stats(table[anchors, t], table[:, k])
        result["intra"] = stats(out.nodes[1][:m][anchors, t], out.nodes[2][:m][:, t])
    return result


def task_gradients(model, combiner_state: dict | None, users: np.ndarray, relax: float, beta: float) -> list[dict]:
    model.train()
    losses = model.losses(Batch(torch.as_tensor(users)))
    names = [k for k in losses if loss_role(k) in ("target", "aux")]
    params = [p for p in model.parameters() if p.requires_grad]
    param_names = [n for n, p in model.named_parameters() if p.requires_grad]
    grads = []
    for i, name in enumerate(names):
        g = torch.autograd.grad(losses[name], params, retain_graph=i < len(names) - 1, allow_unused=True)
        grads.append([torch.zeros_like(p) if x is None else x for p, x in zip(params, g, strict=True)])
    rows = []
    for j, pname in enumerate(param_names):
        flat = torch.stack([g[j].reshape(-1) for g in grads])
        raw = torch.linalg.vector_norm(flat, dim=1)
        if combiner_state is not None and combiner_state.get("moving_norms") is not None:
            stored = combiner_state["moving_norms"][j].to(raw.dtype)
            norms = beta * stored + (1.0 - beta) * raw
        else:
            norms = raw
        hmg = combine_gradients(flat[0], list(flat[1:]), norms[0], norms[1:], "mbssl", relax)
        summed = flat.sum(0)
        g0n = float(raw[0])
        rows.append({
            "tensor": pname, "target_norm": g0n,
            "aux": {names[t]: {"norm": float(raw[t]), "cos_target": _cos(flat[t], flat[0])}
                    for t in range(1, len(names))},
            "hmg": {"cos_target": _cos(hmg, flat[0]), "norm_ratio": float(hmg.norm()) / g0n if g0n else float("nan")},
            "sum": {"cos_target": _cos(summed, flat[0]),
                    "norm_ratio": float(summed.norm()) / g0n if g0n else float("nan")},
        })
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--seed", type=int, default=0, help="seed of the batch's user draw")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "results" / "diag_mbssl_tasks.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = load_average()
    runs = []
    for path in args.checkpoints:
        model, dataset, cfg = load_trained(path, device="cpu")
        state = load_checkpoint(path)
        if not (cfg.params.get("use_inter", True) and cfg.params.get("use_intra", True)):
            # trained without SSL (no extra parameters): the same weights in a model with both SSL tasks on
            cfg.params = {**cfg.params, "use_inter": True, "use_intra": True}
            model, _ = build_for_run(cfg, dataset, skip_warm_start=True)
            model.load_state_dict(state["model"])
        torch.manual_seed(args.seed)
        target_users = np.flatnonzero(np.diff(dataset.target_train.indptr) > 0)
        users = np.random.default_rng(args.seed).choice(target_users, cfg.train.batch_size, replace=False)
        model.prepare_epoch(0)
        geometry = ssl_geometry(model, users)
        rows = task_gradients(model, state.get("combiner"), users, cfg.train.hmg.relax, cfg.train.hmg.beta)
        runs.append({"checkpoint": path, "epoch": state["epoch"], "params": cfg.params,
                     "hmg": cfg.train.hmg.strategy, "ssl_geometry": geometry, "tensors": rows})
        print(f"{path} (epoch {state['epoch']}): {geometry}")
        for r in rows:
            aux = " ".join(f"{k.split('/')[-1]} {v['norm'] / r['target_norm']:.2f}x cos {v['cos_target']:+.2f}"
                           for k, v in r["aux"].items())
            hmg, summed = r["hmg"], r["sum"]
            print(f"  {r['tensor']:32s} |g0| {r['target_norm']:9.3g}  {aux}  HMG cos {hmg['cos_target']:+.2f} "
                  f"({hmg['norm_ratio']:.2f}x)  sum cos {summed['cos_target']:+.2f} ({summed['norm_ratio']:.2f}x)",
                  flush=True)
    return write_result(args.out, "MBSSL task gradients per parameter tensor", load_before, seed=args.seed,
                        runs=runs)


if __name__ == "__main__":
    main()
