r"""One COPF training step on Taobao (paper config) against the sum of its own kernels timed in isolation.

Model: ``configs/copf_taobao.yaml`` (COGCN with one layer per behavior on the upstream graphs, DFME with one
fitting layer per task, contrastive loss on both sides, d = 64), batches of 256 users. One timed step is
what the trainer does: draw a batch (``make_sampler(model.batch_spec, ds, 256)``), ``model.losses(batch)``,
backward of the summed losses, Adam step. In the same loop, after every step, the step's kernels run alone:

* sparse: every graph product of the step on the model's own :class:`SparseOperator` s with random dense
  inputs of the same shapes — COGCN ``S_k X`` ``[M+N, 64]`` per behavior and layer, DFME ``Â_k Y``
  ``[M+N, 64·g]`` per task with λ > 0 and fitting layer (g = fitting tables propagated together; the last
  fitting layer on the row block ``Â_k[rows]`` of the rows that step's pairs read, ``[R, M+N]``, as
  :meth:`DFME.prepare_pairs` computes it; with one fitting layer, g + 1 products ``Â_k[rows] X_m`` of
  width 64 instead, one per table mixed, as :meth:`DFME.fitting_tables` does) — and, for inputs that need a
  gradient, the backward product with the cached transpose;
* contrastive: per auxiliary behavior and side, ``E = exp(A Oᵀ)``, row sums and the two backward
  matmuls ``E O``, ``Eᵀ A`` with ``A [anchors, 64]`` (the unique target users / positive items of that
  step's batch) and ``O`` = all M users / N items;
* adam: ``Adam.step()`` on copies of the parameters with random gradients.

* step with full rows: the same batch once more with ``restrict_rows = False`` (every row of the fitting
  tables, the path before the row blocks): ``full_rows / row_blocks`` is the A/B of that change.

Every part is timed as wall and process-CPU seconds; medians over ``--steps`` steps after ``--warmup``.
Reported: ``ratio = step / (sparse + contrastive + adam)`` (goal: <= 1.5), the epoch (``len(sampler)`` =
61 steps) and whole-run (200 epochs) estimates, and one full-ranking evaluation (``ks = [10, 50]``).
Results go to ``benchmarks/results/bench_copf_step.json`` (atomic write).

    python benchmarks/bench_copf_step.py --threads 2
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from benchlib import REPO, clock, command_record, load_average, load_or_skip, machine_record, median_times, since, timed

from mbrec.config import load_run_config
from mbrec.data.samplers import Batch, make_sampler
from mbrec.eval import evaluate
from mbrec.graph import SparseOperator
from mbrec.graph.spmm import csr_product
from mbrec.models import build_model
from mbrec.models.copf import COPF, DFME, detached_behaviors
from mbrec.models.copf.dfme import RowBlock
from mbrec.train.allocator import keep_freed_memory
from mbrec.train.checkpoint import atomic_write_json
from mbrec.train.trainer import make_optimizer

ROOT = Path(__file__).resolve().parent
BATCH_SIZE = 256


def sparse_products(model: COPF, batch: Batch | None = None) -> list[dict]:
    """The step's graph products: operator, dense width and whether its input needs a gradient.

    With ``batch`` (and DFME's ``restrict_rows``), the last fitting layer of each task uses the row block
    of that batch's pairs, as :meth:`DFME.prepare_pairs` does; otherwise the full graphs.
    """
    products = []
    for k, (op, layers) in enumerate(zip(model.encoder_ops, model.layers, strict=True)):
        products += [{"name": f"cogcn/{model.behaviors[k]}", "op": op, "width": model.config.dim,
                      "backward": True}] * layers
    head = model.head
    if not (isinstance(head, DFME) and head.forward == "fit"):
        raise SystemExit("this benchmark expects COPF's gated DFME with fitting experts")
    n = len(model.behaviors)
    for k, weight in enumerate(model.task_weights):
        if weight == 0:
            continue
        frozen = len(detached_behaviors(head.stop_grad, k, n, head.fit_layers[k]))
        last = head.graphs[k]
        if batch is not None and head.restrict_rows:
            last = RowBlock.of_pairs(head.graphs[k], model.n_users, model.n_items,
                                     *model.task_pairs(batch)[k]).operator
        for group, grad in ((n - 1 - frozen, True), (frozen, False)):
            if not group:
                continue
            if head.fit_layers[k] == 1 and batch is not None and head.restrict_rows:
                # DFME.fitting_tables' one-layer row-block path: one d-wide product per table it mixes
                products += [{"name": f"dfme/{model.behaviors[k]}", "op": last, "width": head.dim,
                              "backward": grad}] * (group + 1)
                continue
            ops = [head.graphs[k]] * (head.fit_layers[k] - 1) + [last]
            products += [{"name": f"dfme/{model.behaviors[k]}", "op": op, "width": group * head.dim,
                          "backward": grad} for op in ops]
    return products


def run_sparse(products: list[dict], inputs: dict[int, torch.Tensor]) -> None:
    """Each product's forward ``S X`` and, where needed, backward ``Sᵀ G``; X ``[cols, w]`` and G ``[rows, w]``
    are leading row slices (no copies) of one random ``[M+N, w]`` tensor per width ``w`` (``inputs``)."""
    for p in products:
        op: SparseOperator = p["op"]
        dense = inputs[p["width"]]
        csr_product(op.matrix, dense[: op.shape[1]])
        if p["backward"]:
            csr_product(op.transpose, dense[: op.shape[0]])


def contrast_shapes(model: COPF, batch: Batch) -> list[tuple[int, int]]:
    """``(anchors, rows)`` of every ``[anchors, rows]`` logit matrix of the step's contrastive loss."""
    c = model.config
    if c.cl_weight <= 0 or len(model.behaviors) < 2:
        return []
    target = batch.triples[model.behaviors[-1]]
    sides = []
    if c.cl_mode in ("both_side", "user_side"):
        sides.append((int(target.users.unique().numel()), model.n_users))
    if c.cl_mode in ("both_side", "item_side"):
        sides.append((int(target.positives.unique().numel()), model.n_items))
    return sides * (len(model.behaviors) - 1)


def run_contrast(operands: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Per ``(A, O)``: forward (logits, exp, row sums), backward (``E O``, ``Eᵀ A``): the dense kernels that
    any exact InfoNCE over all rows needs (the row scales act on ``[A, d]`` / ``[R, d]`` factors)."""
    for anchors, table in operands:
        exp_logits = (anchors @ table.T).exp_()
        exp_logits.sum(1)
        exp_logits @ table
        exp_logits.T @ anchors


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (medians)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_copf_step.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()                 # as training does (mbrec.train.allocator)
    load_before = load_average()
    ds = load_or_skip("taobao")

    cfg = load_run_config(REPO / "configs" / "copf_taobao.yaml")
    torch.manual_seed(cfg.train.seed)
    rng = np.random.default_rng(cfg.train.seed)
    model = build_model("copf", ds, cfg.params)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(cfg.train, params)
    sampler = make_sampler(model.batch_spec, ds, BATCH_SIZE)
    batches = (batch for _ in itertools.count() for batch in sampler.epoch(rng))  # epochs back to back

    gen = torch.Generator().manual_seed(0)
    inputs = {p["width"]: torch.randn(p["op"].shape[1], p["width"], generator=gen) for p in sparse_products(model)}
    shadow = [torch.randn(p.shape, generator=gen).requires_grad_() for p in params]
    for copy in shadow:
        copy.grad = torch.randn(copy.shape, generator=gen)
    shadow_adam = make_optimizer(cfg.train, shadow)
    shift = 1.0 / model.config.tau

    parts = ("sample", "forward", "backward", "adam", "step", "step_full_rows", "sparse", "contrastive",
             "adam_alone")
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in parts}
    shapes_seen = []
    for i in range(args.warmup + args.steps):
        t: dict[str, tuple[float, float]] = {}
        start = clock()
        batch = next(batches)
        t["sample"] = since(start)
        mark = clock()
        optimizer.zero_grad(set_to_none=True)
        losses = model.losses(batch)
        t["forward"] = since(mark)
        mark = clock()
        sum(losses.values()).backward()
        t["backward"] = since(mark)
        t["adam"] = timed(optimizer.step)
        t["step"] = since(start)
        # A/B on the same batch: DFME's fitting tables on every row (the path before the row blocks)
        model.head.restrict_rows = False
        mark = clock()
        optimizer.zero_grad(set_to_none=True)
        sum(model.losses(batch).values()).backward()
        optimizer.step()
        t["step_full_rows"] = tuple(a + b for a, b in zip(since(mark), t["sample"], strict=True))
        model.head.restrict_rows = True

        products = sparse_products(model, batch)
        t["sparse"] = timed(run_sparse, products, inputs)
        shapes = contrast_shapes(model, batch)
        operands = [(F.normalize(torch.randn(a, model.config.dim, generator=gen), dim=1) * shift,
                     F.normalize(torch.randn(r, model.config.dim, generator=gen), dim=1)) for a, r in shapes]
        t["contrastive"] = timed(run_contrast, operands)
        t["adam_alone"] = timed(shadow_adam.step)
        if i >= args.warmup:
            shapes_seen.append(shapes)
            for name in parts:
                samples[name].append(t[name])
        tag = "warm-up" if i < args.warmup else "step"
        print(f"{tag} {i + 1}: step {t['step'][0]:.2f} s (cpu {t['step'][1]:.2f}; full rows "
              f"{t['step_full_rows'][0]:.2f}); kernels "
              f"{sum(t[n][0] for n in ('sparse', 'contrastive', 'adam_alone')):.2f} s", flush=True)

    medians = {name: median_times(samples[name]) for name in parts}
    kernels = {unit: sum(medians[n][unit] for n in ("sparse", "contrastive", "adam_alone"))
               for unit in ("wall_s", "cpu_s")}
    ratio = {unit: medians["step"][unit] / kernels[unit] for unit in kernels}
    ratio_no_sampling = {unit: (medians["step"][unit] - medians["sample"][unit]) / kernels[unit]
                         for unit in kernels}
    full_over_rows = {unit: medians["step_full_rows"][unit] / medians["step"][unit] for unit in kernels}
    epoch_s = medians["step"]["wall_s"] * len(sampler)
    model.eval()
    eval_start = clock()
    result = evaluate(model, ds, ks=[10, 50])
    eval_wall, eval_cpu = since(eval_start)

    for name in parts:
        print(f"{name:>12}: {medians[name]['wall_s']:.3f} s (cpu {medians[name]['cpu_s']:.3f})")
    print(f"isolated kernels: {kernels['wall_s']:.3f} s (cpu {kernels['cpu_s']:.3f}); "
          f"ratio step / kernels = {ratio['wall_s']:.2f} (cpu {ratio['cpu_s']:.2f}), goal <= 1.5; "
          f"without sampling {ratio_no_sampling['wall_s']:.2f} (cpu {ratio_no_sampling['cpu_s']:.2f})")
    print(f"full-row fitting tables / row blocks: {full_over_rows['wall_s']:.2f}x (cpu {full_over_rows['cpu_s']:.2f}x)"
          " on the same batches")
    print(f"epoch ({len(sampler)} steps) ~ {epoch_s:.0f} s; {cfg.train.epochs} epochs ~ "
          f"{epoch_s * cfg.train.epochs / 3600:.2f} h (training only)")
    print(f"one full-ranking evaluation: {eval_wall:.1f} s (cpu {eval_cpu:.1f}); "
          f"HR@10 = {result.metrics['HR@10']:.4f}")

    record = {
        "benchmark": "COPF training step vs isolated kernels",
        "command": command_record(),
        "machine": machine_record(load_before),
        "config": "configs/copf_taobao.yaml", "params": cfg.params, "batch_size": BATCH_SIZE,
        "warmup": args.warmup, "steps": args.steps,
        "sparse_products_last_step": [{"name": p["name"], "shape": list(p["op"].shape), "nnz": p["op"].nnz,
                                       "width": p["width"], "backward": p["backward"]} for p in products],
        "contrastive_shapes_per_step": shapes_seen,
        "medians": medians,
        "samples": {name: [list(s) for s in samples[name]] for name in parts},
        "isolated_kernels": kernels, "ratio_step_over_kernels": ratio,
        "ratio_full_rows_over_row_blocks": full_over_rows,
        "ratio_step_without_sampling_over_kernels": ratio_no_sampling,
        "steps_per_epoch": len(sampler), "epoch_estimate_s": epoch_s,
        "run_estimate_s": {"epochs": cfg.train.epochs, "training_s": epoch_s * cfg.train.epochs},
        "evaluation": {"wall_s": eval_wall, "cpu_s": eval_cpu, "ks": [10, 50], "metrics": result.metrics},
    }
    atomic_write_json(args.out, record)
    print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
