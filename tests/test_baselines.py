"""Multi-behavior baselines MBGCN, CRGCN, MB-CGCN and PKEF (baselines.md §2-5).

Every fast path is checked against a plain reference of the same equations written with dense matrices
and per-node / per-pair loops (outputs and gradients), plus sampler contracts, hand-computed values and a
short training run on synthetic data that must beat random ranking.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from mbrec.config import ConfigError, TrainConfig
from mbrec.data.dataset import MultiBehaviorDataset, binary_csr
from mbrec.data.samplers import BPRSpec, make_sampler
from mbrec.data.synthetic import make_synthetic
from mbrec.eval import evaluate
from mbrec.graph import SparseOperator, normalized_bipartite, spmm
from mbrec.models import build_model
from mbrec.models.copf.heads import PMEHead, project
from mbrec.models.lightgcn import propagate_mean
from mbrec.models.mbgcn import DroppableMatrix, ItemGraph, item_cooccurrence_graph
from mbrec.train.trainer import Trainer

DATA_ROOT = Path("/work/shared/datasets")
BEHAVIORS = ["view", "cart", "buy"]


def nested_dataset(seed: int = 0, n_users: int = 14, n_items: int = 11) -> MultiBehaviorDataset:
    """buy ⊂ cart ⊂ view plus one cart pair outside view; user 0 has no view/cart, item 0 is never used."""
    rng = np.random.default_rng(seed)
    view = rng.random((n_users, n_items)) < 0.45
    view[:, 0] = False
    cart = view & (rng.random(view.shape) < 0.5)
    buy = cart & (rng.random(view.shape) < 0.6)
    view[0], cart[0] = False, False
    buy[0, 1:3] = True
    cart[1, np.flatnonzero(~view[1])[-1]] = True
    for u in range(1, n_users):                      # every user has a buy
        if not buy[u].any():
            i = np.flatnonzero(view[u])[0] if view[u].any() else 1
            view[u, i] = cart[u, i] = buy[u, i] = True
    shape = (n_users, n_items)
    train = {b: binary_csr(*np.nonzero(m), shape) for b, m in zip(BEHAVIORS, (view, cart, buy), strict=True)}
    test_items = rng.integers(1, n_items, size=n_users)
    return MultiBehaviorDataset("nested", n_users, n_items, list(BEHAVIORS), train,
                                binary_csr(np.arange(n_users), test_items, shape))


def dense(mat: sp.spmatrix) -> torch.Tensor:
    return torch.from_numpy(mat.toarray()).float()


def mean_bpr(margin: torch.Tensor) -> float:
    """mean −ln σ(margin) = mean [max(−x, 0) + ln(1 + e^{−|x|})], written out (stable for large |x|)."""
    x = margin.detach().double().numpy()
    return float(np.mean(np.maximum(-x, 0.0) + np.log1p(np.exp(-np.abs(x)))))


def grads(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, params))


def assert_close_all(got: list[torch.Tensor], want: list[torch.Tensor], **tol) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g.float(), w.float(), **tol)


# ============================================================================================== MBGCN
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
def crgcn_reference(model, ds: MultiBehaviorDataset) -> list[torch.Tensor]:
    """Cascade with per-node loops over dense Â_b rows (baselines.md §3.2)."""
    h = torch.cat([model.user_emb, model.item_emb])
    out = []
    for b, mat in enumerate(ds.matrices()):
        a = normalized_bipartite(mat, "symmetric").toarray()
        z = h
        for layer in range(model.config.layers[b]):
            rows = []
            for r in range(a.shape[0]):
                nbrs = np.flatnonzero(a[r])
                msg = (torch.from_numpy(a[r, nbrs]).float().unsqueeze(1) * z[nbrs]).sum(0)
                rows.append(msg + model.biases[b][layer])
            z = torch.stack(rows)
        norm = z.norm(dim=1, keepdim=True).clamp_min(1e-12)
        h = h + z / norm
        out.append(h)
    return out


def test_crgcn_cascade_and_gradients_match_per_node_reference():
    ds = nested_dataset(5)
    torch.manual_seed(1)
    model = build_model("crgcn", ds, {"dim": 4, "layers": [2, 1, 1]})
    with torch.no_grad():
        for bias in model.biases:
            bias.normal_(std=0.1)
    params = list(model.parameters())
    fast, ref = model.behavior_tables(), crgcn_reference(model, ds)
    w = [torch.randn_like(t) for t in fast]
    assert_close_all(fast, ref, rtol=1e-5, atol=1e-6)
    assert_close_all(grads(sum((f * x).sum() for f, x in zip(fast, w, strict=True)), params),
                     grads(sum((f * x).sum() for f, x in zip(ref, w, strict=True)), params),
                     rtol=1e-4, atol=1e-6)


def test_crgcn_each_stage_adds_unit_rows_except_isolated_nodes():
    ds = nested_dataset(6)
    model = build_model("crgcn", ds, {"dim": 8, "layers": [1, 1, 1]})
    with torch.no_grad():
        tables = [torch.cat([model.user_emb, model.item_emb])] + model.behavior_tables()
    for b, mat in enumerate(ds.matrices()):
        degree = np.concatenate([np.diff(mat.indptr), np.diff(mat.tocsc().indptr)])
        norms = (tables[b + 1] - tables[b]).norm(dim=1).numpy()
        np.testing.assert_allclose(norms[degree > 0], 1.0, rtol=1e-5)
        np.testing.assert_array_equal(norms[degree == 0], 0.0)
    assert np.diff(ds.train["view"].indptr)[0] == 0      # user 0 is isolated in view (checked above)


def test_crgcn_sampler_rejects_negatives_against_the_union_of_behaviors():
    ds = nested_dataset(7)
    model = build_model("crgcn", ds, {"dim": 4})
    union = sum(m.toarray() for m in ds.matrices()) > 0
    sampler = make_sampler(model.batch_spec, ds, batch_size=5)
    for batch in sampler.epoch(np.random.default_rng(1)):
        for name, mat in ds.train.items():
            t = batch.triples[name]
            has_items = np.diff(mat.indptr)[batch.users.numpy()] > 0
            assert sorted(t.users.tolist()) == sorted(batch.users.numpy()[has_items].tolist())
            assert mat.toarray()[t.users.numpy(), t.positives.numpy()].all()
            assert not union[t.users.numpy(), t.negatives.numpy()].any()


def test_crgcn_loss_divides_by_batch_users_and_regularises_frobenius_norms():
    ds = nested_dataset(8)
    model = build_model("crgcn", ds, {"dim": 4, "reg": 0.5})
    sampler = make_sampler(model.batch_spec, ds, batch_size=ds.n_users)
    batch = next(sampler.epoch(np.random.default_rng(2)))
    losses = model.losses(batch)
    tables = model.behavior_tables()
    m = ds.n_users
    for name, h in zip(BEHAVIORS, tables, strict=True):
        t = batch.triples[name]
        margin = [(h[u] @ h[m + p] - h[u] @ h[m + n]).item() for u, p, n in
                  zip(t.users.tolist(), t.positives.tolist(), t.negatives.tolist(), strict=True)]
        want = sum(np.log1p(np.exp(-x)) for x in margin) / len(batch.users)
        assert losses[f"bpr/{name}"].item() == pytest.approx(want, rel=1e-5)
    frob = np.linalg.norm(model.user_emb.detach().numpy()) + np.linalg.norm(model.item_emb.detach().numpy())
    assert losses["reg/l2"].item() == pytest.approx(0.5 * frob / ds.n_items, rel=1e-5)
    assert len(batch.triples["view"]) < len(batch.users)   # user 0 has no view: fewer triples than users


def test_baseline_configs_reject_layer_lists_of_the_wrong_length():
    ds = nested_dataset(9)
    for name in ("crgcn", "mbcgcn", "pkef"):
        with pytest.raises(ConfigError, match="one entry per behavior"):
            build_model(name, ds, {"layers": [1, 1]})


# ============================================================================================== MB-CGCN
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


# ============================================================================================== PKEF
def pkef_reference(model, ds: MultiBehaviorDataset) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Parallel and cascade streams with separate dense products and per-row projections (§5.2)."""
    e0 = torch.cat([model.user_emb, model.item_emb])
    fusion = model.config.fusion_weight
    x, parallel, cascade = e0, [], []
    for mat, n_layers in zip(ds.matrices(), model.config.layers, strict=True):
        a = dense(normalized_bipartite(mat, "left"))
        ps, cs = [e0], [x]
        for _ in range(n_layers):
            ps.append(a @ ps[-1] + ps[-1])
            s = a @ cs[-1]
            proj = torch.stack([(p_r @ s_r) / (s_r @ s_r + 1e-12) * s_r
                                for p_r, s_r in zip(ps[-1], s, strict=True)])
            cs.append(s + cs[-1] + fusion * proj)
        x = cs[-1] + x
        parallel.append(sum(ps))
        cascade.append(sum(cs))
    return parallel, cascade


def test_pkef_fused_encoder_and_gradients_match_two_stream_reference():
    ds = nested_dataset(12)
    torch.manual_seed(3)
    model = build_model("pkef", ds, {"dim": 4, "layers": [3, 1, 2]})
    params = [model.user_emb, model.item_emb]
    fast, ref = model.encode(), pkef_reference(model, ds)
    flat_fast, flat_ref = fast[0] + fast[1], ref[0] + ref[1]
    w = [torch.randn_like(t) for t in flat_fast]
    assert_close_all(flat_fast, flat_ref, rtol=1e-5, atol=1e-6)
    assert_close_all(grads(sum((f * x).sum() for f, x in zip(flat_fast, w, strict=True)), params),
                     grads(sum((f * x).sum() for f, x in zip(flat_ref, w, strict=True)), params),
                     rtol=1e-4, atol=1e-5)


def test_pkef_shared_and_unique_parts_reconstruct_the_other_table():
    ds = nested_dataset(13)
    torch.manual_seed(6)
    model = build_model("pkef", ds, {"dim": 4, "layers": [1, 1, 1]})
    with torch.no_grad():
        tables = model.behavior_tables()
        state = model.head.prepare(tables, [1])                              # task cart: slots own, view, buy
    own_u = tables[1][0]
    torch.testing.assert_close(state[1].slots[0][0], own_u)
    for slot, j in ((1, 0), (2, 2)):
        shared = state[1].slots[slot][0]
        unique = 0.01 * (tables[j][0] - project(tables[j][0], own_u))
        torch.testing.assert_close(shared + unique, tables[j][0] / 100)     # PKEF: proj + unique = E_j / 100
        torch.testing.assert_close((unique * own_u).sum(1), torch.zeros(ds.n_users), atol=1e-7, rtol=0)


def test_pkef_unique_pairs_follow_set_differences():
    ds = nested_dataset(14)
    model = build_model("pkef", ds, {"dim": 4})
    # cart ⊄ view (user 1), buy ⊄ view and ⊄ cart (user 0), view ⊄ cart, cart ⊄ buy
    assert set(model.head.unique) == {(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)}
    nested = make_synthetic(40, 30, seed=0, noise_rate=0.0)
    assert set(build_model("pkef", nested, {"dim": 4}).head.unique) == {(0, 1), (0, 2), (1, 2)}


@pytest.mark.slow
@pytest.mark.parametrize("name,expected", [
    ("beibei", {(0, 1), (0, 2), (1, 2)}),
    ("taobao", {(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)}),
])
def test_pkef_unique_pairs_on_the_real_datasets(name, expected):
    folder = DATA_ROOT / name
    if not (folder / "meta.json").exists():
        pytest.skip(f"{folder} not available")
    from mbrec.data.directory import load_directory
    ds = load_directory(folder)
    assert set(PMEHead(ds.matrices(), ds.behaviors).unique) == expected


def test_pkef_unique_sampler_draws_from_the_difference_and_rejects_only_against_it():
    n_users, n_items = 30, 40
    rng = np.random.default_rng(0)
    view = rng.random((n_users, n_items)) < 0.6
    cart = rng.random((n_users, n_items)) < 0.2
    buy = cart & (rng.random(cart.shape) < 0.5)
    buy[:, 0] = cart[:, 0] = True
    shape = (n_users, n_items)
    train = {b: binary_csr(*np.nonzero(m), shape) for b, m in zip(BEHAVIORS, (view, cart, buy), strict=True)}
    ds = MultiBehaviorDataset("u", n_users, n_items, list(BEHAVIORS), train, binary_csr([0], [1], shape))
    model = build_model("pkef", ds, {"dim": 4, "positives": 6})
    drawn = model.head.unique[(1, 2)].sample(torch.arange(n_users), 6)
    users, positives, negatives = (a.numpy() for a in drawn)
    cart_not_buy = cart & ~buy
    np.testing.assert_array_equal(np.bincount(users, minlength=n_users), np.minimum(6, cart_not_buy.sum(1)))
    assert cart_not_buy[users, positives].all()
    assert not cart_not_buy[users, negatives].any()
    assert buy[users, negatives].any()                                     # a bought item may be a negative


def test_pkef_ranking_path_equals_training_path():
    ds = nested_dataset(15)
    torch.manual_seed(4)
    model = build_model("pkef", ds, {"dim": 4, "layers": [2, 1, 1]})
    with torch.no_grad():
        model.head.gate_bias.normal_()
    model.eval()
    users = torch.tensor([0, 3, 7, 13])
    scores = model.score_users(users)
    state = model.head.prepare(model.behavior_tables(), [2])
    pairwise = model.head.pair_scores(state, 2, users.repeat_interleave(ds.n_items),
                                      torch.arange(ds.n_items).repeat(len(users)))
    torch.testing.assert_close(scores, pairwise.reshape(len(users), -1).detach(), rtol=1e-5, atol=1e-4)


def test_pkef_losses_match_hand_formulas():
    ds = nested_dataset(17)
    torch.manual_seed(5)
    model = build_model("pkef", ds, {"dim": 4, "layers": [2, 1, 1], "positives": 3})
    assert model.batch_spec == BPRSpec(behaviors=("cart", "buy"), positives=3, cap_by_degree=True,
                                       negatives_against="same")           # λ_view = 0: no view task
    batch = next(make_sampler(model.batch_spec, ds, batch_size=ds.n_users).epoch(np.random.default_rng(3)))
    torch.manual_seed(9)
    losses = {k: v.item() for k, v in model.losses(batch).items()}
    torch.manual_seed(9)                                                    # the head's draws, in its order
    unique = {pair: table.sample(batch.users, 3) for pair, table in model.head.unique.items() if pair[0] > 0}
    with torch.no_grad():
        parallel, cascade = model.encode()
    m, wg, bg = ds.n_users, model.head.gate_weight.detach(), model.head.gate_bias.detach()

    def pme(k: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        eu, ev = cascade[k][u], cascade[k][m + v]
        slots = [(eu * ev).sum(-1)]
        for j in (0, 1, 2):
            if j != k:
                shared_u, shared_v = 0.01 * project(cascade[j][u], eu), 0.01 * project(cascade[j][m + v], ev)
                slots.append((shared_u * shared_v).sum(-1))
        gate = torch.softmax(torch.cat([eu, ev], 1) @ wg + bg, -1)
        return 300 * (gate * torch.stack(slots, 1)).sum(1)

    def unique_part(j: int, k: int, rows: torch.Tensor) -> torch.Tensor:
        return 0.01 * (cascade[j][rows] - project(cascade[j][rows], cascade[k][rows]))

    assert set(losses) == {"bpr/cart", "bpr/buy", "bpr/cart_parallel", "bpr/buy_parallel", "reg/l2",
                           "bpr/cart_without_view", "bpr/cart_without_buy", "bpr/buy_without_view",
                           "bpr/buy_without_cart"}
    for k, name, weight in ((1, "cart", 2.0), (2, "buy", 1.0)):            # 3 · λ = 3 · 4/6, 3 · 2/6
        t = batch.triples[name]
        assert losses[f"bpr/{name}"] == pytest.approx(
            weight * mean_bpr(pme(k, t.users, t.positives) - pme(k, t.users, t.negatives)), rel=1e-5)
        pu = parallel[k][t.users]
        margin = 300 * (pu * (parallel[k][m + t.positives] - parallel[k][m + t.negatives])).sum(-1)
        assert losses[f"bpr/{name}_parallel"] == pytest.approx(weight * mean_bpr(margin), rel=1e-5)
        for j, other in ((0, "view"), (1, "cart"), (2, "buy")):
            if (k, j) in unique:
                users, pos, neg = unique[(k, j)]
                un_u = unique_part(j, k, users)
                margin = 300 * (un_u * (unique_part(j, k, m + pos) - unique_part(j, k, m + neg))).sum(-1)
                want = weight * mean_bpr(margin)
                assert losses[f"bpr/{name}_without_{other}"] == pytest.approx(want, rel=1e-5)
    l2 = sum(p.pow(2).sum() for p in (model.user_emb, model.item_emb, model.head.gate_weight))
    assert losses["reg/l2"] == pytest.approx(0.01 * l2.item(), rel=1e-6)


# ============================================================================================== training
@pytest.mark.parametrize("name,params,train", [
    ("mbgcn", {"dim": 16, "pretrain_epochs": 5}, {"epochs": 8, "lr": 1e-2, "batch_size": 256}),
    ("crgcn", {"dim": 16}, {"epochs": 8, "lr": 1e-2, "batch_size": 32}),
    ("mbcgcn", {"dim": 16, "layers": [1, 2, 2], "init_std": 0.1},
     {"epochs": 15, "lr": 1e-2, "batch_size": 32}),
    ("pkef", {"dim": 16, "layers": [2, 1, 1]}, {"epochs": 8, "lr": 1e-2, "batch_size": 32}),
])
def test_short_training_run_beats_random_ranking(tmp_path, name, params, train):
    """HR@10 well above random ranking, and training improves the ranking of the untrained model (graph
    propagation alone already ranks viewed items high, so beating random is not enough)."""
    ds = make_synthetic(100, 150, seed=3, mean_views=15)
    torch.manual_seed(0)
    model = build_model(name, ds, params)
    before = evaluate(model, ds, ks=[10]).metrics
    cfg = TrainConfig(eval_every=train["epochs"], protocol="paper", progress=False, ks=[10], **train)
    fit = Trainer(model, ds, cfg, tmp_path, log=lambda m: None).fit()
    after = evaluate(model, ds, ks=[10]).metrics
    candidates = ds.n_items - np.diff(ds.target_train.indptr).mean()
    assert after["HR@10"] > 2.5 * 10 / candidates, (name, after)
    assert after["MRR"] > 1.15 * before["MRR"], (name, before, after)
    assert np.isfinite(sum(fit.history[-1]["loss"].values()))
