r"""MBGCN (Jin et al., SIGIR'20): user- and item-based multi-behavior graph scores (baselines.md §2).

Inputs per behavior t = 1..T: binary :math:`R_t` (``[M, N]``), counts :math:`n_{ut} = |N_t(u)|`
(``[M, T]``, undropped), and an item–item graph :math:`G_t = 1[R_t^T R_t > 0]` with zero diagonal
(``[N, N]``, row sums :math:`g_t`). Parameters: :math:`P` ``[M, d]``, :math:`Q` ``[N, d]``, behavior
weights :math:`w \in \mathbb R^T` (init 1, no softmax), :math:`W, W^I_t \in \mathbb R^{d\times d}`,
:math:`M_t \in \mathbb R^{2d\times 2d}`. One propagation hop on every path:

.. math::
    \alpha_{ut} = \frac{w_t n_{ut}}{\sum_m w_m n_{um} + 10^{-8}}, \quad
    a_u = \sum_t \alpha_{ut} \frac{(\tilde R_t Q)_u}{n_{ut} + 10^{-8}}, \quad
    b_i = (\tilde R_{tgt}^T P)_i

    \tilde u_u = [P_u \,\|\, a_u W], \quad \tilde\imath_i = [Q_i \,\|\, b_i W], \quad
    y_1(u, i) = \langle \tilde u_u, \tilde\imath_i \rangle

    X_t = \Big[Q \,\Big\|\, \frac{G_t Q}{g_t + 10^{-8}} W^I_t\Big], \quad
    C_t = \frac{\tilde R_t X_t}{n_t + 10^{-8}}, \quad
    y_2(u, i) = \frac1T \sum_t \langle (C_t M_t)_u, X_{t,i} \rangle, \quad
    \hat y = y_1 + \lambda\, y_2

Training only: every stored entry of :math:`R_t` and :math:`R_{tgt}` is kept w.p. 0.8 and scaled 1/0.8
(``node_dropout``; one dropped :math:`\tilde R_t` per step serves both :math:`a_u` and :math:`C_t`, the
item side draws its own :math:`\tilde R_{tgt}`), and dropout ``message_dropout`` hits the
:math:`\tilde u, \tilde\imath` tables. Loss: mean BPR + ``reg · Σ_rows(2‖ũ_u‖² + ‖ĩ_{i+}‖² + ‖ĩ_{i-}‖²) / n``
(the release divides by the nominal batch size 2,048; we divide by the batch's own size, which differs
only on the last partial batch). Sampler: one triple per target training pair per epoch.

Warm start [C → D]: the release initialises :math:`P, Q` from a separately trained MF-BPR model with
L2-normalised rows. ``pretrain_epochs > 0`` fits MF-BPR (:mod:`mbrec.models.mf`, Xavier-normal init, same
interaction sampler) on the target behavior **inside the constructor**, in memory, then copies its
row-normalised tables; its sampler seed is drawn from the global torch generator, so the run seed (set
before the model is built) fixes it. ``pretrain_epochs = 0``: Xavier-normal :math:`P, Q`, no pretraining.

Dense item graphs [D]: :math:`G_t` of view-like behaviors is dense (Taobao view 29 %, Beibei view 72 %);
above ``dense_item_graph_density`` it is held as a dense matrix (a GEMM is ~20× faster per stored entry
than a CSR product on CPU); the value is the same.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from mbrec.config import ConfigError
from mbrec.data.dataset import MultiBehaviorDataset
from mbrec.data.samplers import Batch, BPRSpec, make_sampler
from mbrec.graph import SparseOperator, spmm
from mbrec.losses import bpr_loss
from mbrec.models.base import Recommender, register
from mbrec.models.dropout import dropout
from mbrec.models.mf import MF, MFConfig

log = logging.getLogger(__name__)


@dataclass
class MBGCNConfig:
    """MBGCN settings (defaults: the release's Tmall run script).

    ``item_score_weight`` λ (``lamb``) of the item-based score; ``reg`` L2 of the final 2d features;
    ``node_dropout`` on the user–item matrices and ``message_dropout`` on the feature tables (training);
    ``pretrain_*``: in-constructor MF-BPR warm start (``pretrain_epochs = 0``: Xavier-normal init);
    ``dense_item_graph_density``: item graphs denser than this are stored dense (speed only).
    """

    dim: int = 64
    item_score_weight: float = 1.0
    reg: float = 1e-4
    node_dropout: float = 0.2
    message_dropout: float = 0.2
    pretrain_epochs: int = 50
    pretrain_lr: float = 1e-2
    pretrain_reg: float = 1e-2
    pretrain_batch_size: int = 2048
    dense_item_graph_density: float = 0.05

    def validate(self) -> None:
        for key in ("node_dropout", "message_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"params.{key} must lie in [0, 1), got {getattr(self, key)}")
        if self.pretrain_epochs < 0:
            raise ConfigError("params.pretrain_epochs must be >= 0")


# ---------------------------------------------------------------------------------------------- warm start
def fit_in_memory(model: Recommender, dataset: MultiBehaviorDataset, epochs: int, lr: float,
                  batch_size: int, label: str = "warm start") -> None:
    """Train ``model`` on its own ``batch_spec`` with Adam and the plain sum of its losses (no evaluation,
    no files). The sampler seed is drawn from the global torch generator (fixed by the run seed).

    Progress goes to the ``mbrec`` logger (INFO): about every 10 % of the passes, with the mean loss of the
    last pass and the time left."""
    seed = int(torch.randint(0, 2**62, ()).item())
    rng = np.random.default_rng(seed)
    sampler = make_sampler(model.batch_spec, dataset, batch_size)
    device = next(model.parameters()).device
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    report_every = max(1, epochs // 10)
    start = time.perf_counter()
    model.train()
    for epoch in range(1, epochs + 1):
        total, steps = 0.0, 0
        for batch in sampler.epoch(rng):
            optimizer.zero_grad(set_to_none=True)
            loss = sum(model.losses(batch.to(device)).values())
            loss.backward()
            optimizer.step()
            total, steps = total + float(loss.detach()), steps + 1
        if epoch % report_every == 0 or epoch == epochs:
            seconds = time.perf_counter() - start
            left = seconds / epoch * (epochs - epoch)
            log.info("%s: pass %d/%d, loss %.4f (%.0fs, about %.0f min left)",
                     label, epoch, epochs, total / max(steps, 1), seconds, left / 60)
    model.eval()


def pretrained_mf_tables(dataset: MultiBehaviorDataset, config: MBGCNConfig,
                         device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """MF-BPR on the target behavior (interaction sampler, Xavier-normal init); L2-normalised rows
    ``([M, d], [N, d])``."""
    mf = MF(dataset, MFConfig(dim=config.dim, reg=config.pretrain_reg, sampling="interactions"), device)
    mf.to(device)
    nn.init.xavier_normal_(mf.user_emb)
    nn.init.xavier_normal_(mf.item_emb)
    fit_in_memory(mf, dataset, config.pretrain_epochs, config.pretrain_lr, config.pretrain_batch_size,
                  label="MBGCN warm start (MF-BPR on the target)")
    with torch.no_grad():
        return F.normalize(mf.user_emb, dim=1).clone(), F.normalize(mf.item_emb, dim=1).clone()


# ---------------------------------------------------------------------------------------------- graphs
def item_cooccurrence_graph(interactions: sp.csr_matrix) -> sp.csr_matrix:
    r""":math:`G = 1[R^T R > 0]` with zero diagonal: items co-interacted by at least one user, ``[N, N]``."""
    r = sp.csr_matrix(interactions, dtype=np.float32)
    g = (r.T @ r).tocsr()
    g.setdiag(0)
    g.eliminate_zeros()
    g.data[:] = 1.0
    g.sort_indices()
    return g


class ItemGraph:
    r"""Row-mean over item–item neighbours, :math:`\frac{G Q}{g + 10^{-8}}` (``[N, d] -> [N, d]``).

    :math:`G` is binary and symmetric, so the row normalisation is a scaling after the product and the
    backward is one more product with :math:`G`. Stored dense above ``dense_density``, else as CSR.
    """

    def __init__(self, graph: sp.csr_matrix, dense_density: float, device: torch.device | str) -> None:
        n = graph.shape[0]
        degree = np.asarray(graph.sum(axis=1), dtype=np.float64).ravel()
        self.inv_degree = torch.from_numpy((1.0 / (degree + 1e-8)).astype(np.float32)).to(device).unsqueeze(1)
        self.dense = graph.nnz > dense_density * n * n
        if self.dense:
            self.matrix = torch.from_numpy(graph.toarray()).to(device)
        else:
            self.op = SparseOperator(graph, device=device, symmetric=True)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        product = self.matrix @ x if self.dense else spmm(self.op, x)
        return product * self.inv_degree


@dataclass(frozen=True)
class _EdgeSample:
    """One edge-dropped matrix for :func:`spmm`: its CSR tensor and the CSR tensor of its transpose."""

    matrix: torch.Tensor
    transpose: torch.Tensor


class DroppableMatrix:
    """A constant ``[R, C]`` sparse matrix whose stored entries can be dropped per step (kept w.p.
    ``1 - drop``, scaled by ``1/(1 - drop)``); ``sample(drop, transposed)`` gives an operand of :func:`spmm`
    for ``R̃ X`` or ``R̃^T X`` (same mask for both directions of one sample)."""

    def __init__(self, matrix: sp.csr_matrix, device: torch.device | str) -> None:
        self.op = SparseOperator(matrix, device=device, symmetric=False)
        m = self.op.matrix
        numbered = sp.csr_matrix((np.arange(1, self.op.nnz + 1, dtype=np.int64),
                                  m.col_indices().cpu().numpy(), m.crow_indices().cpu().numpy()),
                                 shape=self.op.shape)
        flipped = numbered.T.tocsr()
        flipped.sort_indices()
        self.transpose_order = torch.from_numpy(flipped.data - 1).to(m.device)

    def sample(self, drop: float, transposed: bool = False) -> SparseOperator | _EdgeSample:
        if drop == 0.0:
            if not transposed:
                return self.op
            return _EdgeSample(self.op.transpose, self.op.matrix)
        m, t = self.op.matrix, self.op.transpose
        values = dropout(m.values(), drop, True)                          # every stored entry on its own
        forward = torch.sparse_csr_tensor(m.crow_indices(), m.col_indices(), values, m.shape,
                                          check_invariants=False)
        backward = torch.sparse_csr_tensor(t.crow_indices(), t.col_indices(), values[self.transpose_order],
                                           t.shape, check_invariants=False)
        return _EdgeSample(backward, forward) if transposed else _EdgeSample(forward, backward)


# ---------------------------------------------------------------------------------------------- model
@register("mbgcn")
class MBGCN(Recommender):
    """MBGCN: user-based (behavior-weighted neighbourhood) + item-based (item–item graph) scores."""

    Config = MBGCNConfig
    warm_start_fields = ("pretrain_epochs",)

    def __init__(self, dataset: MultiBehaviorDataset, config: MBGCNConfig, device="cpu") -> None:
        super().__init__(dataset, config, device)
        c, d, n_behaviors = config, config.dim, len(self.behaviors)
        mats = dataset.matrices()
        self.user_item = [DroppableMatrix(m, device) for m in mats]              # the target is last
        self.item_graphs = [ItemGraph(item_cooccurrence_graph(m), c.dense_item_graph_density, device)
                            for m in mats]
        counts = np.stack([np.diff(m.indptr) for m in mats], axis=1).astype(np.float32)
        self.counts = torch.from_numpy(counts).to(device)                      # [M, T]
        self.user_emb = nn.Parameter(torch.empty(self.n_users, d))
        self.item_emb = nn.Parameter(torch.empty(self.n_items, d))
        self.behavior_weights = nn.Parameter(torch.empty(n_behaviors))
        self.user_transform = nn.Parameter(torch.empty(d, d))
        self.item_graph_transforms = nn.Parameter(torch.empty(n_behaviors, d, d))
        self.item_score_transforms = nn.Parameter(torch.empty(n_behaviors, 2 * d, 2 * d))
        self.batch_spec = BPRSpec(behaviors=(dataset.target,), positives=1, negatives_against="target",
                                  epoch="interactions")
        self.reset_parameters()
        if c.pretrain_epochs > 0:
            users, items = pretrained_mf_tables(dataset, c, device)
            with torch.no_grad():
                self.user_emb.copy_(users)
                self.item_emb.copy_(items)

    def reset_parameters(self) -> None:
        nn.init.ones_(self.behavior_weights)
        for p in (self.user_emb, self.item_emb, self.user_transform):
            nn.init.xavier_normal_(p)
        for stack in (self.item_graph_transforms, self.item_score_transforms):
            for w in stack:
                nn.init.xavier_normal_(w)

    def behavior_attention(self) -> torch.Tensor:
        r""":math:`\alpha_{ut} = w_t n_{ut} / (\sum_m w_m n_{um} + 10^{-8})`, ``[M, T]``."""
        weighted = self.counts * self.behavior_weights
        return weighted / (weighted.sum(1, keepdim=True) + 1e-8)

    def tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scoring tables: users ``[M, 2d(T+1)]`` = [ũ ‖ (λ/T) C_t M_t ...] and items ``[N, 2d(T+1)]`` =
        [ĩ ‖ X_t ...], so that ŷ = users[u] · items[i]. Dropout applies in training mode."""
        c, d = self.config, self.config.dim
        drop = c.node_dropout if self.training else 0.0
        q = self.item_emb
        item_sides, user_sides = [], []
        user_messages = torch.zeros(self.n_users, d, device=q.device)
        alpha = self.behavior_attention()
        inv_counts = 1.0 / (self.counts + 1e-8)
        for t, (graph, r) in enumerate(zip(self.item_graphs, self.user_item, strict=True)):
            x_t = torch.cat([q, graph(q) @ self.item_graph_transforms[t]], dim=1)        # [N, 2d]
            c_t = spmm(r.sample(drop), x_t) * inv_counts[:, t:t + 1]                     # [M, 2d]
            user_messages = user_messages + alpha[:, t:t + 1] * c_t[:, :d]
            item_sides.append(x_t)
            user_sides.append(c_t @ self.item_score_transforms[t])
        buyers = spmm(self.user_item[-1].sample(drop, transposed=True), self.user_emb)     # [N, d]
        u = dropout(torch.cat([self.user_emb, user_messages @ self.user_transform], 1),
                    c.message_dropout, self.training)
        i = dropout(torch.cat([q, buyers @ self.user_transform], 1), c.message_dropout, self.training)
        scale = c.item_score_weight / len(self.behaviors)
        users = torch.cat([u] + [scale * s for s in user_sides], dim=1)
        items = torch.cat([i] + item_sides, dim=1)
        return users, items


    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        t = batch.triples[self.behaviors[-1]]
        users, items = self.tables()
        u, pos, neg = users[t.users], items[t.positives], items[t.negatives]
        width = 2 * self.config.dim                                   # ũ / ĩ are the first 2d columns
        reg = (2 * u[:, :width].pow(2).sum() + pos[:, :width].pow(2).sum()
               + neg[:, :width].pow(2).sum()) / max(len(t), 1)
        return {"bpr": bpr_loss((u * pos).sum(-1), (u * neg).sum(-1)), "reg/l2": self.config.reg * reg}

    @torch.no_grad()
    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        user_table, item_table = self.eval_cached(self.tables)
        return user_table[users] @ item_table.T
