r"""MBSSL's behavior-aware graph encoder with cross-behavior attention (Eqs. 1–5, as released).

Node tables stack users first (``n = M + N`` rows). With per-behavior graphs
:math:`\hat A_k = D_k^{-1/2} A_k D_k^{-1/2}` (no self-loops), ego embeddings
:math:`H^{(0)}_{:,k} = [E_U; E_I]` for every behavior k and behavior vectors :math:`r_k^{(0)}`,
every layer :math:`l = 0..L-1` computes

.. math::
    Z_k &= \mathrm{LeakyReLU}_{0.01}\big(((\hat A_k H^{(l)}_{:,k}) \odot r_k^{(l)})\, W_{gc}^{(l)}\big)
    \qquad\text{(propagation, } [n, d])\\
    s_k(v, j) &= \tanh(Z_j(v)\, W_{1,k})\, W_{2,k}, \quad
    a_k(v) = \mathrm{softmax}_j\, s_k(v, \cdot), \quad
    H^{(l+1)}_{v,k} = \mathrm{dropout}\Big(\sum_j a_k(v)_j\, Z_j(v)\Big)\\
    r_k^{(l+1)} &= r_k^{(l)}\, W_{rel}^{(l)}

(``cdm=False`` replaces the attention by :math:`H^{(l+1)}_{:,k} = \mathrm{dropout}(Z_k)`: "w/o CDM").
Pooling ``code``: :math:`E = \frac{1}{L+1}\sum_{l=0}^{L} H^{(l)}`, :math:`h_k = \frac{1}{L+1}\sum_{l=0}^{L}
r_k^{(l)}`; ``paper`` (Eq. 5): the means over :math:`l = 0..L-1`. Shapes: ``W_gc, W_rel`` ``[d, d]``
per layer (shared by behaviors), ``W1`` ``[K, d, d_a]``, ``W2`` ``[K, d_a, 1]``, ``E`` ``[n, K, d]``,
``h`` ``[K, d]``.

One call encodes several *passes* that share the parameters: pass 0 uses the real target graph,
pass ``p >= 1`` replaces the target graph by a view (one graph per layer). Each pass draws its own
dropout masks. Layer 0 of a non-target behavior sees the same input (the ego table) in every pass, so
its :math:`Z_k` is computed once and shared (exact). Passes run one after the other (smaller working
sets are faster on CPU than one batched tensor).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mbrec.graph import SparseOperator, spmm
from mbrec.models.dropout import dropout as embedding_dropout

Pooling = Literal["code", "paper"]
LEAKY_SLOPE = 0.01


def mix_behaviors(weights: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``out[k, v] = Σ_j weights[j, v, k] · z[j, v]``: ``[K, m, K], [K, m, d] -> [K, m, d]`` (contiguous).

    One ``einsum`` (m batched ``K x K`` by ``K x d`` products) reads ``z`` once; a loop of K² fused
    multiply-adds over ``[m, d]`` slices reads it K times and made a whole MBSSL HMG step 1.06x slower on
    CPU (one thread, Beibei). The result is made contiguous so that ``out[k]`` slices feed the sparse
    products and the loss heads without copies.
    """
    return torch.einsum("jmk,jmd->kmd", weights, z).contiguous()


def cross_behavior_attention(z: torch.Tensor, proj: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    r"""Eqs. 3–4 for every node at once: ``[K, m, d] -> [K, m, d]``.

    ``out[k, v] = Σ_j softmax_j(tanh(z[j, v] @ proj[k]) @ score[k]) · z[j, v]`` with ``proj``
    ``[K, d, d_a]`` and ``score`` ``[K, d_a, 1]``: behavior k's scorer weighs all K inputs of node v.
    """
    k, m, d = z.shape
    hidden = torch.tanh(z.reshape(k * m, d) @ proj.permute(1, 0, 2).reshape(d, -1))  # [K_in*m, K_out*d_a]
    logits = (hidden @ torch.block_diag(*score)).view(k, m, k)                         # [K_in, m, K_out]
    weights = torch.softmax(logits, dim=0)
    return mix_behaviors(weights, z)


@dataclass
class EncoderOutput:
    """``nodes[p]``: pooled ``[M+N, K, d]`` table of pass p (one tensor per pass, see
    :meth:`BehaviorAwareEncoder.forward`); ``behaviors``: ``h`` ``[K, d]``."""

    nodes: tuple[torch.Tensor, ...]
    behaviors: torch.Tensor


class BehaviorAwareEncoder(nn.Module):
    """Behavior-aware GNN with cross-behavior dependency modelling (module docstring).

    Args:
        n_users, n_items, n_behaviors: M, N, K (the target is the last behavior).
        dim: d. layers: L. attention_dim: d_a. dropout: embedding dropout after every layer.
        pool: ``code`` (L+1 terms) or ``paper`` (L terms). cdm: cross-behavior attention on/off.
    """

    def __init__(self, n_users: int, n_items: int, n_behaviors: int, dim: int = 64, layers: int = 4,
                 attention_dim: int = 16, dropout: float = 0.3, pool: Pooling = "code",
                 cdm: bool = True) -> None:
        super().__init__()
        if layers < 1:
            raise ValueError("the encoder needs at least one layer")
        self.n_users, self.n_items, self.n_behaviors = n_users, n_items, n_behaviors
        self.layers, self.dropout, self.pool, self.cdm = layers, dropout, pool, cdm
        self.user_emb = nn.Parameter(torch.empty(n_users, dim))
        self.item_emb = nn.Parameter(torch.empty(n_items, dim))
        self.behavior_emb = nn.Parameter(torch.empty(n_behaviors, dim))
        self.propagation_weights = nn.ParameterList(torch.empty(dim, dim) for _ in range(layers))   # W_gc
        self.relation_weights = nn.ParameterList(torch.empty(dim, dim) for _ in range(layers))      # W_rel
        self.attention_proj = nn.Parameter(torch.empty(n_behaviors, dim, attention_dim))
        self.attention_score = nn.Parameter(torch.empty(n_behaviors, attention_dim, 1))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform everything with torch's fan rules (3-D: fan_in = d·d_a, fan_out = K·d_a)."""
        for p in self.parameters():
            nn.init.xavier_uniform_(p)

    def behavior_vectors(self) -> torch.Tensor:
        """:math:`r^{(0)}, …, r^{(L)}` stacked, ``[L+1, K, d]``."""
        out = [self.behavior_emb]
        for weight in self.relation_weights:
            out.append(out[-1] @ weight)
        return torch.stack(out)

    def _terms(self) -> int:
        return self.layers + 1 if self.pool == "code" else self.layers

    def forward(self, graphs: Sequence[SparseOperator],
                target_views: Sequence[Sequence[SparseOperator]] = ()) -> EncoderOutput:
        """Encode pass 0 (``graphs``, one per behavior) and one pass per target view.

        Args:
            graphs: K operators ``Â_k`` of shape ``[n, n]``.
            target_views: per extra pass, L operators replacing ``Â_K`` at layers ``0..L-1``.

        Returns:
            ``nodes``: ``P = 1 + len(target_views)`` tensors ``[n, K, d]`` (views of ``[K, n, d]`` tensors, so
            ``nodes[p][:, k]`` is contiguous) and ``behaviors`` ``h`` ``[K, d]``. The passes are separate
            tensors, not one stacked ``[P, ...]`` tensor: a loss on one pass then back-propagates through
            that pass only (with a stack, autograd sends zero gradients through every other pass, which
            made each of HMG's per-task backwards cost a full three-pass backward).
        """
        if len(graphs) != self.n_behaviors:
            raise ValueError(f"expected {self.n_behaviors} graphs, got {len(graphs)}")
        if any(len(v) != self.layers for v in target_views):
            raise ValueError(f"every target view needs {self.layers} graphs (one per layer)")
        target = self.n_behaviors - 1
        relation = self.behavior_vectors()                                           # [L+1, K, d]
        ego = torch.cat([self.user_emb, self.item_emb])                              # [n, d]
        weights = list(self.propagation_weights)

        def transform(propagated: torch.Tensor, behavior_vectors: torch.Tensor, layer: int) -> torch.Tensor:
            """``LeakyReLU((Â H ⊙ r) W) = LeakyReLU(Â H (diag(r) W))``: r folded into W, ``[..., n, d]``."""
            return F.leaky_relu(propagated @ (behavior_vectors.unsqueeze(-1) * weights[layer]), LEAKY_SLOPE)

        # layer 0 of a non-target behavior: same input (ego) in every pass -> computed once
        first_layer = [transform(spmm(graphs[k], ego), relation[0, k], 0)
                       for k in range(target if self._terms() > 1 else 0)]
        passes = []
        for target_graphs in [[graphs[target]] * self.layers, *target_views]:
            total, hidden = ego, None
            for layer in range(self._terms() - 1):    # H^(L) is never pooled by ``paper``: not computed
                if hidden is None:
                    own = transform(spmm(target_graphs[0], ego), relation[0, target], 0)
                    z = torch.stack([*first_layer, own])                                         # [K, n, d]
                else:
                    ops = [*graphs[:target], target_graphs[layer]]
                    propagated = torch.stack([spmm(op, x) for op, x in zip(ops, hidden, strict=True)])
                    z = transform(propagated, relation[layer], layer)
                if self.cdm:
                    z = cross_behavior_attention(z, self.attention_proj, self.attention_score)
                hidden = embedding_dropout(z, self.dropout, self.training)
                total = total + hidden
            pooled = total.expand(self.n_behaviors, -1, -1) / self._terms()             # [K, n, d]
            passes.append(pooled.permute(1, 0, 2))                                      # [n, K, d]
        behaviors = relation[: self._terms()].mean(0)
        return EncoderOutput(nodes=tuple(passes), behaviors=behaviors)
