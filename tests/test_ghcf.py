"""GHCF / EHCF: label lists, edge dropout, the whole-data loss against brute force, shapes, a short run."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from mbrec.config import ConfigError, TrainConfig
from mbrec.data.dataset import MultiBehaviorDataset, binary_csr
from mbrec.data.samplers import Batch, UserSampler
from mbrec.eval import evaluate
from mbrec.graph import normalized_bipartite, spmm
from mbrec.models import build_model
from mbrec.models.ghcf import EdgeDropoutGraph, LabelLists, capped_label_lists
from mbrec.train.trainer import Trainer

BEHAVIORS = ("view", "cart", "buy")


def clustered_dataset(n_users: int = 60, n_items: int = 40, clusters: int = 4,
                      seed: int = 0) -> MultiBehaviorDataset:
    """Users and items in ``clusters`` groups; buy ⊂ cart ⊂ view, mostly inside the user's group.

    One held-out buy per user, drawn from the user's group outside its training buys.
    """
    rng = np.random.default_rng(seed)
    same = (np.arange(n_users)[:, None] % clusters) == (np.arange(n_items)[None, :] % clusters)
    affinity = np.where(same, 0.6, 0.04)
    viewed = rng.random((n_users, n_items)) < affinity
    carted = viewed & (rng.random(viewed.shape) < np.where(same, 0.6, 0.2))
    bought = carted & (rng.random(viewed.shape) < 0.5)
    test_rows, test_cols = [], []
    for u in range(n_users):
        candidates = np.flatnonzero(same[u] & ~bought[u])
        item = rng.choice(candidates)
        test_rows.append(u)
        test_cols.append(item)
        if not bought[u].any():                      # every user buys at least one item in training
            bought[u, rng.choice(np.flatnonzero(same[u] & (np.arange(n_items) != item)))] = True
    carted |= bought
    viewed = viewed | carted
    shape = (n_users, n_items)
    train = {b: binary_csr(*np.nonzero(m), shape) for b, m in zip(BEHAVIORS, (viewed, carted, bought),
                                                                      strict=True)}
    return MultiBehaviorDataset("clustered", n_users, n_items, list(BEHAVIORS), train,
                                binary_csr(np.array(test_rows), np.array(test_cols), shape))


@pytest.fixture(scope="module")
def dataset() -> MultiBehaviorDataset:
    return clustered_dataset()


# ---------------------------------------------------------------------------------------------- labels
def test_capped_label_lists_cut_rows_at_the_quantile_length():
    dense = np.zeros((5, 6), dtype=bool)
    dense[0, [1, 2, 4]] = True       # length 3
    dense[1, [5]] = True             # length 1
    dense[3, [0, 3]] = True          # length 2 ; row 2 and 4 empty
    mat = binary_csr(*np.nonzero(dense), dense.shape)
    # 3 non-empty rows, sorted lengths [1, 2, 3]: rank floor(q * 3) (1-based, at least 1)
    half = capped_label_lists(mat, 0.5).toarray()          # rank 1 -> cap 1: first item of each row
    expected = np.zeros_like(dense)
    expected[0, 1] = expected[1, 5] = expected[3, 0] = True
    np.testing.assert_array_equal(half > 0, expected)
    high = capped_label_lists(mat, 0.9999).toarray()       # rank 2 -> cap 2
    expected[0, 2] = expected[3, 3] = True
    np.testing.assert_array_equal(high > 0, expected)
    np.testing.assert_array_equal(capped_label_lists(mat, None).toarray() > 0, dense)


def test_label_lists_pairs_are_the_rows_of_the_batch_users(dataset):
    mat = dataset.train["cart"]
    lists = LabelLists(mat, "cpu")
    users = torch.tensor([5, 0, 17, 5, 33])
    rows, items = lists.pairs(users)
    got = sorted(zip(rows.tolist(), items.tolist(), strict=True))
    expected = sorted((r, int(i)) for r, u in enumerate(users.tolist()) for i in mat[u].indices)
    assert got == expected


# ---------------------------------------------------------------------------------------------- edge dropout
def test_edge_dropout_graph_transpose_and_gradient_match_the_dropped_matrix(dataset):
    graph = EdgeDropoutGraph(dataset.train["cart"], "cpu")
    assert graph.sample(0.0) is graph.op
    torch.manual_seed(0)
    dropped = graph.sample(0.5)
    dense = dropped.matrix.to_dense()
    np.testing.assert_array_equal(dropped.transpose.to_dense().numpy(), dense.T.numpy())
    base = torch.from_numpy(normalized_bipartite(dataset.train["cart"], "symmetric").toarray())
    kept = dense != 0
    torch.testing.assert_close(dense[kept], base[kept] * 2.0)                    # 1 / keep rescale
    assert not torch.equal(dense, dense.T)                                        # entries drop independently
    assert 0.35 < kept.sum().item() / (base != 0).sum().item() < 0.65
    x = torch.randn(dense.shape[1], 3, requires_grad=True)
    upstream = torch.randn(dense.shape[0], 3)
    (grad,) = torch.autograd.grad((spmm(dropped, x) * upstream).sum(), x)
    torch.testing.assert_close(grad, dense.T @ upstream)


# ---------------------------------------------------------------------------------------------- loss
def brute_force_rec(user_rows: torch.Tensor, item_table: torch.Tensor, vectors: torch.Tensor,
                    labels: list[np.ndarray], loss_weights: list[float], neg_weights: list[float]):
    """Σ_k λ_k [Σ_{u∈B} Σ_i c_ui (y_ui - ŷ_ui)² - |P_k|], c = 1 on positives, w_k elsewhere."""
    total = user_rows.new_zeros(())
    for k, (lam, w) in enumerate(zip(loss_weights, neg_weights, strict=True)):
        y = torch.zeros(user_rows.shape[0], item_table.shape[0], dtype=user_rows.dtype)
        y[:, : labels[k].shape[1]] = torch.from_numpy(labels[k].astype(np.float64)).to(y.dtype)
        scores = (user_rows * vectors[k]) @ item_table.T
        c = torch.where(y > 0, torch.ones_like(y), torch.full_like(y, w))
        total = total + lam * ((c * (y - scores) ** 2).sum() - y.sum())
    return total


def first_items(mat: sp.csr_matrix, users: np.ndarray, cap: int | None) -> np.ndarray:
    """Dense 0/1 rows of ``users`` keeping each row's ``cap`` smallest item ids."""
    out = np.zeros((len(users), mat.shape[1]))
    for r, u in enumerate(users):
        items = np.sort(mat[u].indices)
        out[r, items[:cap]] = 1.0
    return out


def test_ghcf_loss_equals_brute_force_values_and_gradients(dataset):
    view = dataset.train["view"].tolil()
    view[3, :] = 1.0                                        # user 3: the one longest view list
    dataset = MultiBehaviorDataset("long", dataset.n_users, dataset.n_items, list(BEHAVIORS),
                                   {**dataset.train, "view": view.tocsr()}, dataset.test)
    lam, neg = [0.2, 0.5, 0.3], [0.1, 0.3, 0.05]
    model = build_model("ghcf", dataset, {"dim": 8, "layers": 2, "loss_weights": lam, "neg_weights": neg,
                                          "decay": 0.5})
    model.eval()                                            # no dropout: deterministic forward
    users = torch.tensor([3, 8, 11, 20, 41, 59])
    losses = model.losses(Batch(users))
    assert set(losses) == {"rec", "reg/l2"}
    table, vectors = model.propagate()
    user_rows, items = table[users], table[dataset.n_users:]
    labels = []
    for b in BEHAVIORS:
        lengths = np.sort(np.diff(dataset.train[b].indptr))
        lengths = lengths[lengths > 0]
        cap = int(lengths[len(lengths) - 2])                # floor(0.9999 n) = n - 1 for n < 10,000
        labels.append(first_items(dataset.train[b], users.numpy(), cap))
    assert labels[0][0].sum() < dataset.n_items             # the 99.99 % cap cuts user 3's list
    reference = brute_force_rec(user_rows, items, vectors, labels, lam, neg)
    torch.testing.assert_close(losses["rec"], reference, rtol=1e-4, atol=1e-5)
    l2 = 0.5 * 0.5 * (user_rows.pow(2).sum() + items.pow(2).sum())
    torch.testing.assert_close(losses["reg/l2"], l2)
    params = list(model.parameters())
    fast = torch.autograd.grad(losses["rec"], params)
    slow = torch.autograd.grad(reference, params)
    for f, s in zip(fast, slow, strict=True):
        torch.testing.assert_close(f, s, rtol=1e-4, atol=1e-6)


def test_ehcf_loss_equals_brute_force_in_float64_with_the_pad_row(dataset):
    model = build_model("ehcf", dataset, {"dim": 8, "init_std": 0.3}).double()
    model.eval()
    with torch.no_grad():
        model.item_emb[-1].normal_()                        # a non-zero PAD row must enter the Gram term
    users = torch.tensor([0, 4, 9, 30, 57])
    losses = model.losses(Batch(users))
    vectors = model.behavior_vectors()
    labels = [first_items(dataset.train[b], users.numpy(), None) for b in BEHAVIORS]
    cfg = model.config
    reference = brute_force_rec(model.user_emb[users], model.item_emb, vectors, labels,
                                cfg.loss_weights, cfg.neg_weights)
    torch.testing.assert_close(losses["rec"], reference)
    params = list(model.parameters())
    for f, s in zip(torch.autograd.grad(losses["rec"], params), torch.autograd.grad(reference, params),
                    strict=True):
        torch.testing.assert_close(f, s)
    reg = 0.5 * cfg.reg * sum(w.pow(2).sum() for w in model.transfer_weights)
    torch.testing.assert_close(losses["reg/l2"], reg)


def test_ehcf_behavior_vectors_follow_the_transfer_equations(dataset):
    model = build_model("ehcf", dataset, {"dim": 8})
    h = model.behavior_vectors()
    w, b = model.transfer_weights, model.transfer_biases      # pairs (view,cart), (view,buy), (cart,buy)
    assert model.transfer_pairs == [(0, 1), (0, 2), (1, 2)]
    view = model.base_vector
    cart = w[0] @ view + b[0]
    buy = w[1] @ view + b[1] + w[2] @ cart + b[2]
    torch.testing.assert_close(h, torch.stack([view, cart, buy]))


def test_ehcf_user_dropout_only_in_training(dataset):
    model = build_model("ehcf", dataset, {"dim": 8})
    batch = Batch(torch.arange(10))
    model.eval()
    first, second = model.losses(batch)["rec"], model.losses(batch)["rec"]
    assert torch.equal(first, second)
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model.losses(batch)["rec"], first)


# ---------------------------------------------------------------------------------------------- structure
def test_shapes_and_scores_of_both_models(dataset):
    users = torch.tensor([1, 2, 7])
    ghcf = build_model("ghcf", dataset, {"dim": 8, "layers": 3})
    table, vectors = ghcf.propagate()
    assert table.shape == (dataset.n_users + dataset.n_items, 8) and vectors.shape == (3, 8)
    assert len(ghcf.gc_weights) == len(ghcf.rel_weights) == 3
    ghcf.eval()
    scores = ghcf.score_users(users)
    assert scores.shape == (3, dataset.n_items)
    table, vectors = ghcf.propagate()
    torch.testing.assert_close(scores, (table[users] * vectors[-1]) @ table[dataset.n_users:].T)
    ehcf = build_model("ehcf", dataset, {"dim": 8})
    assert ehcf.item_emb.shape == (dataset.n_items + 1, 8)
    ehcf.eval()
    scores = ehcf.score_users(users)
    assert scores.shape == (3, dataset.n_items)
    expected = (ehcf.user_emb[users] * ehcf.behavior_vectors()[-1]) @ ehcf.item_emb[:-1].T
    torch.testing.assert_close(scores, expected)


def test_batches_are_target_users_with_the_last_partial_batch_dropped(dataset):
    model = build_model("ghcf", dataset, {"dim": 8})
    sampler = UserSampler(model.batch_spec, dataset, batch_size=16)
    batches = list(sampler.epoch(np.random.default_rng(0)))
    assert len(batches) == dataset.n_users // 16 and all(len(b.users) == 16 for b in batches)


def test_zero_view_weight_removes_view_from_loss_and_propagation(dataset):
    """Released GHCF on Beibei (λ_view = 0): the view graph changes nothing; with uniform π it does."""
    rng = np.random.default_rng(5)
    shape = (dataset.n_users, dataset.n_items)
    other_view = binary_csr(*np.nonzero(rng.random(shape) < 0.5), shape)
    other = MultiBehaviorDataset("other", *shape, list(BEHAVIORS), {**dataset.train, "view": other_view},
                                 dataset.test)
    batch = Batch(torch.arange(12))
    for prop, view_used in (("loss_lambda", False), ("uniform", True)):
        values = []
        for ds in (dataset, other):
            torch.manual_seed(0)
            model = build_model("ghcf", ds, {"dim": 8, "layers": 2, "loss_weights": [0.0, 0.7, 0.3],
                                             "prop_weights": prop})
            model.eval()
            values.append(model.losses(batch)["rec"])
        assert torch.equal(values[0], values[1]) is not view_used
        (grad,) = torch.autograd.grad(values[1], [model.relations])
        assert bool(grad[0].abs().sum() > 0) is view_used         # the view relation vector r_view
        assert grad[1:].abs().sum() > 0


def test_config_lists_need_one_value_per_behavior(dataset):
    with pytest.raises(ConfigError, match="loss_weights"):
        build_model("ghcf", dataset, {"loss_weights": [0.5, 0.5]})
    with pytest.raises(ConfigError, match="neg_weights"):
        build_model("ehcf", dataset, {"neg_weights": [0.1]})
    with pytest.raises(ConfigError, match="edge_dropout"):
        build_model("ghcf", dataset, {"edge_dropout": 1.0})


# ---------------------------------------------------------------------------------------------- training
@pytest.mark.parametrize(("name", "params", "lr"), [
    ("ghcf", {"dim": 16, "layers": 2, "decay": 0.01, "loss_weights": [0.2, 0.5, 0.3]}, 0.01),
    ("ehcf", {"dim": 16}, 0.01),
])
def test_short_run_beats_random_ranking(dataset, tmp_path, name, params, lr):
    torch.manual_seed(0)
    model = build_model(name, dataset, params)
    cfg = TrainConfig(epochs=30, batch_size=16, lr=lr, eval_every=30, protocol="paper", progress=False,
                      ks=[10])
    Trainer(model, dataset, cfg, tmp_path, log=lambda m: None).fit()
    hr = evaluate(model, dataset, ks=[10]).metrics["HR@10"]
    candidates = dataset.n_items - np.diff(dataset.target_train.indptr).mean()
    assert hr > 2.0 * 10 / candidates
