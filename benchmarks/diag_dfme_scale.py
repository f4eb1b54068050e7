r"""Why some "+DFME" rows do not learn: the scale of the backbone's tables under COPF's recipe.

DFME scores a pair with a tower of multiplier 300 over products of the backbone's user and item tables, and
COPF's L2 term puts μ = 0.01 on every row of the tables. COGCN sums its L + 1 residual layers, so its outputs
are many times larger than its ego tables; a backbone whose propagation keeps the scale (LightGCN-M's mean over
symmetric-normalised layers) or starts from small tables (MB-CGCN's N(0, 0.01²)) gives scores near zero, the
BPR losses sit at ln 2 and the L2 term shrinks the tables further.

For each variant (a model config plus overrides, on Taobao) this builds the model (seed 42; MB-CGCN's warm
start is skipped), then trains ``--steps`` steps with Adam at the schedule's first learning rate (1e-3) on the
model's own sampler and losses, and records at the start and at the end: the root-mean-square entry of the
target behavior's user and item tables, the mean |score| of the target task's training pairs, and every named
loss. Writes one JSON with the command and the machine.

    LD_PRELOAD=$PWD/build/libmkl_amd_shim.so python benchmarks/diag_dfme_scale.py --steps 61
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from benchlib import REPO, load_average, load_or_skip, write_result

from mbrec.config import load_run_config
from mbrec.data.samplers import make_sampler
from mbrec.models import build_model

ROOT = Path(__file__).resolve().parent
VARIANTS = {
    "COPF-L411": ("copf_taobao.yaml", ["params.cogcn_layers=[4,1,1]"]),
    "LightGCN-M+DFME": ("lightgcn_m_dfme_taobao.yaml", []),
    "CRGCN+DFME": ("crgcn_dfme_taobao.yaml", []),
    "CRGCN+DFME-L411": ("crgcn_dfme_taobao.yaml", ["params.backbone_params.layers=[4,1,1]"]),
    "PKEF+DFME": ("pkef_dfme_taobao.yaml", []),
    "MB-CGCN+DFME-cold": ("mbcgcn_dfme_taobao.yaml", ["params.backbone_params.pretrain_epochs=0"]),
    **{f"MB-CGCN+DFME-cold-std{std}-reg1e-4": ("mbcgcn_dfme_taobao.yaml", [
        "params.backbone_params.pretrain_epochs=0", f"params.backbone_params.init_std={std}", "params.reg=0.0001"])
       for std in (0.1, 0.2, 0.3)},
}


def rms(t: torch.Tensor) -> float:
    return float(t.detach().pow(2).mean().sqrt())


@torch.no_grad()
def snapshot(model, batch) -> dict:
    """Target tables' RMS entries, mean |score| of the target task's pairs, every loss (one batch)."""
    tables = model.encode()
    pairs = model.task_pairs(batch)
    target = len(model.behaviors) - 1
    state = model.head.prepare_pairs(tables, pairs)
    scores = model.head.pair_scores(state, target, *pairs[target])
    users, items = tables[target]
    return {"user_rms": rms(users), "item_rms": rms(items), "score_abs_mean": float(scores.abs().mean()),
            "losses": {name: float(v) for name, v in model.losses(batch).items()}}


def run_variant(label: str, config: str, overrides: list[str], steps: int) -> dict:
    cfg = load_run_config(REPO / "configs" / config, overrides)
    dataset = load_or_skip(cfg.dataset)
    torch.manual_seed(42)
    model = build_model(cfg.model, dataset, cfg.params, skip_warm_start=True)
    ego = [rms(w) for w in model.encoder_weights()[:2]]
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    batches = make_sampler(model.batch_spec, dataset, cfg.train.batch_size).epoch(np.random.default_rng(0))
    probe = next(batches)
    start = snapshot(model, probe)
    for _ in range(steps):
        batch = next(batches, None)
        if batch is None:
            batches = make_sampler(model.batch_spec, dataset, cfg.train.batch_size).epoch(np.random.default_rng(1))
            batch = next(batches)
        optimizer.zero_grad(set_to_none=True)
        sum(model.losses(batch).values()).backward()
        optimizer.step()
    end = snapshot(model, probe)
    print(f"{label}: ego RMS {ego[0]:.4f}/{ego[1]:.4f}; target tables RMS "
          f"{start['user_rms']:.4f}/{start['item_rms']:.4f} -> {end['user_rms']:.4f}/{end['item_rms']:.4f}; "
          f"|score| {start['score_abs_mean']:.4f} -> "
          f"{end['score_abs_mean']:.4f}; target BPR {start['losses'].get('bpr/buy', float('nan')):.4f} -> "
          f"{end['losses'].get('bpr/buy', float('nan')):.4f}; L2 {start['losses']['reg/l2']:.3f} -> "
          f"{end['losses']['reg/l2']:.3f}", flush=True)
    return {"label": label, "config": f"configs/{config}", "overrides": overrides, "ego_rms": ego,
            "start": start, "end": end}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=61, help="Adam steps per variant (61 = one Taobao epoch)")
    parser.add_argument("--only", nargs="+", choices=sorted(VARIANTS), help="these variants only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "results" / "diag_dfme_scale.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = load_average()
    rows = [run_variant(label, *VARIANTS[label], args.steps) for label in (args.only or VARIANTS)]
    return write_result(args.out, "scale of the backbone tables under COPF's DFME recipe (Taobao)", load_before,
                        steps=args.steps, lr="config train.lr, constant", variants=rows)


if __name__ == "__main__":
    main()
