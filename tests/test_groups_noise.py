"""Sparsity-group metrics (MBSSL Fig. 3) and noise injection (MBSSL Fig. 4)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from mbrec.data.dataset import MultiBehaviorDataset, binary_csr
from mbrec.eval import EvalResult, evaluate
from mbrec.eval.groups import assign_groups, group_labels, group_metrics, plot_groups
from mbrec.eval.noise import inject_noise, relative_drop, uniform_new_cells
from mbrec.models.base import Recommender

DEGREES = [0, 8, 9, 12, 13, 16, 17, 19, 20, 30, 3, 25]


def degree_dataset() -> MultiBehaviorDataset:
    """User u buys items 0..DEGREES[u]-1 (40 items); its test item is item 39."""
    n_users, n_items = len(DEGREES), 40
    rows = np.repeat(np.arange(n_users), DEGREES)
    cols = np.concatenate([np.arange(d) for d in DEGREES])
    shape = (n_users, n_items)
    buy = binary_csr(rows, cols, shape)
    view = binary_csr(rows, (cols + 5) % 39, shape)
    test = binary_csr(np.arange(n_users), np.full(n_users, 39), shape)
    return MultiBehaviorDataset("deg", n_users, n_items, ["view", "buy"], {"view": view, "buy": buy}, test)


# ---------------------------------------------------------------------------------------------- groups
def test_labels_and_assignment():
    assert group_labels() == ["<9", "9-12", "13-16", "17-19", ">=20"]
    assert group_labels((1, 5, 6)) == ["<1", "1-4", "5", ">=6"]
    assert assign_groups(np.array(DEGREES)).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 0, 4]
    for bad in [(), (9, 9), (13, 9), (0, 5)]:
        with pytest.raises(ValueError, match="strictly increasing"):
            group_labels(bad)


def test_group_means_by_hand():
    ds = degree_dataset()
    values = np.arange(len(DEGREES), dtype=np.float64) / 10      # user u has NDCG 0.u
    result = EvalResult(metrics={}, users=np.arange(len(DEGREES)),
                        per_user={"NDCG@50": values, "HR@10": (values > 0.5).astype(float)})
    rows = group_metrics(result, ds, metrics=["NDCG@50"])
    assert [r["group"] for r in rows] == ["<9", "9-12", "13-16", "17-19", ">=20"]
    assert [r["n_users"] for r in rows] == [3, 2, 2, 2, 3]
    expected = [(0.0 + 0.1 + 1.0) / 3, 0.25, 0.45, 0.65, (0.8 + 0.9 + 1.1) / 3]
    assert [r["metrics"]["NDCG@50"] for r in rows] == pytest.approx(expected)
    assert [(r["min_interactions"], r["max_interactions"]) for r in rows] == [
        (0, 8), (9, 12), (13, 16), (17, 19), (20, None)]
    assert set(rows[0]["metrics"]) == {"NDCG@50"}
    assert set(group_metrics(result, ds)[0]["metrics"]) == {"NDCG@50", "HR@10"}


def test_groups_follow_result_users_and_empty_groups_report_none():
    ds = degree_dataset()
    users = np.array([9, 2, 11])                                  # degrees 30, 9, 25
    result = EvalResult(metrics={}, users=users, per_user={"MRR": np.array([0.5, 1.0, 0.25])})
    rows = group_metrics(result, ds)
    assert [r["n_users"] for r in rows] == [0, 1, 0, 0, 2]
    assert rows[0]["metrics"]["MRR"] is None
    assert rows[1]["metrics"]["MRR"] == 1.0
    assert rows[4]["metrics"]["MRR"] == pytest.approx(0.375)
    with pytest.raises(ValueError, match="'NDCG@10' is not in the evaluation"):
        group_metrics(result, ds, metrics=["NDCG@10"])


class RandomScores(Recommender):
    def __init__(self, dataset: MultiBehaviorDataset) -> None:
        super().__init__(dataset)
        self.table = torch.nn.Parameter(torch.randn(dataset.n_users, dataset.n_items))

    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        return self.table[users].detach().clone()


def test_groups_recompose_the_overall_mean():
    ds = degree_dataset()
    torch.manual_seed(0)
    result = evaluate(RandomScores(ds), ds, ks=[5, 20])
    rows = group_metrics(result, ds)
    assert sum(r["n_users"] for r in rows) == len(result.users)
    for name, overall in result.metrics.items():
        recomposed = sum(r["n_users"] * r["metrics"][name] for r in rows if r["n_users"]) / len(result.users)
        assert recomposed == pytest.approx(overall), name


def test_plot_groups_writes_an_image_atomically(tmp_path):
    pytest.importorskip("matplotlib")
    ds = degree_dataset()
    values = np.linspace(0, 1, len(DEGREES))
    rows = group_metrics(EvalResult({}, np.arange(len(DEGREES)), {"NDCG@50": values}), ds)
    one = plot_groups(rows, tmp_path / "groups.png", title="toy")
    assert one.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty_group = group_metrics(EvalResult({}, np.array([9]), {"NDCG@50": np.array([0.3])}), ds)
    two = plot_groups({"A": rows, "B": empty_group}, tmp_path / "compare.svg", metric="NDCG@50")
    assert b"<svg" in two.read_bytes()[:500]
    assert sorted(os.listdir(tmp_path)) == ["compare.svg", "groups.png"]
    with pytest.raises(ValueError, match="groups of 'B' differ"):
        plot_groups({"A": rows, "B": group_metrics(EvalResult({}, np.arange(3), {"NDCG@50": values[:3]}), ds,
                                                   bounds=(5,))}, tmp_path / "bad.png")


# ---------------------------------------------------------------------------------------------- noise
def noise_dataset() -> MultiBehaviorDataset:
    rng = np.random.default_rng(0)
    shape = (60, 50)
    mats = {b: binary_csr(*np.nonzero(rng.random(shape) < p), shape) for b, p in
            (("view", 0.2), ("cart", 0.08), ("buy", 0.04))}
    test = binary_csr(np.arange(60), rng.integers(0, 50, 60), shape)
    return MultiBehaviorDataset("toy", 60, 50, ["view", "cart", "buy"], mats, test)


def test_inject_noise_adds_new_pairs_to_auxiliary_behaviors_only():
    ds = noise_dataset()
    before = {b: ds.train[b].copy() for b in ds.behaviors}
    noisy = inject_noise(ds, 0.3, seed=1)
    for b in ("view", "cart"):
        clean, dirty = before[b], noisy.train[b]
        expected = math.floor(0.3 * clean.nnz)
        assert dirty.nnz - clean.nnz == expected > 0
        assert (dirty.multiply(clean)).nnz == clean.nnz          # every clean pair kept
        assert set(np.unique(dirty.data)) == {1.0}
        assert noisy.meta["noise"]["added"][b] == expected
    assert (noisy.target_train != ds.target_train).nnz == 0
    assert noisy.test is ds.test
    assert noisy.name == "toy-noise0.3"
    for b in ds.behaviors:                                      # the clean dataset is not modified
        assert (ds.train[b] != before[b]).nnz == 0


def test_inject_noise_is_seeded_and_per_behavior():
    ds = noise_dataset()
    a, b = inject_noise(ds, 0.2, seed=3), inject_noise(ds, 0.2, seed=3)
    assert all((a.train[k] != b.train[k]).nnz == 0 for k in ds.behaviors)
    c = inject_noise(ds, 0.2, seed=4)
    assert (a.train["view"] != c.train["view"]).nnz > 0
    only_view = inject_noise(ds, 0.2, seed=3, behaviors=["view"])
    assert (only_view.train["view"] != a.train["view"]).nnz == 0   # independent of the other behaviors
    assert (only_view.train["cart"] != ds.train["cart"]).nnz == 0
    assert (inject_noise(ds, 0.0, seed=0).train["view"] != ds.train["view"]).nnz == 0


def test_noise_count_is_the_exact_floor():
    shape = (20, 20)
    view = binary_csr(np.arange(100) // 20, np.arange(100) % 20, shape)       # exactly 100 pairs
    buy = binary_csr(np.array([0]), np.array([0]), shape)
    ds = MultiBehaviorDataset("hundred", 20, 20, ["view", "buy"], {"view": view, "buy": buy}, buy)
    assert [inject_noise(ds, p, seed=0).train["view"].nnz - 100 for p in (0.29, 0.57, 0.015)] == [29, 57, 1]


def test_inject_noise_rejects_bad_requests():
    ds = noise_dataset()
    with pytest.raises(ValueError, match="target behavior 'buy'"):
        inject_noise(ds, 0.1, seed=0, behaviors=["buy"])
    with pytest.raises(ValueError, match="unknown behavior 'click'"):
        inject_noise(ds, 0.1, seed=0, behaviors=["click"])
    with pytest.raises(ValueError, match=">= 0"):
        inject_noise(ds, -0.1, seed=0)
    with pytest.raises(ValueError, match="free cells"):
        inject_noise(ds, 10.0, seed=0)


def test_new_cells_are_uniform_over_the_free_cells():
    occupied = np.array([0, 3, 4, 9, 10, 17, 22, 28, 29, 2], dtype=np.int64)
    occupied.sort()
    free = np.setdiff1d(np.arange(30), occupied)
    counts = np.zeros(30, dtype=np.int64)
    trials = 2000
    for seed in range(trials):
        cells = uniform_new_cells(occupied, 30, 5, np.random.default_rng(seed))
        assert len(np.unique(cells)) == 5
        counts[cells] += 1
    assert counts[occupied].sum() == 0
    # each of the 20 free cells is chosen with probability 5/20: mean 500, sd about 19
    assert counts[free].min() > 420 and counts[free].max() < 580
    assert len(uniform_new_cells(occupied, 30, 20, np.random.default_rng(0))) == 20  # every free cell


def test_relative_drop():
    clean = {"Recall@10": 0.2, "NDCG@10": 0.1, "HR@50": 0.0, "MRR": 0.3}
    noisy = {"Recall@10": 0.15, "NDCG@10": 0.11, "HR@50": 0.0}
    out = relative_drop(clean, noisy)
    assert set(out) == {"Recall@10", "NDCG@10", "HR@50"}
    assert out["Recall@10"] == pytest.approx(25.0)
    assert out["NDCG@10"] == pytest.approx(-10.0)
    assert math.isnan(out["HR@50"])
    assert relative_drop(clean, noisy, metrics=["NDCG@10"]) == {"NDCG@10": pytest.approx(-10.0)}
