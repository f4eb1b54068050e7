"""PKEF: fused encoder against two streams, projections, unique pairs and sampler, losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from baseline_helpers import BEHAVIORS, DATA_ROOT, assert_close_all, dense, grads, mean_bpr, nested_dataset

from mbrec.data.dataset import MultiBehaviorDataset, binary_csr
from mbrec.data.samplers import BPRSpec, make_sampler
from mbrec.data.synthetic import make_synthetic
from mbrec.graph import normalized_bipartite
from mbrec.models import build_model
from mbrec.models.copf.heads import PMEHead, project


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
