r"""One MBSSL training step on Beibei (paper config): ours against a straight port of the same maths.

Model: ``configs/mbssl_beibei.yaml``, batches of 256 users (``make_sampler(model.batch_spec, ds, 256)``),
views drawn once (``model.prepare_epoch(0)``). One timed step: draw a batch, ``model.losses(batch)``,
backward of the summed losses (``hmg: none``) or ``HMG("mbssl").backward(losses, params)`` (one backward
per task; by default as many at once as torch has threads, one thread each, ``--hmg-task-threads 1``: one
after the other), Adam step. Medians over ``--steps`` steps after ``--warmup`` (3: the first steps of a process
page-fault its heap in and run up to 2x slower; the record keeps every step's page-fault count), for each
backward.

The reference step (this file) computes the same losses the straightforward way (mbssl.md §14 "straight
port"): three separate encoder runs (main graph, view 1, view 2) with ``torch.sparse.mm`` on CSR tensors
and torch's own sparse autograd (its backward transposes the matrix on every call), per-behavior
``Z_k = LeakyReLU(((Â_k H_k) ⊙ r_k) W_gc)``, attention with einsum + softmax over ``[K, n, K, d_a]``,
and InfoNCE over the **repeated** anchors (one row per batch (user, item) purchase pair: ``[P, M]`` and
``[P, N+1]`` logits, false negatives as a dense ``[P, C]`` mask set to logit 0). The non-sampling loss
(:func:`mbrec.losses.nonsampling.nonsampling_loss`, Gram form) and the L2 term are the same in both.
The reference backward is the summed losses; ``--ref-steps`` timed steps follow the equality check
(one untimed forward + backward: the reference's warm-up).

Equality check (train mode, dropout on): both sides draw their masks by the library's rule
(``mbrec.models.dropout.keep_mask``: 16-bit lanes of full-range int64 draws) after every layer's attention in the same
order (pass 0, view 1, view 2; layers 0..L-1), so with the same seed and the same views the masks are
identical. Compared: every loss, their sum, the gradients of the sum.
Peak RSS (``ru_maxrss``, a process-wide maximum) is read after each part; the reference runs last.

Floor: the step's sparse products alone, as the encoder issues them (pass 0: every behavior graph at
every layer; each view pass: its target graph at layer 0, then every behavior graph with the view's
target graph at layers 1..L-1), forward and backward (``csr_product`` with the operator and its
transpose, random ``[n, d]`` inputs), medians over ``--steps`` repeats. ``step / floor`` says how much of
the summed step is outside the graph products; ``floor x 84`` bounds the epoch time from below on this
machine whatever else is made faster.

    python benchmarks/bench_mbssl_step.py --threads 1
"""

from __future__ import annotations

import argparse
import itertools
import resource
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from benchlib import (
    REPO,
    clock,
    command_record,
    load_average,
    load_or_skip,
    machine_record,
    median_times,
    since,
)

from mbrec.config import load_run_config
from mbrec.data.samplers import Batch, make_sampler
from mbrec.graph import SparseOperator
from mbrec.graph.spmm import csr_product
from mbrec.losses.nonsampling import nonsampling_loss
from mbrec.models import build_model
from mbrec.models.dropout import keep_mask
from mbrec.models.mbssl import MBSSL, FalseNegatives, draw_target_view
from mbrec.train.allocator import keep_freed_memory
from mbrec.train.checkpoint import atomic_write_json
from mbrec.train.hmg import HMG
from mbrec.train.trainer import make_optimizer

ROOT = Path(__file__).resolve().parent
BATCH_SIZE = 256
STEPS_PER_EPOCH = 84          # ⌊21,716 / 256⌋, last partial batch dropped
GOAL_EPOCH_S = 180.0          # 3 min / epoch
LOSS_RTOL, GRAD_RTOL = 1e-4, 1e-3


# ------------------------------------------------------------------------------------- reference maths
def csr(mat: sp.spmatrix) -> torch.Tensor:
    """A plain torch CSR tensor (int64 indices), as a straight port would build it."""
    m = sp.csr_matrix(mat, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(torch.from_numpy(m.indptr.astype(np.int64)),
                                       torch.from_numpy(m.indices.astype(np.int64)),
                                       torch.from_numpy(m.data), size=m.shape, check_invariants=False)


def reference_encode(model: MBSSL, graphs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """One encoder run on ``graphs[l][k]`` (layer l, behavior k): pooled ``E [n, K, d]`` and ``h [K, d]``."""
    enc = model.encoder
    n_beh = enc.n_behaviors
    ego = torch.cat([enc.user_emb, enc.item_emb])                                        # [n, d]
    relation = [enc.behavior_emb]
    for weight in enc.relation_weights:
        relation.append(relation[-1] @ weight)
    hidden = torch.stack([ego] * n_beh)                                                  # [K, n, d]
    total = hidden
    for layer, weight in enumerate(enc.propagation_weights):
        z = torch.stack([F.leaky_relu((torch.sparse.mm(graphs[layer][k], hidden[k]) * relation[layer][k]) @ weight,
                                      0.01) for k in range(n_beh)])                      # [K, n, d]
        scores = torch.einsum("jnke,ke->jnk", torch.tanh(torch.einsum("jnd,kde->jnke", z, enc.attention_proj)),
                              enc.attention_score[..., 0])                               # [K_in, n, K_out]
        hidden = torch.einsum("jnk,jnd->knd", torch.softmax(scores, dim=0), z).contiguous()
        if model.training and enc.dropout > 0:
            keep, p_used = keep_mask(hidden.shape, enc.dropout)       # the library's mask rule, same draws
            hidden = hidden * keep / (1.0 - p_used)
        total = total + hidden
    h = torch.stack(relation).mean(0)
    return (total / (enc.layers + 1)).permute(1, 0, 2), h


def reference_nce(anchors: torch.Tensor, candidates: torch.Tensor, positives: torch.Tensor, tau: float,
                  false_negative: torch.Tensor | None) -> torch.Tensor:
    """Σ over the repeated anchors ``[P, d]`` of ``-c(x, y⁺)/τ + log Σ_y exp(c̃(x, y)/τ)``."""
    a = F.normalize(anchors, dim=1)
    c = F.normalize(candidates, dim=1)
    logits = a @ c.T / tau                                                                # [P, C]
    if false_negative is not None:
        logits = logits.masked_fill(false_negative, 0.0)
    positive = (a * F.normalize(positives, dim=1)).sum(1) / tau
    return (torch.log(torch.exp(logits).sum(1)) - positive).sum()


def fn_mask(false_negatives: FalseNegatives, occurrences: np.ndarray, n_candidates: int) -> torch.Tensor:
    """Dense ``[P, C]`` mask of every anchor occurrence's swing false negatives."""
    rows, cols = false_negatives.select(occurrences)
    mask = torch.zeros(len(occurrences), n_candidates, dtype=torch.bool)
    mask[torch.from_numpy(rows), torch.from_numpy(cols)] = True
    return mask


def reference_losses(model: MBSSL, graphs: list[torch.Tensor], views: list[list[torch.Tensor]],
                     batch: Batch) -> dict[str, torch.Tensor]:
    """The loss dict of :meth:`MBSSL.losses`, computed the straightforward way (module docstring)."""
    c, m, t = model.config, model.n_users, model.target_index
    table, h = reference_encode(model, [graphs] * c.layers)
    view1, view2 = (reference_encode(model, [[*graphs[:t], g] for g in view])[0] for view in views)
    user_ids = batch.users.numpy()
    batch_users = table[:m][batch.users]
    rec = torch.zeros(())
    for k, (lam, w) in enumerate(zip(model.rec_weights, model.neg_weights, strict=True)):
        if lam:
            rows, items = model.labels[k].pairs(user_ids)
            rec = rec + lam * nonsampling_loss(batch_users[:, k], table[m:, k], h[k], torch.from_numpy(rows),
                                               torch.from_numpy(items), w)
    losses = {"rec": rec}
    rows, items = model.labels[t].pairs(user_ids)
    pair_users, pair_items = torch.from_numpy(user_ids[rows]), torch.from_numpy(items)
    pad = table.new_zeros(1, table.shape[-1])
    losses["aux/intra"] = c.intra_weight * (
        reference_nce(view1[:m, t][pair_users], view2[:m, t], view2[:m, t][pair_users], c.tau, None)
        + reference_nce(view1[m:, t][pair_items], torch.cat([view2[m:, t], pad]), view2[m:, t][pair_items],
                        c.tau, None))
    user_mask = fn_mask(model.user_false_negatives, user_ids[rows], m)
    item_mask = fn_mask(model.item_false_negatives, items, model.n_items + 1)
    for k, mu in zip(model.aux_indices, model.inter_weights, strict=True):
        losses[f"aux/inter/{model.behaviors[k]}"] = mu * (
            reference_nce(table[:m, t][pair_users], table[:m, k], table[:m, k][pair_users], c.tau, user_mask)
            + reference_nce(table[m:, t][pair_items], torch.cat([table[m:, k], pad]), table[m:, k][pair_items],
                            c.tau, item_mask))
    losses["reg/l2"] = c.reg * 0.5 * (batch_users.pow(2).sum() + table[m:].pow(2).sum())
    return losses


# ------------------------------------------------------------------------------------------- timing
def encoder_products(model: MBSSL, view_ops: list[list[SparseOperator]]) -> list[SparseOperator]:
    """The sparse products of one encoder call with two views, in the encoder's order (module docstring)."""
    t, layers = model.target_index, model.config.layers
    products = [op for _ in range(layers) for op in model.graphs]                 # pass 0
    for view in view_ops:
        products += [view[0]] + [op for layer in range(1, layers) for op in [*model.graphs[:t], view[layer]]]
    return products


def time_sparse_floor(products: list[SparseOperator], dim: int, repeats: int) -> dict:
    """Medians (wall, CPU) of all products' forward + backward, and their count."""
    x = torch.randn(products[0].shape[1], dim)
    samples = []
    for i in range(repeats + 1):
        start = clock()
        for op in products:
            csr_product(op.matrix, x)
            csr_product(op.transpose, x)
        if i:                                                                      # the first is a warm-up
            samples.append(since(start))
    return {"products": len(products), "medians": median_times(samples), "samples": [list(v) for v in samples]}


def time_steps(label: str, n_warmup: int, n_steps: int, batches, optimizer: torch.optim.Optimizer,
               forward: Callable[[Batch], dict[str, torch.Tensor]],
               backward: Callable[[dict[str, torch.Tensor]], None]) -> dict:
    """Medians (wall, CPU) of sample / forward / backward / adam / step over the timed steps."""
    parts = ("sample", "forward", "backward", "adam")
    samples: dict[str, list[tuple[float, float]]] = {p: [] for p in (*parts, "step")}
    faults = []                                  # minor page faults of every step, warm-up included
    for i in range(n_warmup + n_steps):
        faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        marks = [clock()]
        batch = next(batches)
        marks.append(clock())
        optimizer.zero_grad(set_to_none=True)
        losses = forward(batch)
        marks.append(clock())
        backward(losses)
        marks.append(clock())
        optimizer.step()
        marks.append(clock())
        t = {p: (b[0] - a[0], b[1] - a[1]) for p, a, b in zip(parts, marks[:-1], marks[1:], strict=True)}
        t["step"] = (marks[-1][0] - marks[0][0], marks[-1][1] - marks[0][1])
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before)
        print(f"{label} {'warm-up' if i < n_warmup else 'step'} {i + 1}: {t['step'][0]:.2f} s (cpu "
              f"{t['step'][1]:.2f}; forward {t['forward'][0]:.2f}, backward {t['backward'][0]:.2f}; "
              f"{faults[-1]} page faults)", flush=True)
        if i >= n_warmup:
            for p, value in t.items():
                samples[p].append(value)
    return {"medians": {p: median_times(v) for p, v in samples.items()},
            "samples": {p: [list(s) for s in v] for p, v in samples.items()}, "page_faults": faults,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}          # KiB on Linux


def check_equal(model: MBSSL, graphs, views, batch: Batch, params: list[torch.nn.Parameter], seed: int) -> dict:
    """Ours vs reference on one batch, same seed (same dropout masks): losses and gradients of their sum."""
    results = []
    for fn in (model.losses, lambda b: reference_losses(model, graphs, views, b)):
        for p in params:
            p.grad = None
        torch.manual_seed(seed)
        losses = fn(batch)
        sum(losses.values()).backward()
        results.append(({k: float(v.detach()) for k, v in losses.items()}, [p.grad.clone() for p in params]))
    (ours, ours_grads), (ref, ref_grads) = results
    loss_rel = {k: abs(ours[k] - ref[k]) / max(abs(ref[k]), 1e-12) for k in ref}
    total_ours, total_ref = sum(ours.values()), sum(ref.values())
    total_rel = abs(total_ours - total_ref) / abs(total_ref)
    grad_rel = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))
                   for a, b in zip(ours_grads, ref_grads, strict=True))
    ok = total_rel <= LOSS_RTOL and max(loss_rel.values()) <= LOSS_RTOL and grad_rel <= GRAD_RTOL
    return {"mode": "train (dropout on, identical masks from the same seed)", "ours": ours, "reference": ref,
            "sum_ours": total_ours, "sum_reference": total_ref, "sum_rel_diff": total_rel,
            "loss_rel_diff": loss_rel, "grad_max_rel_diff": grad_rel,
            "tolerances": {"loss_rtol": LOSS_RTOL, "grad_rtol": GRAD_RTOL}, "match": ok}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--steps", type=int, default=3, help="timed steps of ours, per backward mode (medians)")
    parser.add_argument("--ref-steps", type=int, default=1, help="timed reference steps (medians)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed steps of ours first, per mode (the first steps fault the heap in: "
                             "hundreds of thousands of page faults each, tens of thousands later)")
    parser.add_argument("--hmg-task-threads", type=int, default=None,
                        help="HMG's task_threads (default: torch's thread count, i.e. the task backwards run "
                             "at once, one thread each; 1 = one after the other with every thread)")
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_mbssl_step.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()                 # as training does (mbrec.train.allocator)
    load_before = load_average()
    ds = load_or_skip("beibei")

    cfg = load_run_config(REPO / "configs" / "mbssl_beibei.yaml")
    seed = cfg.train.seed
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = build_model("mbssl", ds, cfg.params)
    c = model.config
    if not (c.use_intra and c.use_inter and c.fn_mode == "zero_logit" and c.pool == "code" and c.cdm):
        raise SystemExit("the reference implements both SSL losses, zero-logit FN, code pooling and CDM only")
    model.train()
    torch.manual_seed(seed)
    model.prepare_epoch(0)
    torch.manual_seed(seed)            # the same two views again, for the reference (public API, same RNG use)
    view_ops = [draw_target_view(model.target_train, c.aug_type, c.aug_ratio, c.layers, "cpu") for _ in range(2)]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(cfg.train, params)
    sampler = make_sampler(model.batch_spec, ds, BATCH_SIZE)
    batches = (batch for _ in itertools.count() for batch in sampler.epoch(rng))
    hmg = HMG("mbssl", cfg.train.hmg.relax, cfg.train.hmg.beta, task_threads=args.hmg_task_threads)

    backward = {"sum": lambda losses: sum(losses.values()).backward(),
                "hmg": lambda losses: hmg.backward(losses, params)}
    ours = {mode: time_steps(f"ours ({mode})", args.warmup, args.steps, batches, optimizer, model.losses, fn)
            for mode, fn in backward.items()}

    floor = time_sparse_floor(encoder_products(model, view_ops), c.dim, args.steps)
    print(f"sparse floor: {floor['products']} products forward + backward "
          f"{floor['medians']['wall_s']:.2f} s (cpu {floor['medians']['cpu_s']:.2f})", flush=True)

    graphs = [csr(op.scipy) for op in model.graphs]
    views = [[csr(op.scipy) for op in view] for view in view_ops]          # per view: one graph per layer
    check_batch = next(batches)
    anchors = int(model.labels[model.target_index].pairs(check_batch.users.numpy())[0].size)
    check = check_equal(model, graphs, views, check_batch, params, seed)
    print(f"check ({check['mode']}): sum ours {check['sum_ours']:.6g} vs reference {check['sum_reference']:.6g}, "
          f"rel diff {check['sum_rel_diff']:.2e} (per loss max {max(check['loss_rel_diff'].values()):.2e}), "
          f"grad max rel diff {check['grad_max_rel_diff']:.2e} -> {'MATCH' if check['match'] else 'MISMATCH'}",
          flush=True)
    reference = time_steps("reference (sum)", 0, args.ref_steps, batches, optimizer,
                           lambda b: reference_losses(model, graphs, views, b), backward["sum"])

    step = {name: r["medians"]["step"] for name, r in {**ours, "reference": reference}.items()}
    ratio = {name: {unit: step["reference"][unit] / step[name][unit] for unit in ("wall_s", "cpu_s")}
             for name in ("sum", "hmg")}
    step["sparse_floor"] = floor["medians"]
    epoch = {name: step[name]["wall_s"] * STEPS_PER_EPOCH for name in ("sum", "hmg", "reference", "sparse_floor")}
    over_floor = {name: step[name]["wall_s"] / step["sparse_floor"]["wall_s"] for name in ("sum", "hmg")}
    for name, r in {"ours (sum)": ours["sum"], "ours (hmg)": ours["hmg"], "reference (sum)": reference}.items():
        med = r["medians"]
        print(f"{name:>16}: {med['step']['wall_s']:.2f} s/step (cpu {med['step']['cpu_s']:.2f}; forward "
              f"{med['forward']['wall_s']:.2f}, backward {med['backward']['wall_s']:.2f}, adam "
              f"{med['adam']['wall_s']:.3f}); peak RSS so far {r['peak_rss_gb']:.2f} GB")
    print(f"reference / ours: {ratio['sum']['wall_s']:.1f}x (cpu {ratio['sum']['cpu_s']:.1f}x) with the summed "
          f"backward; {ratio['hmg']['wall_s']:.1f}x (cpu {ratio['hmg']['cpu_s']:.1f}x) against ours with HMG")
    print(f"epoch ({STEPS_PER_EPOCH} steps): ours {epoch['sum'] / 60:.1f} min (sum), {epoch['hmg'] / 60:.1f} min "
          f"(HMG), reference {epoch['reference'] / 60:.1f} min; goal {GOAL_EPOCH_S / 60:.0f} min/epoch")
    print(f"sparse products alone: {epoch['sparse_floor'] / 60:.1f} min/epoch; step / floor = "
          f"{over_floor['sum']:.2f} (sum), {over_floor['hmg']:.2f} (HMG)")

    record = {
        "benchmark": "MBSSL training step: ours vs straight port (Beibei)",
        "command": command_record(),
        "machine": machine_record(load_before),
        "config": "configs/mbssl_beibei.yaml", "params": cfg.params, "batch_size": BATCH_SIZE,
        "warmup": args.warmup, "steps": args.steps, "ref_steps": args.ref_steps,
        "hmg_task_threads": args.hmg_task_threads if args.hmg_task_threads is not None else torch.get_num_threads(),
        "check_batch_target_pairs": anchors, "check": check,
        "ours_sum": ours["sum"], "ours_hmg": ours["hmg"], "reference": reference,
        "sparse_floor": floor, "step_s": step, "ratio_reference_over_ours": ratio,
        "ratio_step_over_sparse_floor": over_floor,
        "peak_rss_note": "ru_maxrss is a process-wide maximum; the reference ran last",
        "steps_per_epoch": STEPS_PER_EPOCH, "epoch_estimate_s": epoch, "goal_epoch_s": GOAL_EPOCH_S,
    }
    atomic_write_json(args.out, record)
    print(f"wrote {args.out}")
    if not check["match"]:
        raise SystemExit("the reference step does not reproduce our losses / gradients (see 'check')")
    return record


if __name__ == "__main__":
    main()
