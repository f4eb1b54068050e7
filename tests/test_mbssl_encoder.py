"""MBSSL behavior-aware encoder (mbssl.md §2): graphs, attention, dropout, pooling, views."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from mbrec.data.dataset import binary_csr
from mbrec.graph import SparseOperator, normalized_bipartite
from mbrec.models.mbssl.encoder import (
    BehaviorAwareEncoder,
    cross_behavior_attention,
    mix_behaviors,
)

M, N, K, D = 40, 30, 3, 8


def random_graphs(seed: int, densities=(0.3, 0.15, 0.08)) -> list[sp.csr_matrix]:
    rng = np.random.default_rng(seed)
    out = []
    for p in densities:
        mask = rng.random((M, N)) < p
        mask[0] = False                            # an isolated user
        mask[:, 0] = False                         # an isolated item
        rows, cols = np.nonzero(mask)
        out.append(binary_csr(rows, cols, (M, N)))
    return out


def operators(mats) -> list[SparseOperator]:
    return [SparseOperator(normalized_bipartite(m, "symmetric"), symmetric=True) for m in mats]


def test_symmetric_normalisation():
    mat = random_graphs(0)[1]
    adj = normalized_bipartite(mat, "symmetric").toarray()
    np.testing.assert_allclose(adj, adj.T)
    deg_u, deg_i = np.asarray(mat.sum(1)).ravel(), np.asarray(mat.sum(0)).ravel()
    for u, i in zip(*mat.nonzero(), strict=True):
        assert adj[u, M + i] == pytest.approx(1 / np.sqrt(deg_u[u] * deg_i[i]))
    assert np.count_nonzero(adj) == 2 * mat.nnz                    # no self-loops, nothing else
    assert not adj[0].any() and not adj[M].any()                   # isolated user 0 and item 0


def test_attention_matches_per_node_loop():
    torch.manual_seed(0)
    z = torch.randn(K, 7, D, dtype=torch.float64)
    proj = torch.randn(K, D, 4, dtype=torch.float64)
    score = torch.randn(K, 4, 1, dtype=torch.float64)
    out = cross_behavior_attention(z, proj, score)
    for node in range(7):
        for k in range(K):                                         # Eqs. 3-4 for output behavior k
            logits = torch.stack([(torch.tanh(z[j, node] @ proj[k]) @ score[k]).squeeze() for j in range(K)])
            weights = torch.softmax(logits, dim=0)
            expected = sum(weights[j] * z[j, node] for j in range(K))
            torch.testing.assert_close(out[k, node], expected)


def reference_encode(enc: BehaviorAwareEncoder, dense_graphs_per_layer, pool_terms: int):
    """Plain per-layer loop with dense matrices (eval mode: no dropout)."""
    ego = torch.cat([enc.user_emb, enc.item_emb])
    relation = [enc.behavior_emb]
    for weight in enc.relation_weights:
        relation.append(relation[-1] @ weight)
    hidden = [ego] * K
    layers = [torch.stack(hidden)]
    for layer in range(pool_terms - 1):
        z = torch.stack([F.leaky_relu((dense_graphs_per_layer[layer][k] @ hidden[k]) * relation[layer][k]
                                      @ enc.propagation_weights[layer], 0.01) for k in range(K)])
        hidden = list(cross_behavior_attention(z, enc.attention_proj, enc.attention_score) if enc.cdm else z)
        layers.append(torch.stack(hidden))
    nodes = torch.stack(layers).mean(0).permute(1, 0, 2)             # [n, K, d]
    return nodes, torch.stack(relation[:pool_terms]).mean(0)


@pytest.mark.parametrize("pool", ["code", "paper"])
@pytest.mark.parametrize("cdm", [True, False])
def test_encoder_matches_dense_reference_with_views(pool, cdm):
    torch.manual_seed(0)
    mats = random_graphs(1)
    graphs = operators(mats)
    view_mats = [random_graphs(2 + layer)[2] for layer in range(3)]   # a "walk" view: one graph per layer
    view = operators(view_mats)
    enc = BehaviorAwareEncoder(M, N, K, dim=D, layers=3, attention_dim=4, dropout=0.3, pool=pool, cdm=cdm)
    enc.eval()
    out = enc(graphs, [view])
    assert [t.shape for t in out.nodes] == [(M + N, K, D)] * 2 and out.behaviors.shape == (K, D)
    dense = [torch.from_numpy(g.scipy.toarray()) for g in graphs]
    terms = 4 if pool == "code" else 3
    main, h = reference_encode(enc, [dense] * 3, terms)
    torch.testing.assert_close(out.nodes[0], main, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.behaviors, h)
    per_layer = [[*dense[:2], torch.from_numpy(v.scipy.toarray())] for v in view]
    viewed, _ = reference_encode(enc, per_layer, terms)
    torch.testing.assert_close(out.nodes[1], viewed, rtol=1e-5, atol=1e-6)
    assert out.nodes[0][:, 0].is_contiguous()


def test_a_loss_on_one_pass_back_propagates_through_that_pass_only(monkeypatch):
    """HMG takes one backward per task: a task on pass 0 must not run the view passes' backward products."""
    spmm_module = importlib.import_module("mbrec.graph.spmm")
    torch.manual_seed(0)
    graphs = operators(random_graphs(7))
    view = operators([random_graphs(8 + layer)[2] for layer in range(2)])
    enc = BehaviorAwareEncoder(M, N, K, dim=D, layers=2, attention_dim=4).train()
    out = enc(graphs, [view])
    used: list[int] = []
    original = spmm_module.csr_product

    def recording(matrix, x):
        used.append(id(matrix))
        return original(matrix, x)

    monkeypatch.setattr(spmm_module, "csr_product", recording)
    view_ids = {id(op.transpose) for op in view}
    main_ids = {id(graphs[-1].transpose)}
    (grad_main,) = torch.autograd.grad(out.nodes[0].square().sum(), enc.user_emb, retain_graph=True)
    assert used and main_ids <= set(used) and not view_ids & set(used)
    used.clear()
    torch.autograd.grad(out.nodes[1].square().sum(), enc.user_emb)
    assert view_ids <= set(used) and not main_ids & set(used)
    assert grad_main.abs().sum() > 0


def test_without_cdm_each_slice_depends_only_on_its_graph():
    torch.manual_seed(0)
    enc = BehaviorAwareEncoder(M, N, K, dim=D, layers=2, attention_dim=4, cdm=False).eval()
    base = random_graphs(3)
    before = enc(operators(base)).nodes[0]
    changed = list(base)
    changed[1] = random_graphs(4)[1]
    after = enc(operators(changed)).nodes[0]
    torch.testing.assert_close(after[:, [0, 2]], before[:, [0, 2]])
    assert not torch.allclose(after[:, 1], before[:, 1])
    with_cdm = BehaviorAwareEncoder(M, N, K, dim=D, layers=2, attention_dim=4, cdm=True).eval()
    mixed = with_cdm(operators(changed)).nodes[0] - with_cdm(operators(base)).nodes[0]
    assert mixed[:, 0].abs().max() > 0                             # with CDM the graphs mix


def test_dropout_only_in_training():
    torch.manual_seed(0)
    graphs = operators(random_graphs(5))
    enc = BehaviorAwareEncoder(M, N, K, dim=D, layers=2, attention_dim=4, dropout=0.3)
    enc.eval()
    torch.testing.assert_close(enc(graphs).nodes[0], enc(graphs).nodes[0])
    enc.train()
    assert not torch.allclose(enc(graphs).nodes[0], enc(graphs).nodes[0])


def test_parameter_shapes_and_init_bounds():
    enc = BehaviorAwareEncoder(M, N, K, dim=D, layers=2, attention_dim=4)
    assert enc.attention_proj.shape == (K, D, 4) and enc.attention_score.shape == (K, 4, 1)
    assert len(enc.propagation_weights) == 2 and len(enc.relation_weights) == 2
    bound = np.sqrt(6 / (D * 4 + K * 4))                            # torch fan rules for a 3-D tensor
    assert enc.attention_proj.abs().max().item() <= bound
    assert enc.user_emb.abs().max().item() <= np.sqrt(6 / (M + D))
    with pytest.raises(ValueError, match="graphs"):
        enc(operators(random_graphs(0))[:2])


def test_behavior_mix_values_and_gradients():
    torch.manual_seed(0)
    weights = torch.softmax(torch.randn(K, 9, K, dtype=torch.float64), 0).requires_grad_()
    z = torch.randn(K, 9, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(mix_behaviors, (weights, z))
    torch.testing.assert_close(mix_behaviors(weights, z), torch.einsum("jmk,jmd->kmd", weights, z))
