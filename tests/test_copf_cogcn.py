"""COGCN (copf.md §3): graph construction, the cascade and its pre/in/post-behavior switches.

References are written from the definitions with dense numpy/torch matrices (float64), independent of
mbrec.graph and of the cascade's recursive implementation.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbrec.data.dataset import MultiBehaviorDataset, binary_csr
from mbrec.models import build_model
from mbrec.models.copf.cogcn import GraphBank, cogcn_propagate, encoder_graphs, graph_members, split_tables

M, N, K, D = 40, 30, 3, 8


def tiny_matrices(seed: int = 0) -> list[np.ndarray]:
    """Dense 0/1 behavior matrices, nested-ish (buy mostly ⊂ cart ⊂ view) with isolated nodes.

    User M-1 and item N-1 have no interaction at all; users 0..4 have no buy.
    """
    rng = np.random.default_rng(seed)
    view = rng.random((M, N)) < 0.3
    cart = view & (rng.random((M, N)) < 0.5) | (rng.random((M, N)) < 0.03)
    buy = cart & (rng.random((M, N)) < 0.5) | (rng.random((M, N)) < 0.02)
    mats = [view, cart, buy]
    for m in mats:
        m[M - 1, :] = False
        m[:, N - 1] = False
    buy[:5] = False
    for u in range(5, M - 1):                       # every other user buys something
        if not buy[u].any():
            buy[u, u % (N - 1)] = True
    return [m.astype(np.float64) for m in mats]


def tiny_dataset(seed: int = 0) -> MultiBehaviorDataset:
    mats = tiny_matrices(seed)
    names = ["view", "cart", "buy"]
    train = {b: binary_csr(*np.nonzero(m), (M, N)) for b, m in zip(names, mats, strict=True)}
    test = binary_csr(np.arange(5, M - 1), np.zeros(M - 6, dtype=np.int64), (M, N))
    return MultiBehaviorDataset("tiny", M, N, names, train, test)


def dense_left_bipartite(weights: np.ndarray) -> np.ndarray:
    """D⁻¹ [[0, W], [Wᵀ, 0]] with zero rows for isolated nodes."""
    adj = np.block([[np.zeros((M, M)), weights], [weights.T, np.zeros((N, N))]])
    deg = adj.sum(1, keepdims=True)
    return np.divide(adj, deg, out=np.zeros_like(adj), where=deg > 0)


def reference_graphs(mats, scope: str, adjacency: str) -> tuple[list[np.ndarray], list[float]]:
    """Encoder graphs from §3.1/§3.2/§3.3: Â_{≤k} (upstream), Â_{≤K} (all) or Â_k (own)."""
    members = {"upstream": lambda k: range(k + 1), "all": lambda k: range(K), "own": lambda k: [k]}[scope]
    graphs, scales = [], []
    for k in range(K):
        ks = list(members(k))
        if adjacency == "code":
            graphs.append(dense_left_bipartite(sum(mats[i] for i in ks)))
            scales.append(1.0)
        else:
            graphs.append(sum(dense_left_bipartite(mats[i]) for i in ks))
            scales.append(float(len(ks)))
    return graphs, scales


def reference_cogcn(ego: torch.Tensor, graphs, scales, layers, pre: str) -> list[torch.Tensor]:
    """§3.3 by definition: behavior k's input is E⁰ (+ last layers of all upstream | of the previous one)."""
    last_layers, outputs = [], []
    for k in range(K):
        if pre == "cumulative":
            x = ego + sum(last_layers, torch.zeros_like(ego))
        elif pre == "strict":
            x = ego + (last_layers[-1] if last_layers else torch.zeros_like(ego))
        else:
            x = ego
        h = [x]
        graph = torch.from_numpy(graphs[k])
        for _ in range(layers[k]):
            h.append(graph @ h[-1] + scales[k] * h[-1])
        outputs.append(sum(h))
        last_layers.append(h[-1])
    return outputs


def as_double(ops):
    """Cast operators to float64 in place (their float32 values are kept exactly) and return them."""
    for op in ops:
        op.matrix = op.matrix.double()
        op.transpose = op.transpose.double()
    return ops


@pytest.fixture(scope="module")
def mats():
    return tiny_matrices()


@pytest.fixture(scope="module")
def bank(mats):
    bank = GraphBank([binary_csr(*np.nonzero(m), (M, N)) for m in mats])
    for scope in ("upstream", "all", "own"):
        for adjacency in ("code", "paper_sum"):
            encoder_graphs(bank, scope, adjacency)
    as_double(bank.operators())
    return bank


def test_cumulative_graph_weights_are_behavior_counts(mats, bank):
    counts = mats[0] + mats[1] + mats[2]
    assert counts.max() == 3                                    # some pair has all three behaviors
    graph = bank.combined((0, 1, 2)).scipy.toarray().astype(np.float64)
    np.testing.assert_allclose(graph, dense_left_bipartite(counts), rtol=1e-6, atol=1e-7)
    u, v = np.argwhere(counts == 3)[0]
    assert graph[u, M + v] == pytest.approx(3.0 / counts[u].sum(), rel=1e-6)
    rows = graph.sum(1)
    isolated = np.r_[counts.sum(1), counts.sum(0)] == 0
    assert isolated[M - 1] and isolated[M + N - 1]
    np.testing.assert_allclose(rows[~isolated], 1.0, rtol=1e-6)
    np.testing.assert_array_equal(rows[isolated], 0.0)


def test_behavior_graphs_are_own_left_normalised(mats, bank):
    for k in range(K):
        graph = bank.behavior(k).scipy.toarray()
        np.testing.assert_allclose(graph, dense_left_bipartite(mats[k]), rtol=1e-6, atol=1e-7)
        assert np.all(np.diag(graph) == 0)                      # no self-loops inside Â_k
    buy_rows = bank.behavior(2).scipy.toarray().sum(1)
    np.testing.assert_array_equal(buy_rows[:5], 0.0)            # users without buys: zero rows


@pytest.mark.parametrize("scope", ["upstream", "all", "own"])
@pytest.mark.parametrize("adjacency", ["code", "paper_sum"])
def test_encoder_graphs_follow_the_in_behavior_switch(mats, bank, scope, adjacency):
    ops, scales = encoder_graphs(bank, scope, adjacency)
    ref, ref_scales = reference_graphs(mats, scope, adjacency)
    assert scales == ref_scales
    for op, expected in zip(ops, ref, strict=True):
        np.testing.assert_allclose(op.scipy.toarray(), expected, rtol=1e-6, atol=1e-7)
    if scope == "all":
        assert ops[0] is ops[1] is ops[2]                       # one matrix, built once
    if scope == "own":
        assert all(ops[k] is bank.behavior(k) for k in range(K))


def test_graph_members():
    assert graph_members(1, 3, "upstream") == (0, 1)
    assert graph_members(1, 3, "all") == (0, 1, 2)
    assert graph_members(1, 3, "own") == (1,)


def test_cascade_equals_eq6_closed_form(bank):
    """L = 1: X^{k+1,0} = E⁰ + Σ_{k'≤k} X^{k',1} and e^{k,*} = X^{k,0} + X^{k,1} (Eqs. 6-7)."""
    ops, scales = encoder_graphs(bank, "upstream", "code")
    ego = torch.randn(M + N, D, dtype=torch.float64)
    dense = [torch.from_numpy(op.scipy.toarray()).double() for op in ops]
    inputs, first_layers = [ego], []
    for k in range(K):
        first_layers.append(dense[k] @ inputs[k] + inputs[k])
        inputs.append(ego + sum(first_layers))
    expected = [inputs[k] + first_layers[k] for k in range(K)]
    got = cogcn_propagate(ego, ops, scales, [1, 1, 1], "cumulative")
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("pre", ["cumulative", "strict", "none"])
@pytest.mark.parametrize("scope", ["upstream", "all", "own"])
@pytest.mark.parametrize("adjacency", ["code", "paper_sum"])
def test_cascade_switches_match_definitions(mats, bank, pre, scope, adjacency):
    layers = [2, 1, 3]
    ops, scales = encoder_graphs(bank, scope, adjacency)
    # the graphs per k are checked against their definitions above; use their float32 values here
    ref_graphs = [op.scipy.toarray().astype(np.float64) for op in ops]
    ego = torch.randn(M + N, D, dtype=torch.float64)
    got = cogcn_propagate(ego, ops, scales, layers, pre)
    expected = reference_cogcn(ego, ref_graphs, reference_graphs(mats, scope, adjacency)[1], layers, pre)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


def test_pre_none_gives_parallel_encoders_and_identical_tables_with_all_graph(bank):
    ego = torch.randn(M + N, D, dtype=torch.float64)
    ops, scales = encoder_graphs(bank, "all", "code")
    outs = cogcn_propagate(ego, ops, scales, [1, 1, 1], "none")          # COPF-F: identical tables
    torch.testing.assert_close(outs[0], outs[2])
    ops, scales = encoder_graphs(bank, "upstream", "code")
    outs = cogcn_propagate(ego, ops, scales, [1, 1, 1], "none")
    assert not torch.allclose(outs[0], outs[2])


def test_post_merged_shares_the_sum(bank):
    ego = torch.randn(M + N, D, dtype=torch.float64)
    ops, scales = encoder_graphs(bank, "upstream", "code")
    stacked = cogcn_propagate(ego, ops, scales, [1, 1, 1], "cumulative")
    merged = split_tables(stacked, M, "merged")
    decoupled = split_tables(stacked, M, "decoupled")
    total = stacked[0] + stacked[1] + stacked[2]
    for users, items in merged:
        torch.testing.assert_close(users, total[:M])
        torch.testing.assert_close(items, total[M:])
    torch.testing.assert_close(decoupled[1][1], stacked[1][M:])


def test_unknown_switches_raise(bank):
    ops, scales = encoder_graphs(bank)
    with pytest.raises(ValueError, match="pre-behavior"):
        cogcn_propagate(torch.zeros(M + N, D, dtype=torch.float64), ops, scales, [1, 1, 1], "sideways")
    with pytest.raises(ValueError, match="graph scope"):
        encoder_graphs(bank, "downstream")


def test_model_encoder_values_and_gradients_match_reference():
    """The model's encoder in float64: tables and d(loss)/dE equal the dense reference's.

    The reference uses the model's own (float32-valued) graphs, checked against the definitions above.
    """
    ds = tiny_dataset()
    model = build_model("copf", ds, {"dim": D, "cogcn_layers": [2, 1, 1]}).double()
    weights = torch.randn(M + N, D, dtype=torch.float64)
    tables = model.encode()
    got = sum(((torch.cat([u, v]) * weights) ** 2).sum() for u, v in tables)
    grads = torch.autograd.grad(got, [model.user_emb, model.item_emb])
    ego = torch.cat([model.user_emb, model.item_emb])
    graphs = [op.scipy.toarray().astype(np.float64) for op in model.encoder_ops]
    expected_tables = reference_cogcn(ego, graphs, model.residual, [2, 1, 1], "cumulative")
    expected = sum(((t * weights) ** 2).sum() for t in expected_tables)
    ref_grads = torch.autograd.grad(expected, [model.user_emb, model.item_emb])
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)
