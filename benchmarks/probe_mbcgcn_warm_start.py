r"""How far MB-CGCN's level depends on its view warm start (baselines.md §4.2, configs/mbcgcn_taobao.yaml).

Trains one LightGCN on the first behavior (view) of a dataset with MB-CGCN's warm-start settings (3 layers,
reg 1e-4, batch 2,048 users, one BPR triple per user and pass, Adam at ``--lr``). At each pass count of
``--passes`` it reports (a) the target-behavior test HR@10 of that view model itself and (b) MB-CGCN (the
dataset's config layers, N(0, 0.01²) init, Adam 1e-3) started from its ego tables and trained ``--epochs``
epochs, with test HR@10 after epochs 1, ``epochs // 2`` and ``epochs``. Writes one JSON (command, machine,
one record per pass count, rewritten after each) and prints each record.

    python benchmarks/probe_mbcgcn_warm_start.py --passes 40 120 240 --lr 1e-2 --out /tmp/probe.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from benchlib import command_record, load_average, machine_record

from mbrec.data.dataset import MultiBehaviorDataset
from mbrec.data.registry import load_dataset
from mbrec.data.samplers import make_sampler
from mbrec.eval.evaluator import evaluate
from mbrec.models.lightgcn import LightGCN, LightGCNConfig
from mbrec.models.mbcgcn import MBCGCN, MBCGCNConfig
from mbrec.train.checkpoint import atomic_write_json

ROOT = Path(__file__).resolve().parent
LAYERS = {"taobao": [2, 4, 3], "beibei": [3, 4, 3]}


def train_passes(model, sampler, optimizer, rng, passes: int) -> int:
    """``passes`` epochs of the model's own sampler with Adam; returns the number of steps taken."""
    steps = 0
    model.train()
    for _ in range(passes):
        for batch in sampler.epoch(rng):
            optimizer.zero_grad(set_to_none=True)
            sum(model.losses(batch).values()).backward()
            optimizer.step()
            steps += 1
    model.eval()
    return steps


def hr10(model, dataset) -> float:
    return float(evaluate(model, dataset, "test", ks=[10]).metrics["HR@10"])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="taobao", choices=sorted(LAYERS))
    parser.add_argument("--passes", type=int, nargs="+", default=[40, 120, 240, 480, 800])
    parser.add_argument("--lr", type=float, default=1e-2, help="warm-start learning rate")
    parser.add_argument("--epochs", type=int, default=58, help="MB-CGCN epochs after each warm start")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "results" / "probes" / "mbcgcn-warm-start-probe.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = load_average()
    data = load_dataset(args.dataset)
    first = data.behaviors[0]
    torch.manual_seed(args.seed)
    single = MultiBehaviorDataset(name=f"{data.name}-{first}", n_users=data.n_users, n_items=data.n_items,
                                  behaviors=[first], train={first: data.train[first]}, test=data.test)
    view_model = LightGCN(single, LightGCNConfig(dim=64, layers=3, reg=1e-4, sampling="users"), "cpu")
    optimizer = torch.optim.Adam(view_model.parameters(), lr=args.lr)
    sampler = make_sampler(view_model.batch_spec, single, 2048)
    rng = np.random.default_rng(args.seed)
    checkpoints = {1, args.epochs // 2, args.epochs}
    records, done, steps, start = [], 0, 0, time.time()
    for passes in sorted(args.passes):
        steps += train_passes(view_model, sampler, optimizer, rng, passes - done)
        done = passes
        record = {"pretrain_lr": args.lr, "pretrain_passes": passes, "pretrain_steps": steps,
                  "pretrain_seconds": round(time.time() - start, 1), "view_model_HR@10": hr10(view_model, data)}
        torch.manual_seed(args.seed)
        model = MBCGCN(data, MBCGCNConfig(dim=64, layers=LAYERS[args.dataset], reg=1e-4, init_std=0.01,
                                          pretrain_epochs=0), "cpu")
        with torch.no_grad():
            model.user_emb.copy_(view_model.user_emb)
            model.item_emb.copy_(view_model.item_emb)
        model_optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        model_sampler = make_sampler(model.batch_spec, data, 2048)
        model_rng = np.random.default_rng(args.seed)
        began = time.time()
        for epoch in range(1, args.epochs + 1):
            train_passes(model, model_sampler, model_optimizer, model_rng, 1)
            if epoch in checkpoints:
                record[f"mbcgcn_HR@10_epoch{epoch}"] = hr10(model, data)
        record["mbcgcn_seconds"] = round(time.time() - began, 1)
        records.append(record)
        print(json.dumps(record), flush=True)
        atomic_write_json(Path(args.out), {
            "benchmark": "MB-CGCN from view warm starts of different lengths", "command": command_record(),
            "machine": machine_record(load_before), "dataset": data.name, "records": records})
    return {"records": records}


if __name__ == "__main__":
    main()
