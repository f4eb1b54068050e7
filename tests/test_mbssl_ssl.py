"""MBSSL InfoNCE (false-negative modes, unique anchors) and target-graph augmentations (mbssl.md §4)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from mbrec.data.dataset import binary_csr
from mbrec.models.mbssl.ssl import (
    Anchors,
    draw_target_view,
    drop_edges,
    drop_nodes,
    info_nce_terms,
    node_contrast,
)
from mbrec.models.mbssl.swing import FalseNegatives


def toy_false_negatives(n_nodes: int, seed: int) -> FalseNegatives:
    """Random FN sets that never contain the node itself."""
    rng = np.random.default_rng(seed)
    rows = []
    for node in range(n_nodes):
        others = np.setdiff1d(np.arange(n_nodes), [node])
        rows.append(np.sort(rng.choice(others, size=rng.integers(0, 4), replace=False)))
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])])
    return FalseNegatives(indptr.astype(np.int64), np.concatenate(rows).astype(np.int64))


def test_info_nce_hand_computed():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    candidates = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 0.0]], dtype=torch.float64)   # last: PAD-like
    tau = 0.5
    terms = info_nce_terms(anchors, candidates, torch.tensor([0, 1]), tau, fn_mode="none")
    c = 1 / math.sqrt(2)
    first = -1 / tau + math.log(math.exp(1 / tau) + math.exp(c / tau) + 1.0)
    second = -c / tau + math.log(1.0 + math.exp(c / tau) + 1.0)
    assert terms.tolist() == pytest.approx([first, second], rel=1e-12)
    # FN (anchor 0, candidate 1): zero_logit replaces exp(c/τ) by 1, remove drops it
    fn = (torch.tensor([0]), torch.tensor([1]))
    zero = info_nce_terms(anchors, candidates, torch.tensor([0, 1]), tau, *fn, fn_mode="zero_logit")
    removed = info_nce_terms(anchors, candidates, torch.tensor([0, 1]), tau, *fn, fn_mode="remove")
    assert zero[0].item() == pytest.approx(-1 / tau + math.log(math.exp(1 / tau) + 2.0), rel=1e-12)
    assert removed[0].item() == pytest.approx(-1 / tau + math.log(math.exp(1 / tau) + 1.0), rel=1e-12)
    assert zero[1].item() == pytest.approx(second) and removed[1].item() == pytest.approx(second)


def test_info_nce_dot_similarity_hand_computed():
    """The paper's φ (Eqs. 7-9): raw inner products over τ, no normalisation; a zero anchor gives log C."""
    anchors = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    candidates = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    tau = 0.5
    terms = info_nce_terms(anchors, candidates, torch.tensor([0, 1]), tau, fn_mode="none", similarity="dot")
    first = -2 / tau + math.log(math.exp(2 / tau) + math.exp(1 / tau) + 1.0)
    second = -2 / tau + math.log(1.0 + math.exp(2 / tau) + 1.0)
    assert terms.tolist() == pytest.approx([first, second], rel=1e-12)
    cosine = info_nce_terms(anchors, candidates, torch.tensor([0, 1]), tau, fn_mode="none")
    assert not torch.allclose(terms, cosine)
    with pytest.raises(ValueError, match="similarity"):
        info_nce_terms(anchors, candidates, torch.tensor([0, 1]), tau, similarity="l2")


def test_fn_modes_differ_by_the_false_negative_count():
    torch.manual_seed(0)
    n, d, tau = 30, 6, 0.3
    table_a, table_b = torch.randn(n, d, dtype=torch.float64), torch.randn(n, d, dtype=torch.float64)
    fn = toy_false_negatives(n, 1)
    anchors = Anchors.from_occurrences(np.arange(n), fn, "cpu")
    args = (table_a[anchors.nodes], table_b, anchors.nodes, tau, anchors.fn_rows, anchors.fn_cols)
    zero, removed, none = (info_nce_terms(*args, fn_mode=m) for m in ("zero_logit", "remove", "none"))
    positive = torch.nn.functional.cosine_similarity(table_a, table_b) / tau
    # log-sum-exp identity: Σ_zero = Σ_remove + |F| (each false negative contributes exp(0) = 1)
    counts = torch.from_numpy(fn.counts()).double()
    torch.testing.assert_close(torch.exp(zero + positive) - torch.exp(removed + positive), counts)
    unmasked = info_nce_terms(table_a[anchors.nodes], table_b, anchors.nodes, tau, fn_mode="none")
    torch.testing.assert_close(none, unmasked)                                   # none = no masking
    assert (counts > 0).any() and not torch.allclose(zero, none)


@pytest.mark.parametrize("similarity", ["cosine", "dot"])
@pytest.mark.parametrize("tau", [0.4, 0.01])       # constant shift 1/τ, and the row-maximum shift (2/τ >= 80)
def test_unique_anchor_sum_equals_repeated_anchor_sum(tau, similarity):
    """The fused, unique-anchor node_contrast equals one plain autograd term per occurrence (values and
    gradients), for every false-negative mode and both similarities, with an all-zero PAD candidate row."""
    torch.manual_seed(1)
    n, d = 25, 5
    anchor_table = torch.randn(n, d, dtype=torch.float64, requires_grad=True)
    candidate_table = torch.cat([torch.randn(n, d, dtype=torch.float64), torch.zeros(1, d, dtype=torch.float64)])
    candidate_table.requires_grad_()
    fn = toy_false_negatives(n, 2)
    occurrences = np.random.default_rng(3).integers(0, n, size=60)            # repeated anchors
    for mode in ("zero_logit", "remove", "none"):
        anchors = Anchors.from_occurrences(occurrences, fn, "cpu")
        fast = node_contrast(anchor_table, candidate_table, anchors, tau, mode, similarity)
        grads_fast = torch.autograd.grad(fast, [anchor_table, candidate_table])
        slow = anchor_table.new_zeros(())
        for node in occurrences:                                             # one term per occurrence
            members = torch.from_numpy(fn.indices[fn.indptr[node]:fn.indptr[node + 1]])
            slow = slow + info_nce_terms(anchor_table[[node]], candidate_table, torch.tensor([node]), tau,
                                         torch.zeros(len(members), dtype=torch.long), members, mode,
                                         similarity)[0]
        grads_slow = torch.autograd.grad(slow, [anchor_table, candidate_table])
        torch.testing.assert_close(fast, slow)
        for g_fast, g_slow in zip(grads_fast, grads_slow, strict=True):
            torch.testing.assert_close(g_fast, g_slow)
    assert anchors.multiplicity.sum().item() == len(occurrences)


def test_zero_rows_normalise_to_zero():
    anchors = torch.zeros(1, 3)
    candidates = torch.randn(4, 3)
    terms = info_nce_terms(anchors, candidates, torch.tensor([2]), 0.2, fn_mode="none")
    assert terms.item() == pytest.approx(math.log(4.0))


def toy_interactions(seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    rows, cols = np.nonzero(rng.random((40, 30)) < 0.2)
    return binary_csr(rows, cols, (40, 30))


def test_node_dropout_removes_whole_nodes():
    graph = toy_interactions()
    view = drop_nodes(graph, 0.5, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)            # the same draws: 20 of 40 users, 15 of 30 items
    dropped_users = torch.randperm(40, generator=gen)[:20].numpy()
    dropped_items = torch.randperm(30, generator=gen)[:15].numpy()
    expected = graph.toarray()
    expected[dropped_users] = 0
    expected[:, dropped_items] = 0
    np.testing.assert_array_equal(view.toarray(), expected)    # all their edges go, every other edge stays
    assert 0 < view.nnz < graph.nnz


def test_edge_dropout_keeps_a_uniform_subset():
    graph = toy_interactions(1)
    torch.manual_seed(0)
    view = drop_edges(graph, 0.5)
    assert view.nnz == int(0.5 * graph.nnz)
    assert np.all(view.toarray() <= graph.toarray())
    assert drop_edges(graph, 0.3).nnz == int(0.7 * graph.nnz)


def test_views_per_layer():
    graph = toy_interactions(2)
    torch.manual_seed(0)
    walk = draw_target_view(graph, "walk", 0.5, 3, "cpu")
    node = draw_target_view(graph, "node", 0.5, 3, "cpu")
    assert len(walk) == 3 and len(node) == 3
    assert node[0] is node[1] is node[2]
    assert (walk[0].scipy != walk[1].scipy).nnz > 0                              # one draw per layer
    for op in (*walk, node[0]):
        mat = op.scipy
        assert op.symmetric and abs(mat - mat.T).max() < 1e-7
        assert mat.shape == (70, 70)
    with pytest.raises(ValueError, match="augmentation"):
        draw_target_view(graph, "bogus", 0.5, 3, "cpu")


def test_weighted_infonce_rejects_other_false_negative_fills():
    from mbrec.losses.infonce import weighted_infonce

    with pytest.raises(ValueError, match="fn_fill must be 0.0 or -inf"):
        weighted_infonce(torch.randn(2, 3), torch.randn(4, 3), torch.tensor([0, 1]), torch.ones(2), 1.0,
                         torch.tensor([0]), torch.tensor([2]), fn_fill=1.0)
