"""MBGCN: item graphs, scores and gradients against a plain reference, sampler, warm start, loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from baseline_helpers import assert_close_all, grads, mean_bpr, nested_dataset

from mbrec.data.dataset import MultiBehaviorDataset, binary_csr
from mbrec.data.samplers import make_sampler
from mbrec.data.synthetic import make_synthetic
from mbrec.graph import spmm
from mbrec.models import build_model
from mbrec.models.mbgcn import DroppableMatrix, ItemGraph, item_cooccurrence_graph


def test_item_cooccurrence_graph_is_binary_symmetric_without_diagonal():
    r = binary_csr([0, 0, 1, 1, 2, 2], [0, 1, 1, 2, 1, 3], (3, 5))
    g = item_cooccurrence_graph(r).toarray()
    want = np.zeros((5, 5), dtype=np.float32)
    for a, b in [(0, 1), (1, 2), (1, 3)]:
        want[a, b] = want[b, a] = 1.0
    np.testing.assert_array_equal(g, want)               # item 1 shared by two users still weighs 1


def test_item_graph_dense_and_sparse_storage_agree():
    g = item_cooccurrence_graph(nested_dataset().train["view"])
    q = torch.randn(g.shape[0], 4, requires_grad=True)
    w = torch.randn(g.shape[0], 4)
    outs = []
    for density in (0.0, 2.0):                           # 0 -> dense, 2 -> sparse CSR
        graph = ItemGraph(g, density, "cpu")
        assert graph.dense == (density == 0.0)
        y = graph(q)
        outs.append((y, *grads((y * w).sum(), [q])))
    assert_close_all(list(outs[0]), list(outs[1]))
    deg = np.asarray(g.sum(1)).ravel()
    torch.testing.assert_close(outs[0][0], torch.from_numpy(g.toarray()) @ q.detach() / torch.from_numpy(
        deg + 1e-8).float().unsqueeze(1))


def test_droppable_matrix_drops_entries_and_its_transpose_uses_the_same_mask():
    r = nested_dataset().train["view"]
    mat = DroppableMatrix(r, "cpu")
    torch.manual_seed(3)
    sample = mat.sample(0.5)
    forward, backward = sample.matrix.to_dense(), sample.transpose.to_dense()
    torch.testing.assert_close(backward, forward.T)
    values = forward[torch.from_numpy(r.toarray()) > 0]
    assert set(values.unique().tolist()) == {0.0, 2.0}     # kept w.p. 0.5, scaled by 1/0.5
    flipped = mat.sample(0.5, transposed=True)
    torch.testing.assert_close(flipped.transpose.to_dense(), flipped.matrix.to_dense().T)
    x = torch.randn(r.shape[1], 3, requires_grad=True)
    (gx,) = grads((spmm(sample, x) ** 2).sum(), [x])
    torch.testing.assert_close(gx, forward.T @ (2 * forward @ x.detach()))


def mbgcn_reference_scores(model, ds: MultiBehaviorDataset, users: list[int],
                           items: list[int]) -> torch.Tensor:
    """ŷ(u, i) of baselines.md §2.3 without dropout, with per-user / per-item loops over neighbour lists."""
    mats = [m.toarray() for m in ds.matrices()]
    p, q, w = model.user_emb, model.item_emb, model.behavior_weights
    n_t = len(mats)
    graphs = [((m.T @ m) > 0) & ~np.eye(m.shape[1], dtype=bool) for m in mats]

    def item_features(t: int, i: int) -> torch.Tensor:             # X_{t,i} = [Q_i ‖ mean_{j~i} Q_j W^I_t]
        nbrs = np.flatnonzero(graphs[t][i])
        mean = q[nbrs].sum(0) / (len(nbrs) + 1e-8)
        return torch.cat([q[i], mean @ model.item_graph_transforms[t]])

    scores = []
    for u, i in zip(users, items, strict=True):
        counts = torch.tensor([float(m[u].sum()) for m in mats])
        alpha = w * counts / ((w * counts).sum() + 1e-8)
        a = sum(alpha[t] * q[np.flatnonzero(mats[t][u])].sum(0) / (counts[t] + 1e-8) for t in range(n_t))
        b = p[np.flatnonzero(mats[-1][:, i])].sum(0)
        y1 = torch.cat([p[u], a @ model.user_transform]) @ torch.cat([q[i], b @ model.user_transform])
        y2 = 0.0
        for t in range(n_t):
            c = sum((item_features(t, j) for j in np.flatnonzero(mats[t][u])), torch.zeros(2 * q.shape[1]))
            c = c / (counts[t] + 1e-8)
            y2 = y2 + (c @ model.item_score_transforms[t]) @ item_features(t, i)
        scores.append(y1 + model.config.item_score_weight * y2 / n_t)
    return torch.stack(scores)


def test_mbgcn_scores_and_gradients_match_plain_reference():
    ds = nested_dataset(1, n_users=9, n_items=8)
    torch.manual_seed(0)
    model = build_model("mbgcn", ds, {"dim": 4, "pretrain_epochs": 0, "item_score_weight": 0.7})
    with torch.no_grad():
        model.behavior_weights.copy_(torch.tensor([0.5, 1.5, 2.0]))
    model.eval()
    users = [0, 1, 2, 3, 5, 8, 8]
    items = [1, 2, 3, 0, 7, 4, 5]
    weights = torch.randn(len(users))
    params = list(model.parameters())
    user_table, item_table = model.tables()
    u, i = torch.tensor(users), torch.tensor(items)
    fast = (user_table[u] * item_table[i]).sum(-1)
    ref = mbgcn_reference_scores(model, ds, users, items)
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-5)
    assert_close_all(grads((fast * weights).sum(), params), grads((ref * weights).sum(), params),
                     rtol=1e-4, atol=1e-5)
    scores = model.score_users(u)
    torch.testing.assert_close(scores[torch.arange(len(users)), i], ref.detach(), rtol=1e-4, atol=1e-5)


def test_mbgcn_behavior_attention_sums_to_one_per_active_user():
    ds = nested_dataset(2)
    model = build_model("mbgcn", ds, {"dim": 4, "pretrain_epochs": 0})
    with torch.no_grad():
        model.behavior_weights.copy_(torch.tensor([0.2, 3.0, 1.1]))
    alpha = model.behavior_attention().detach()
    active = model.counts.sum(1) > 0
    torch.testing.assert_close(alpha[active].sum(1), torch.ones(int(active.sum())))
    # user 0 only bought: all weight on the target behavior
    torch.testing.assert_close(alpha[0], torch.tensor([0.0, 0.0, 1.0]))


def test_mbgcn_samples_every_target_pair_once_per_epoch():
    ds = nested_dataset(3)
    model = build_model("mbgcn", ds, {"dim": 4, "pretrain_epochs": 0})
    sampler = make_sampler(model.batch_spec, ds, batch_size=7)
    seen, target = [], ds.target_train.toarray() > 0
    for batch in sampler.epoch(np.random.default_rng(0)):
        t = batch.triples["buy"]
        seen += list(zip(t.users.tolist(), t.positives.tolist(), strict=True))
        assert not target[t.users.numpy(), t.negatives.numpy()].any()
    assert sorted(seen) == sorted(zip(*np.nonzero(target), strict=True))


def test_mbgcn_mf_warm_start_is_row_normalised_and_seeded():
    ds = make_synthetic(40, 30, seed=1, mean_views=10)
    tables = []
    for seed in (5, 5, 6):
        torch.manual_seed(seed)
        model = build_model("mbgcn", ds, {"dim": 8, "pretrain_epochs": 3, "pretrain_batch_size": 16})
        tables.append(model.user_emb.detach().clone())
    torch.testing.assert_close(tables[0].norm(dim=1), torch.ones(40))
    torch.testing.assert_close(tables[0], tables[1])
    assert not torch.allclose(tables[0], tables[2])


def test_warm_start_is_skipped_when_weights_will_be_loaded(monkeypatch):
    import mbrec.models.mbgcn as mbgcn_module

    calls = []
    monkeypatch.setattr(mbgcn_module, "fit_in_memory", lambda *a, **k: calls.append(a))
    ds = make_synthetic(40, 30, seed=1, mean_views=10)
    build_model("mbgcn", ds, {"dim": 8, "pretrain_epochs": 3})
    assert len(calls) == 1
    model = build_model("mbgcn", ds, {"dim": 8, "pretrain_epochs": 3}, skip_warm_start=True)
    assert len(calls) == 1 and model.config.pretrain_epochs == 0


def test_mbgcn_loss_is_bpr_plus_l2_of_the_final_features():
    ds = nested_dataset(5)
    model = build_model("mbgcn", ds, {"dim": 4, "pretrain_epochs": 0, "reg": 0.3, "node_dropout": 0.0,
                                      "message_dropout": 0.0})
    batch = next(make_sampler(model.batch_spec, ds, batch_size=9).epoch(np.random.default_rng(0)))
    t = batch.triples["buy"]
    losses = model.losses(batch)
    users, items = model.tables()
    u, p, n = users[t.users], items[t.positives], items[t.negatives]
    margin = (u * p).sum(-1) - (u * n).sum(-1)
    assert losses["bpr"].item() == pytest.approx(mean_bpr(margin), rel=1e-5)
    features = [x[:, :8].pow(2).sum().item() for x in (u, p, n)]           # ũ, ĩ = first 2d columns
    want = 0.3 * (2 * features[0] + features[1] + features[2]) / len(t)
    assert losses["reg/l2"].item() == pytest.approx(want, rel=1e-5)


def test_mbgcn_dropout_acts_in_training_mode_only():
    ds = nested_dataset(4)
    d = 4
    model = build_model("mbgcn", ds, {"dim": d, "pretrain_epochs": 0, "node_dropout": 0.0,
                                      "message_dropout": 0.5})
    torch.manual_seed(0)
    with torch.no_grad():
        users, items = model.tables()
        for table, ego in ((users, model.user_emb), (items, model.item_emb)):
            kept = table[:, :d] != 0                      # message dropout on ũ / ĩ, scaled by 1/(1-0.5)
            torch.testing.assert_close(table[:, :d][kept], 2 * ego[kept])
            assert 0.3 < kept.float().mean() < 0.7
        model.config.message_dropout, model.config.node_dropout = 0.0, 0.5
        first, second = model.tables(), model.tables()
        for a, b in zip(first, second, strict=True):      # node dropout: neighbour messages change
            torch.testing.assert_close(a[:, :d], b[:, :d])
            assert not torch.allclose(a[:, d:2 * d], b[:, d:2 * d])
        model.eval()
        assert_close_all(list(model.tables()), list(model.tables()))


# ============================================================================================== CRGCN
