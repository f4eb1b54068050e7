"""MB-CGCN: blocks against matrix powers, loss, warm start."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from baseline_helpers import assert_close_all, dense, grads, mean_bpr, nested_dataset

from mbrec.data.dataset import MultiBehaviorDataset
from mbrec.data.samplers import make_sampler
from mbrec.data.synthetic import make_synthetic
from mbrec.graph import SparseOperator, normalized_bipartite
from mbrec.models import build_model
from mbrec.models.lightgcn import propagate_mean


def mbcgcn_reference(model, ds: MultiBehaviorDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Blocks with explicit powers of dense Â_b (layer 0 included), transforms between blocks, and the
    unit-weight sum of the untransformed block outputs (baselines.md §4.1)."""
    m = ds.n_users
    x = torch.cat([model.user_emb, model.item_emb])
    users, items = 0, 0
    for b, mat in enumerate(ds.matrices()):
        a = dense(normalized_bipartite(mat, "symmetric"))
        layers = model.config.layers[b]
        y = sum(torch.linalg.matrix_power(a, power) @ x for power in range(layers + 1)) / (layers + 1)
        users, items = users + y[:m], items + y[m:]
        x = torch.cat([y[:m] @ model.user_transforms[b], y[m:] @ model.item_transforms[b]]) if b < 2 else x
    return users, items


def test_mbcgcn_blocks_and_gradients_match_matrix_power_reference():
    ds = nested_dataset(10)
    torch.manual_seed(2)
    model = build_model("mbcgcn", ds, {"dim": 4, "layers": [2, 0, 3], "init_std": 0.3})
    params = list(model.parameters())
    fast, ref = model.propagate(), mbcgcn_reference(model, ds)
    w = [torch.randn_like(t) for t in fast]
    assert_close_all(list(fast), list(ref), rtol=1e-5, atol=1e-6)
    assert_close_all(grads(sum((f * x).sum() for f, x in zip(fast, w, strict=True)), params),
                     grads(sum((f * x).sum() for f, x in zip(ref, w, strict=True)), params),
                     rtol=1e-4, atol=1e-6)
    # a block with 0 layers passes its input through: the cart block output is the transformed view output
    view_users = model.behavior_tables()[0][0]
    torch.testing.assert_close(model.behavior_tables()[1][0], view_users @ model.user_transforms[0])


def test_mbcgcn_loss_is_target_bpr_plus_batch_row_and_transform_l2():
    ds = nested_dataset(11)
    model = build_model("mbcgcn", ds, {"dim": 4, "layers": [1, 1, 1], "reg": 0.25})
    assert model.batch_spec.behaviors == ("buy",) and model.batch_spec.negatives_against == "target"
    batch = next(make_sampler(model.batch_spec, ds, batch_size=6).epoch(np.random.default_rng(0)))
    t = batch.triples["buy"]
    losses = model.losses(batch)
    assert set(losses) == {"bpr", "reg/l2"}
    users, items = model.propagate()
    margin = (users[t.users] * (items[t.positives] - items[t.negatives])).sum(-1)
    assert losses["bpr"].item() == pytest.approx(mean_bpr(margin), rel=1e-5)
    rows = [model.user_emb[t.users], model.item_emb[t.positives], model.item_emb[t.negatives],
            model.user_transforms, model.item_transforms]
    want = 0.25 * 0.5 * sum(r.pow(2).sum().item() for r in rows) / len(t)
    assert losses["reg/l2"].item() == pytest.approx(want, rel=1e-5)


def test_mbcgcn_warm_start_learns_the_first_behavior():
    ds = make_synthetic(60, 50, seed=2, mean_views=12)
    view = ds.train["view"].toarray() > 0

    def view_auc(model) -> float:
        """Share of (viewed, unviewed) item pairs ranked correctly by a LightGCN on view from E_0."""
        op = SparseOperator(normalized_bipartite(ds.train["view"], "symmetric"), symmetric=True)
        with torch.no_grad():
            e = propagate_mean(op, torch.cat([model.user_emb, model.item_emb]), 3)
        scores = (e[:60] @ e[60:].T).numpy()
        return float(np.mean([(scores[u, view[u]][:, None] > scores[u, ~view[u]][None]).mean()
                              for u in range(60)]))

    torch.manual_seed(0)
    cold = build_model("mbcgcn", ds, {"dim": 8, "pretrain_epochs": 0})
    torch.manual_seed(0)
    warm = build_model("mbcgcn", ds, {"dim": 8, "pretrain_epochs": 40, "pretrain_lr": 0.01,
                                      "pretrain_batch_size": 16})
    assert view_auc(warm) > view_auc(cold) + 0.1
    assert view_auc(warm) > 0.75


def test_mbcgcn_warm_start_reports_progress_on_the_mbrec_logger():
    """A long warm start is not silent: about every 10 % of its passes it logs the pass, the loss and the
    time left, and the CLI sends those lines to stderr."""
    import logging

    from mbrec.cli import show_library_progress

    ds = make_synthetic(40, 30, seed=3, mean_views=8)
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger = logging.getLogger("mbrec")
    keep, level = Keep(), logger.level
    logger.addHandler(keep)
    logger.setLevel(logging.INFO)
    try:
        build_model("mbcgcn", ds, {"dim": 8, "pretrain_epochs": 20, "pretrain_batch_size": 16})
    finally:
        logger.removeHandler(keep)
        logger.setLevel(level)
    assert [line.split(",")[0] for line in lines] == [
        f"MB-CGCN warm start (LightGCN on {ds.behaviors[0]}): pass {n}/20" for n in range(2, 21, 2)]
    assert all("min left" in line and "loss" in line for line in lines)
    saved = (list(logger.handlers), logger.level, logger.propagate)
    try:
        logger.handlers.clear()
        show_library_progress()
        assert [type(h) for h in logger.handlers] == [logging.StreamHandler]
        assert logger.level == logging.INFO and not logger.propagate
    finally:
        logger.handlers[:], logger.level, logger.propagate = saved


# ============================================================================================== PKEF
