r"""GHCF (Chen et al., AAAI'21) and EHCF (Chen et al., AAAI'20): non-sampling multi-behavior models.

Both train every behavior k with the whole-data weighted squared loss (baselines.md §6.1, mbssl.md §5)
over a batch of users B and **all** items:

.. math::
    L_{rec} = \sum_k \lambda_k \Big[ w_k \sum_{m,n} (h_k h_k^T)_{mn} (U_B^T U_B)_{mn} (I^T I)_{mn}
        + \sum_{u \in B} \sum_{i \in L_k(u)} \big((1 - w_k)\hat y_k(u,i)^2 - 2\,\hat y_k(u,i)\big) \Big],
    \qquad \hat y_k(u,i) = \sum_d U_{u,d}\, h_{k,d}\, I_{i,d}

(:func:`mbrec.losses.nonsampling.nonsampling_loss`; behaviors with :math:`\lambda_k = 0` are skipped).
``L_k(u)`` = u's training items of k, optionally capped at the ``label_quantile`` list length.

**GHCF** (``ghcf``, baselines.md §6.3). Per behavior
:math:`\tilde A_t = \mathrm{sym}(\mathrm{bip}(B_t))` (edge dropout during training), shared per-layer
:math:`W_{gc}^{(l)}, W_{rel}^{(l)} \in \mathbb R^{d\times d}`:

.. math::
    Z_t = \mathrm{LeakyReLU}_{0.2}\big(((\tilde A_t H^{(l)}) \odot r_t^{(l)}) W_{gc}^{(l)}\big), \quad
    H^{(l+1)} = \mathrm{dropout}\big(\textstyle\sum_t \pi_t Z_t\big), \quad
    r_t^{(l+1)} = r_t^{(l)} W_{rel}^{(l)}

:math:`H^{(0)} = E_0` (``[M+N, d]``, users first), :math:`E = \mathrm{mean}_{l=0..L} H^{(l)}`,
:math:`h_t = \bar r_t = \mathrm{mean}_{l=0..L} r_t^{(l)}`; :math:`\pi = \lambda` (released code) or
:math:`1/K` (``prop_weights: uniform``). Regulariser ``decay·½(‖E_{u∈B}‖² + ‖E_{items}‖²)`` on the final
embeddings. The released zero PAD item row adds nothing to either term and is omitted.

**EHCF** (``ehcf``, baselines.md §6.2). :math:`U = P` (``[M, d]``, dropout on the batch rows during
training), :math:`I = Q` (``[N+1, d]``; the learnable PAD row N enters only the Gram term), prediction
vectors by transfer :math:`h_k = \sum_{j<k} (W_{j\to k} h_j + b_{j\to k})` from a free :math:`h_0`
(K = 3: h_cart = W_vc h_view + b_vc, h_buy = W_vb h_view + b_vb + W_cb h_cart + b_cb). Regulariser
``reg·½ Σ ‖W_{j→k}‖²``; no embedding L2.

Ranking: :math:`\hat y_{K}(u, i)` of the target behavior over the N real items.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from mbrec.config import ConfigError
from mbrec.data.dataset import MultiBehaviorDataset
from mbrec.data.samplers import Batch, UserSpec
from mbrec.graph import SparseOperator, normalized_bipartite, spmm
from mbrec.losses.nonsampling import nonsampling_loss
from mbrec.models.base import Recommender, register
from mbrec.models.dropout import dropout


def _check_unit(value: float, key: str) -> None:
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"params.{key} must lie in [0, 1), got {value}")


@dataclass
class GHCFConfig:
    """GHCF settings (defaults: the Beibei release settings).

    ``neg_weights`` w_k and ``loss_weights`` λ_k per behavior (upstream first); ``decay`` of the final
    embedding L2; ``prop_weights`` π: ``loss_lambda`` (λ reused in propagation, code) or ``uniform`` (1/K);
    ``message_dropout`` on every layer output and ``edge_dropout`` on every graph entry (training only);
    ``label_quantile``: cap label lists at this quantile of list lengths (None = full lists).
    """

    dim: int = 64
    layers: int = 4
    neg_weights: list[float] = field(default_factory=lambda: [0.1, 0.1, 0.1])
    loss_weights: list[float] = field(default_factory=lambda: [0.0, 5 / 6, 1 / 6])
    decay: float = 10.0
    prop_weights: Literal["loss_lambda", "uniform"] = "loss_lambda"
    message_dropout: float = 0.2
    edge_dropout: float = 0.1
    leaky_slope: float = 0.2
    label_quantile: float | None = 0.9999

    def validate(self) -> None:
        _check_unit(self.message_dropout, "message_dropout")
        _check_unit(self.edge_dropout, "edge_dropout")
        if self.layers < 0:
            raise ConfigError("params.layers must be >= 0")


@dataclass
class EHCFConfig:
    """EHCF settings (defaults: the Beibei release settings).

    ``neg_weights`` w_k, ``loss_weights`` λ_k; ``reg`` of the transfer matrices; ``user_dropout`` on the
    batch user rows (training only); ``init_std`` of the truncated-normal embedding init;
    ``label_quantile`` as in GHCF (EHCF uses full lists).
    """

    dim: int = 64
    neg_weights: list[float] = field(default_factory=lambda: [0.1, 0.1, 0.1])
    loss_weights: list[float] = field(default_factory=lambda: [0.05, 0.8, 0.15])
    reg: float = 1e-4
    user_dropout: float = 0.5
    init_std: float = 0.01
    label_quantile: float | None = None

    def validate(self) -> None:
        _check_unit(self.user_dropout, "user_dropout")


def capped_label_lists(mat: sp.csr_matrix, quantile: float | None) -> sp.csr_matrix:
    """Each row cut to its first ``cap`` items (ascending ids), ``cap`` = the list length at 1-based rank
    ``max(1, ⌊quantile · #non-empty rows⌋)`` of the sorted non-empty lengths (mbssl.md §1.5)."""
    mat = sp.csr_matrix(mat)
    mat.sort_indices()
    lengths = np.diff(mat.indptr)
    non_empty = np.sort(lengths[lengths > 0])
    if quantile is None or len(non_empty) == 0:
        return mat
    rank = max(1, math.floor(quantile * len(non_empty)))      # the release's int(n * q), 1-based
    cap = int(non_empty[rank - 1])
    position = np.arange(mat.nnz) - np.repeat(mat.indptr[:-1], lengths)
    keep = position < cap
    rows = np.repeat(np.arange(mat.shape[0]), lengths)[keep]
    out = sp.csr_matrix((mat.data[keep], (rows, mat.indices[keep])), shape=mat.shape)
    out.sort_indices()
    return out


class LabelLists:
    """One behavior's (capped) training lists on a device; ``pairs(users)`` -> (row in batch, item)."""

    def __init__(self, mat: sp.csr_matrix, device: torch.device | str) -> None:
        self.indptr = torch.from_numpy(mat.indptr.astype(np.int64)).to(device)
        self.indices = torch.from_numpy(mat.indices.astype(np.int64)).to(device)

    def pairs(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B]`` users -> ``[P]`` batch rows and ``[P]`` items of their lists."""
        start = self.indptr[users]
        count = self.indptr[users + 1] - start
        rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), count)
        first = torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
        offset = torch.arange(len(rows), device=users.device) - first
        return rows, self.indices[start[rows] + offset]


@dataclass(frozen=True)
class _DroppedGraph:
    """A per-step edge-dropped graph for :func:`spmm` (its CSR tensor and the CSR of its transpose)."""

    matrix: torch.Tensor
    transpose: torch.Tensor


class EdgeDropoutGraph:
    r""":math:`\mathrm{sym}(\mathrm{bip}(B))` whose stored entries can be dropped independently (kept
    w.p. ``keep``, scaled by ``1/keep``), as the release does; the dropped matrix is not symmetric, so its
    transpose is rebuilt from a precomputed entry permutation (same sparsity pattern)."""

    def __init__(self, interactions: sp.csr_matrix, device: torch.device | str) -> None:
        graph = normalized_bipartite(interactions, "symmetric")
        self.op = SparseOperator(graph, device=device, symmetric=True)
        crow = self.op.matrix.crow_indices()
        col = self.op.matrix.col_indices()
        numbered = sp.csr_matrix((np.arange(1, self.op.nnz + 1, dtype=np.int64),
                                  col.cpu().numpy(), crow.cpu().numpy()), shape=self.op.shape)
        flipped = numbered.T.tocsr()
        flipped.sort_indices()
        self.transpose_order = torch.from_numpy(flipped.data - 1).to(device)

    def sample(self, drop: float) -> SparseOperator | _DroppedGraph:
        """The graph with every stored entry dropped w.p. ``drop`` (``drop = 0``: the graph itself)."""
        if drop == 0.0:
            return self.op
        m = self.op.matrix
        values = dropout(m.values(), drop, True)                          # every stored entry on its own
        crow, col = m.crow_indices(), m.col_indices()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            dropped = torch.sparse_csr_tensor(crow, col, values, m.shape, check_invariants=False)
            flipped = torch.sparse_csr_tensor(crow, col, values[self.transpose_order], m.shape,
                                              check_invariants=False)
        return _DroppedGraph(dropped, flipped)


class WholeDataRecommender(Recommender):
    """Shared parts: label lists per behavior, weights, user batches and the summed whole-data loss."""

    def __init__(self, dataset: MultiBehaviorDataset, config: GHCFConfig | EHCFConfig, device="cpu") -> None:
        super().__init__(dataset, config, device)
        k = len(self.behaviors)
        for key in ("neg_weights", "loss_weights"):
            if len(getattr(config, key)) != k:
                raise ConfigError(f"params.{key} needs one value per behavior "
                                  f"({k}: {', '.join(self.behaviors)})")
        self.labels = [LabelLists(capped_label_lists(m, config.label_quantile), device)
                       for m in dataset.matrices()]
        self.batch_spec = UserSpec(users="target", drop_last=True)

    def whole_data_loss(self, users: torch.Tensor, user_rows: torch.Tensor, item_table: torch.Tensor,
                        vectors: torch.Tensor) -> torch.Tensor:
        r""":math:`\sum_k \lambda_k L_k`; ``user_rows [B, d]``, ``item_table [N', d]``, ``vectors [K, d]``."""
        total = user_rows.new_zeros(())
        for k, (lam, w) in enumerate(zip(self.config.loss_weights, self.config.neg_weights, strict=True)):
            if lam == 0.0:
                continue
            rows, items = self.labels[k].pairs(users)
            total = total + lam * nonsampling_loss(user_rows, item_table, vectors[k], rows, items, w)
        return total


@register("ghcf")
class GHCF(WholeDataRecommender):
    """GHCF: relation-aware GCN over per-behavior graphs + non-sampling multi-task loss."""

    Config = GHCFConfig

    def __init__(self, dataset: MultiBehaviorDataset, config: GHCFConfig, device="cpu") -> None:
        super().__init__(dataset, config, device)
        c, k = config, len(self.behaviors)
        weights = c.loss_weights if c.prop_weights == "loss_lambda" else [1.0 / k] * k
        self.propagated = [(b, w) for b, w in enumerate(weights) if w != 0.0]
        if not self.propagated and c.layers > 0:
            raise ConfigError("params.loss_weights: propagation needs one behavior with a non-zero weight")
        self.graphs = {b: EdgeDropoutGraph(dataset.train[self.behaviors[b]], device)
                       for b, _ in self.propagated}
        self.user_emb = nn.Parameter(torch.empty(self.n_users, c.dim))
        self.item_emb = nn.Parameter(torch.empty(self.n_items, c.dim))
        self.relations = nn.Parameter(torch.empty(k, c.dim))
        self.gc_weights = nn.ParameterList(nn.Parameter(torch.empty(c.dim, c.dim)) for _ in range(c.layers))
        self.rel_weights = nn.ParameterList(nn.Parameter(torch.empty(c.dim, c.dim)) for _ in range(c.layers))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in (self.user_emb, self.item_emb, self.relations, *self.gc_weights, *self.rel_weights):
            nn.init.xavier_uniform_(p)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final node table ``[M+N, d]`` and behavior vectors ``[K, d]`` (mean over layers 0..L)."""
        c = self.config
        drop = c.edge_dropout if self.training else 0.0
        graphs = {b: g.sample(drop) for b, g in self.graphs.items()}
        h = torch.cat([self.user_emb, self.item_emb])
        r = self.relations
        h_sum, r_sum = h, r
        for gc, rel in zip(self.gc_weights, self.rel_weights, strict=True):
            messages = [w * F.leaky_relu((spmm(graphs[b], h) * r[b]) @ gc, c.leaky_slope)
                        for b, w in self.propagated]
            h = dropout(torch.stack(messages).sum(0), c.message_dropout, self.training)
            r = r @ rel
            h_sum, r_sum = h_sum + h, r_sum + r
        n = c.layers + 1
        return h_sum / n, r_sum / n


    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        table, vectors = self.propagate()
        users = batch.users
        user_rows, items = table[users], table[self.n_users:]
        l2 = 0.5 * (user_rows.pow(2).sum() + items.pow(2).sum())
        return {"rec": self.whole_data_loss(users, user_rows, items, vectors),
                "reg/l2": self.config.decay * l2}

    @torch.no_grad()
    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        table, vectors = self.eval_cached(self.propagate)
        return (table[users] * vectors[-1]) @ table[self.n_users:].T


@register("ehcf")
class EHCF(WholeDataRecommender):
    """EHCF: matrix factorisation with transferred behavior vectors + non-sampling multi-task loss."""

    Config = EHCFConfig

    def __init__(self, dataset: MultiBehaviorDataset, config: EHCFConfig, device="cpu") -> None:
        super().__init__(dataset, config, device)
        d, k = config.dim, len(self.behaviors)
        self.transfer_pairs = [(j, t) for t in range(1, k) for j in range(t)]
        self.user_emb = nn.Parameter(torch.empty(self.n_users, d))
        self.item_emb = nn.Parameter(torch.empty(self.n_items + 1, d))      # row N = PAD
        self.base_vector = nn.Parameter(torch.empty(d))
        self.transfer_weights = nn.ParameterList(nn.Parameter(torch.empty(d, d)) for _ in self.transfer_pairs)
        self.transfer_biases = nn.ParameterList(nn.Parameter(torch.empty(d)) for _ in self.transfer_pairs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.config.init_std
        for p in (self.user_emb, self.item_emb):
            nn.init.trunc_normal_(p, std=std, a=-2 * std, b=2 * std)
        bound = math.sqrt(3.0 / self.config.dim)
        for p in (self.base_vector, *self.transfer_weights, *self.transfer_biases):
            nn.init.uniform_(p, -bound, bound)

    def behavior_vectors(self) -> torch.Tensor:
        r""":math:`h_0` and :math:`h_k = \sum_{j<k} (W_{j\to k} h_j + b_{j\to k})`, stacked ``[K, d]``."""
        vectors = [self.base_vector]
        for t in range(1, len(self.behaviors)):
            terms = [self.transfer_weights[p] @ vectors[j] + self.transfer_biases[p]
                     for p, (j, k) in enumerate(self.transfer_pairs) if k == t]
            vectors.append(torch.stack(terms).sum(0))
        return torch.stack(vectors)

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        users = batch.users
        user_rows = dropout(self.user_emb[users], self.config.user_dropout, self.training)
        rec = self.whole_data_loss(users, user_rows, self.item_emb, self.behavior_vectors())
        l2 = 0.5 * sum((w.pow(2).sum() for w in self.transfer_weights), rec.new_zeros(()))
        return {"rec": rec, "reg/l2": self.config.reg * l2}

    @torch.no_grad()
    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        return (self.user_emb[users] * self.behavior_vectors()[-1]) @ self.item_emb[: self.n_items].T
