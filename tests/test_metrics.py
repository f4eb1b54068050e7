"""Evaluation: hand-computed metric values, masking rules, and a slow per-user reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from mbrec.data.dataset import MultiBehaviorDataset, binary_csr
from mbrec.eval import evaluate, exact_ranks, ranking_metrics
from mbrec.models.base import Recommender


class FixedScores(Recommender):
    """A 'model' that returns a fixed ``[M, N]`` score table (one dummy parameter for the device)."""

    def __init__(self, dataset: MultiBehaviorDataset, scores: np.ndarray) -> None:
        super().__init__(dataset)
        self.table = torch.as_tensor(scores, dtype=torch.float32)
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        return self.table[users].clone()


def pairs(shape: tuple[int, int], items_per_user: dict[int, list[int]]) -> sp.csr_matrix:
    rows = [u for u, items in items_per_user.items() for _ in items]
    cols = [i for items in items_per_user.values() for i in items]
    return binary_csr(np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64), shape)


def dataset(n_users: int, n_items: int, buy: dict, test: dict, view: dict | None = None,
            valid: dict | None = None) -> MultiBehaviorDataset:
    shape = (n_users, n_items)
    return MultiBehaviorDataset(
        "hand", n_users, n_items, ["view", "buy"],
        {"view": pairs(shape, view or {}), "buy": pairs(shape, buy)},
        pairs(shape, test), pairs(shape, valid) if valid is not None else None)


def descending_by_id(n_users: int, n_items: int) -> np.ndarray:
    """Scores n_items-1, ..., 0: item 0 is the best, so the unmasked rank of item i is i."""
    return np.tile(np.arange(n_items, 0, -1, dtype=np.float32), (n_users, 1))


def log2(x: float) -> float:
    return math.log2(x)


# ---------------------------------------------------------------------------------------------- by hand
def test_single_test_item_at_rank_three():
    ds = dataset(1, 10, buy={}, test={0: [3]})
    m = evaluate(FixedScores(ds, descending_by_id(1, 10)), ds, ks=[3, 5]).metrics
    assert m["HR@5"] == 1.0 and m["Recall@5"] == 1.0
    assert m["NDCG@5"] == pytest.approx(1 / log2(5))
    assert m["Precision@5"] == pytest.approx(0.2)
    assert m["MRR"] == pytest.approx(1 / 4)
    assert m["HR@3"] == 0.0 and m["NDCG@3"] == 0.0 and m["Precision@3"] == 0.0


def test_training_items_are_masked():
    # item 1 outranks the test item 3 but is a training buy of the user: rank 3 -> 2
    ds = dataset(1, 10, buy={0: [1]}, test={0: [3]})
    m = evaluate(FixedScores(ds, descending_by_id(1, 10)), ds, ks=[3]).metrics
    assert m["HR@3"] == 1.0
    assert m["NDCG@3"] == pytest.approx(1 / log2(4))
    assert m["MRR"] == pytest.approx(1 / 3)


def test_several_test_items_standard_idcg():
    ds = dataset(2, 12, buy={}, test={0: [2, 5, 7], 1: [0, 1, 4]})
    res = evaluate(FixedScores(ds, descending_by_id(2, 12)), ds, ks=[2, 5, 10])
    pu = {k: v.tolist() for k, v in res.per_user.items()}
    idcg3 = 1 + 1 / log2(3) + 1 / log2(4)
    # user 0: ranks 2, 5, 7
    assert pu["HR@5"][0] == 1.0
    assert pu["Recall@5"][0] == pytest.approx(1 / 3)
    assert pu["Precision@5"][0] == pytest.approx(1 / 5)
    assert pu["NDCG@5"][0] == pytest.approx((1 / log2(4)) / idcg3)
    assert pu["Recall@10"][0] == 1.0
    assert pu["Precision@10"][0] == pytest.approx(3 / 10)
    assert pu["NDCG@10"][0] == pytest.approx((1 / log2(4) + 1 / log2(7) + 1 / log2(9)) / idcg3)
    assert pu["MRR"][0] == pytest.approx(1 / 3)
    assert pu["HR@2"][0] == 0.0
    # user 1: ranks 0, 1, 4; IDCG@2 uses min(|T|, K) = 2 ideal hits, so NDCG@2 = 1
    assert pu["NDCG@2"][1] == pytest.approx(1.0)
    assert pu["Recall@2"][1] == pytest.approx(2 / 3)
    assert pu["NDCG@5"][1] == pytest.approx((1 + 1 / log2(3) + 1 / log2(6)) / idcg3)
    assert pu["MRR"][1] == 1.0
    assert res.metrics["MRR"] == pytest.approx((1 / 3 + 1) / 2)


def test_ties_are_broken_by_smaller_item_id():
    # all scores equal: rank = unmasked candidates with a smaller id; items 1 and 4 are masked
    ds = dataset(1, 10, buy={0: [1, 4]}, test={0: [6]})
    m = evaluate(FixedScores(ds, np.zeros((1, 10))), ds, ks=[5]).metrics
    assert m["MRR"] == pytest.approx(1 / 5)
    assert m["NDCG@5"] == pytest.approx(1 / log2(6))
    # a tie group above: items 0..2 score 2, test item 5 scores 1 like items 3..9 -> rank 3 + 2 = 5
    scores = np.ones((1, 10))
    scores[0, :3] = 2
    ds = dataset(1, 10, buy={}, test={0: [5]})
    assert evaluate(FixedScores(ds, scores), ds, ks=[5]).metrics["MRR"] == pytest.approx(1 / 6)


def test_held_out_items_are_never_masked():
    # the test item 3 is also a training buy and a view (a data quirk): it must still be ranked,
    # while the other viewed item 0 is masked through mask_behaviors
    ds = dataset(1, 10, buy={0: [3, 1]}, test={0: [3]}, view={0: [0, 3]})
    model = FixedScores(ds, descending_by_id(1, 10))
    assert evaluate(model, ds, ks=[5]).metrics["MRR"] == pytest.approx(1 / 3)  # item 1 masked
    assert evaluate(model, ds, ks=[5], mask_behaviors=["view"]).metrics["MRR"] == pytest.approx(1 / 2)


def test_mask_behaviors_masks_auxiliary_training_items():
    ds = dataset(1, 10, buy={}, test={0: [5]}, view={0: [0, 2, 7]})
    model = FixedScores(ds, descending_by_id(1, 10))
    assert evaluate(model, ds, ks=[5]).metrics["MRR"] == pytest.approx(1 / 6)
    assert evaluate(model, ds, ks=[5], mask_behaviors=["view"]).metrics["MRR"] == pytest.approx(1 / 4)


def test_validation_and_test_items_mask_each_other():
    ds = dataset(1, 10, buy={}, test={0: [5]}, valid={0: [2]})
    model = FixedScores(ds, descending_by_id(1, 10))
    assert evaluate(model, ds, split="test", ks=[5]).metrics["MRR"] == pytest.approx(1 / 5)
    assert evaluate(model, ds, split="valid", ks=[5]).metrics["MRR"] == pytest.approx(1 / 3)


def test_nan_scores_rank_last_never_first():
    ds = dataset(2, 10, buy={0: [0]}, test={0: [3], 1: [4]})
    scores = descending_by_id(2, 10)
    scores[0, 3] = np.nan          # user 0: the test item itself is NaN -> behind every real score
    scores[1, :2] = np.nan         # user 1: NaN candidates do not outrank anything
    res = evaluate(FixedScores(ds, scores), ds, ks=[5, 8])
    assert res.per_user["HR@5"].tolist() == [0.0, 1.0]
    assert res.per_user["MRR"][1] == pytest.approx(1 / 3)   # items 2, 3 above; NaN items 0, 1 below
    assert res.per_user["HR@8"][0] == 0.0                   # 8 real candidates above it: rank 8
    assert res.per_user["MRR"][0] == pytest.approx(1 / 9)


def test_exact_ranks_and_metrics_on_tensors():
    scores = torch.tensor([[0.5, 0.9, 0.1, 0.9], [1.0, float("-inf"), 0.0, 2.0]])
    rows = torch.tensor([0, 0, 1])
    items = torch.tensor([3, 2, 2])
    assert exact_ranks(scores, rows, items).tolist() == [1, 3, 2]
    out = ranking_metrics(torch.tensor([1, 3, 2]), rows, 2, [2])
    assert out["HR@2"].tolist() == [1.0, 0.0]
    assert out["Recall@2"].tolist() == [0.5, 0.0]
    assert out["NDCG@2"][0].item() == pytest.approx((1 / log2(3)) / (1 + 1 / log2(3)))


@pytest.mark.parametrize("layout", ["one_per_row", "several_per_row"])
def test_numpy_and_torch_rank_paths_equal_a_sort(layout):
    from mbrec.eval.evaluator import _ranks_numpy, _ranks_torch

    g = torch.Generator().manual_seed(1)
    scores = torch.round(torch.rand(30, 25, generator=g) * 4) / 4          # coarse values: many ties
    scores[4] = 0.5                                                         # a row that is all one tie
    scores[7, 3] = float("-inf")
    if layout == "one_per_row":
        rows = torch.arange(30)
        items = torch.randint(0, 25, (30,), generator=g)
    else:
        rows = torch.randint(0, 30, (80,), generator=g)
        items = torch.randint(0, 25, (80,), generator=g)
    expected = [sorted(range(25), key=lambda i, r=r: (-float(scores[r, i]), i)).index(int(t))
                for r, t in zip(rows, items, strict=True)]
    assert _ranks_torch(scores, rows, items).tolist() == expected
    assert _ranks_numpy(scores.numpy(), rows.numpy(), items.numpy()).tolist() == expected
    assert exact_ranks(scores, rows, items).tolist() == expected


def test_a_model_returning_its_cached_table_is_not_modified():
    ds = dataset(3, 6, buy={0: [1], 1: [2, 3], 2: []}, test={0: [0], 1: [5], 2: [4]})

    class Cached(FixedScores):
        def score_users(self, users):
            return self.table[: len(users)]          # a view of the model's own tensor

    model = Cached(ds, np.arange(18, dtype=np.float32).reshape(3, 6))
    before = model.table.clone()
    first = evaluate(model, ds, ks=[2], batch_size=3).metrics
    assert torch.equal(model.table, before)
    assert evaluate(model, ds, ks=[2], batch_size=3).metrics == first


# ---------------------------------------------------------------------------------------------- reference
def reference_metrics(scores: np.ndarray, mask: list[set[int]], held_out: list[list[int]],
                      ks: list[int]) -> dict[str, list[float]]:
    """Plain Python: sort the unmasked candidates by (-score, id) and read off each held-out item."""
    out: dict[str, list[float]] = {}
    for u, targets in enumerate(held_out):
        candidates = [i for i in range(scores.shape[1]) if i not in mask[u] or i in targets]
        order = sorted(candidates, key=lambda i: (-float(scores[u, i]), i))
        position = {item: r for r, item in enumerate(order)}
        ranks = sorted(position[t] for t in targets)
        for k in ks:
            hits = [r for r in ranks if r < k]
            ideal = sum(1 / math.log2(j + 2) for j in range(min(len(targets), k)))
            out.setdefault(f"HR@{k}", []).append(float(bool(hits)))
            out.setdefault(f"Recall@{k}", []).append(len(hits) / len(targets))
            out.setdefault(f"Precision@{k}", []).append(len(hits) / k)
            out.setdefault(f"NDCG@{k}", []).append(sum(1 / math.log2(r + 2) for r in hits) / ideal)
        out.setdefault("MRR", []).append(1 / (ranks[0] + 1))
    return out


@pytest.mark.parametrize("mask_behaviors", [(), ("view",)])
def test_evaluator_matches_slow_reference(mask_behaviors):
    rng = np.random.default_rng(0)
    n_users, n_items = 50, 40
    view = rng.random((n_users, n_items)) < 0.2
    buy = rng.random((n_users, n_items)) < 0.1
    test = (rng.random((n_users, n_items)) < 0.08) & ~buy
    test[rng.random(n_users) < 0.2] = False      # some users have no test item at all
    test[3] = False
    test[3, [0, 1, 2, 5]] = True                 # one user with several test items, one also viewed
    view[3, 5] = True
    shape = (n_users, n_items)
    ds = MultiBehaviorDataset("ref", n_users, n_items, ["view", "buy"],
                              {"view": binary_csr(*np.nonzero(view), shape),
                               "buy": binary_csr(*np.nonzero(buy), shape)},
                              binary_csr(*np.nonzero(test), shape))
    scores = np.round(rng.random(shape), 1)       # coarse values: many ties
    ks = [1, 3, 5, 10, 20]
    res = evaluate(FixedScores(ds, scores), ds, ks=ks, batch_size=7, mask_behaviors=mask_behaviors)

    users = [u for u in range(n_users) if test[u].any()]
    np.testing.assert_array_equal(res.users, users)
    masked = [set(np.flatnonzero(buy[u] | (view[u] if mask_behaviors else False))) for u in users]
    ref = reference_metrics(scores[users], masked, [list(np.flatnonzero(test[u])) for u in users], ks)
    assert set(res.per_user) == set(ref)
    for name, values in ref.items():
        np.testing.assert_allclose(res.per_user[name], values, rtol=1e-12, err_msg=name)
        assert res.metrics[name] == pytest.approx(np.mean(values))
