"""Swing similarity, false-negative sets and their disk cache (mbssl.md §3)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from mbrec.data.dataset import binary_csr
from mbrec.data.registry import default_data_root
from mbrec.models.mbssl import swing
from mbrec.models.mbssl.swing import (
    false_negative_sets,
    mean_swing_similarity,
    ragged_arange,
    swing_false_negatives,
    swing_similarity,
)


def beibei_folder() -> Path | None:
    """The Beibei dataset under the data root ($MBREC_DATA_ROOT, else ../shared/datasets), or None."""
    root = default_data_root()
    return root / "beibei" if root is not None and (root / "beibei" / "meta.json").is_file() else None


def brute_force_swing(mat: sp.csr_matrix, alpha: float) -> np.ndarray:
    """Double loop over row pairs, sum over unordered pairs of distinct shared columns (§3.1)."""
    dense = mat.toarray() > 0
    n_rows = dense.shape[0]
    out = np.zeros((n_rows, n_rows))
    for s, t in itertools.permutations(range(n_rows), 2):
        shared = np.flatnonzero(dense[s] & dense[t])
        for a, b in itertools.combinations(shared, 2):
            out[s, t] += 1.0 / (alpha + np.sum(dense[:, a] & dense[:, b]))
    return out


def random_graph(seed: int, n_users: int = 24, n_items: int = 18, density: float = 0.3) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    rows, cols = np.nonzero(rng.random((n_users, n_items)) < density)
    return binary_csr(rows, cols, (n_users, n_items))


def test_ragged_arange():
    out = ragged_arange(np.array([5, 0, 10]), np.array([2, 0, 3]))
    assert out.tolist() == [5, 6, 10, 11, 12]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("blocks", [{}, {"max_wedges": 5, "max_keys": 40}])
def test_swing_equals_brute_force_both_sides(seed, blocks):
    graph = random_graph(seed)
    for alpha in (0.5, 2.0):
        users = swing_similarity(graph, alpha, **blocks)
        items = swing_similarity(graph.T, alpha, **blocks)
        np.testing.assert_allclose(users.toarray(), brute_force_swing(graph, alpha), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(items.toarray(), brute_force_swing(graph.T.tocsr(), alpha), rtol=1e-12,
                                   atol=1e-12)
        assert users.diagonal().sum() == 0 and (users != users.T).nnz == 0


def test_swing_hand_computed():
    # users 0, 1 buy {0, 1, 2}; user 2 buys {0, 1}. Item pairs: (0,1) shared by 3 users, (0,2), (1,2) by 2.
    graph = binary_csr(np.array([0, 0, 0, 1, 1, 1, 2, 2]), np.array([0, 1, 2, 0, 1, 2, 0, 1]), (3, 3))
    users = swing_similarity(graph, 0.5).toarray()
    assert users[0, 1] == pytest.approx(1 / 3.5 + 2 / 2.5)
    assert users[0, 2] == pytest.approx(1 / 3.5) and users[1, 2] == pytest.approx(1 / 3.5)
    # user pairs: (0,1) share 3 items, (0,2) and (1,2) share 2
    items = swing_similarity(graph.T, 0.5).toarray()
    assert items[0, 1] == pytest.approx(1 / 3.5 + 2 / 2.5)
    assert items[0, 2] == pytest.approx(1 / 3.5) and items[1, 2] == pytest.approx(1 / 3.5)


def test_mean_swing_is_average_of_graphs():
    graphs = [random_graph(3), random_graph(4)]
    mean = mean_swing_similarity(graphs, "item", 0.5).toarray()
    expected = (brute_force_swing(graphs[0].T.tocsr(), 0.5) + brute_force_swing(graphs[1].T.tocsr(), 0.5)) / 2
    np.testing.assert_allclose(mean, expected, rtol=1e-12, atol=1e-12)


def fn_of(sets, row):
    return sorted(sets.indices[sets.indptr[row]:sets.indptr[row + 1]].tolist())


def test_false_negative_rule():
    sim = np.array([
        [0, 5, 4, 3, 2, 1, 0],   # 5 nonzeros, N=3: t = 3 -> {1, 2}
        [5, 0, 2, 2, 2, 0, 0],   # tie at the 3rd value: t = 2 -> {0}, the tied ones stay
        [4, 2, 0, 0, 0, 0, 0],   # 2 nonzeros < N: t = 0 -> all of them
        [0, 0, 0, 0, 0, 0, 0],   # empty row
        [2, 2, 2, 2, 0, 0, 0],   # all tied: t = 2 -> nothing
        [1, 0, 0, 0, 0, 0, 9],   # 2 nonzeros -> both
        [0, 0, 0, 0, 0, 9, 0],
    ], dtype=float)
    sets = false_negative_sets(sp.csr_matrix(sim), 3, max_cells=8)
    assert [fn_of(sets, r) for r in range(7)] == [[1, 2], [0], [0, 1], [], [], [0, 6], [5]]
    assert all(r not in fn_of(sets, r) for r in range(7))        # the diagonal is never removed
    ones = false_negative_sets(sp.csr_matrix(sim), 1)              # N = 1: t = the largest value
    assert [fn_of(ones, r) for r in range(7)] == [[], [], [], [], [], [], []]


def test_false_negative_rule_matches_sorted_rows():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 40):
        dense = rng.integers(0, 4, size=(30, 30)).astype(float) * (rng.random((30, 30)) < 0.4)
        np.fill_diagonal(dense, 0.0)
        sets = false_negative_sets(sp.csr_matrix(dense), n, max_cells=50)
        for row in range(30):
            ordered = np.sort(dense[row])[::-1]
            threshold = ordered[n - 1] if n <= len(ordered) else 0.0
            assert fn_of(sets, row) == np.flatnonzero(dense[row] > threshold).tolist()
        positions, members = sets.select(np.array([3, 3, 7]))
        expected = [(j, m) for j, r in enumerate([3, 3, 7]) for m in fn_of(sets, r)]
        assert list(zip(positions.tolist(), members.tolist(), strict=True)) == expected


def test_cache_hit_and_key(tmp_path, monkeypatch):
    graph = random_graph(5)
    first = swing_false_negatives([graph], "user", 3, 0.5, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("swing_fn_user_*.npz"))) == 1
    assert not list(tmp_path.glob("*.tmp"))                        # written atomically

    def fail(*args, **kwargs):
        raise AssertionError("similarity recomputed although cached")

    monkeypatch.setattr(swing, "mean_swing_similarity", fail)
    again = swing_false_negatives([graph], "user", 3, 0.5, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.indptr, first.indptr)
    np.testing.assert_array_equal(again.indices, first.indices)
    other = random_graph(6)
    for args in [([other], "user", 3, 0.5), ([graph], "item", 3, 0.5), ([graph], "user", 4, 0.5),
                 ([graph], "user", 3, 1.0), ([graph, other], "user", 3, 0.5)]:
        with pytest.raises(AssertionError, match="recomputed"):
            swing_false_negatives(*args, cache_dir=tmp_path)


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("MBREC_CACHE_DIR", str(tmp_path / "env"))
    sets = swing_false_negatives([random_graph(7)], "item", 2)
    stored = list((tmp_path / "env").glob("swing_fn_item_*.npz"))
    assert len(stored) == 1
    expected = false_negative_sets(swing_similarity(random_graph(7).T, 0.5), 2)
    np.testing.assert_array_equal(sets.indices, expected.indices)


@pytest.mark.slow
def test_swing_on_beibei_buy_graph():
    """The shipped item file's size and the FN sizes of mbssl.md §3 (speed: ``benchmarks/bench_swing.py``)."""
    from mbrec.data.directory import load_directory

    folder = beibei_folder()
    if folder is None:
        pytest.skip("the Beibei dataset is not under the data root")
    buy = load_directory(folder).target_train
    items = swing_similarity(buy.T, 0.5)
    users = swing_similarity(buy, 0.5)
    item_fn = false_negative_sets(items, 10)
    user_fn = false_negative_sets(users, 10)
    assert items.nnz == 447_670
    assert 5.0 < item_fn.counts().mean() < 6.0 and 6.8 < user_fn.counts().mean() < 7.6   # mbssl.md §3.2
