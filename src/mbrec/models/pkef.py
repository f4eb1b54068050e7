r"""PKEF (Meng et al., CIKM'23): parallel + cascade encoders with parallel-knowledge fusion and the
projection-based mixture of experts PME (baselines.md §5; layout shared with COPF, copf.md §1.4, §4.4,
§4.6, §8.3-8.4).

Graphs per behavior :math:`\hat A_k = D^{-1}\,\mathrm{bip}(B_k)` (left-normalised, **not** COPF's cumulative
graphs), tables ``[M+N, d]`` users first, :math:`E_0 = [E_u; E_i]`, row-wise projection
:math:`\mathrm{proj}(a \to b) = \frac{\langle a, b \rangle}{\lVert b \rVert^2 + 10^{-12}}\, b`.

Encoder (parallel stream; cascade stream fused with the parallel layer, 0.3 = ``fusion_weight``):

.. math::
    P_k^0 = E_0, \quad P_k^{l+1} = \hat A_k P_k^l + P_k^l, \quad \bar P_k = \sum_{l=0}^{L_k} P_k^l

    X_0 = E_0, \quad C_k^0 = X_k, \quad S = \hat A_k C_k^l, \quad
    C_k^{l+1} = S + C_k^l + 0.3\, \mathrm{proj}(P_k^{l+1} \to S), \quad X_{k+1} = C_k^{L_k} + X_k

    (EU_k, EV_k) = \mathrm{split}\Big(\sum_{l=0}^{L_k} C_k^l\Big)

Both streams of a layer use the same :math:`\hat A_k`, so each layer is **one** product with a
``[M+N, 2d]`` operand (``2·Σ_k L_k`` products of width d in the release).

Decoder: COPF's :class:`~mbrec.models.copf.heads.PMEHead` on the cascade tables — for task k, slot 0 =
:math:`EU_k[u] \circ EV_k[v]`, slot j ≠ k (ascending) = :math:`0.01\,\mathrm{proj}(E_j \to E_k)` on both
sides, one gate :math:`\mathrm{softmax}([EU_k[u] \| EV_k[v]] W_g + b_g)` shared by all tasks,
:math:`\hat y_k = 300 \sum_d \sum_s g_s x_s`; its unique parts
:math:`0.01\,(E_j - \mathrm{proj}(E_j \to E_k))` are scored on "k without j" pairs for every
:math:`j \in U(k) = \{j \ne k: B_k \wedge \neg B_j \ne 0\}`.
Parallel score :math:`\hat y^{par}_k = 300 \sum_d \bar P_k[u] \circ \bar P_k[M+v]`. Ranking:
:math:`\hat y_{K-1}`. Loss (each BPR a mean over its pairs, tasks with :math:`\lambda_k = 0` skipped):

.. math::
    \sum_k 3\lambda_k \Big[\mathrm{BPR}(\hat y_k) + \mathrm{BPR}(\hat y^{par}_k)
        + \sum_{j \in U(k)} \mathrm{BPR}(\hat y^{uni}_{k,j})\Big]
    + 0.01\,(\lVert E_u\rVert^2 + \lVert E_i\rVert^2 + \lVert W_g\rVert^2)

Names: ``bpr/<k>`` (PME), ``bpr/<k>_parallel``, ``bpr/<k>_without_<j>`` (unique, from the head), ``reg/l2``.
Samples: per behavior and batch user min(40, deg) positives with replacement, negatives rejected against
the same behavior (batch spec); unique pairs are drawn by the head (min(40, |B_{k∖j}(u)|) positives from
:math:`B_{k\setminus j}(u)`, negatives rejected against :math:`B_{k\setminus j}(u)` only, torch's RNG).
The release trains each epoch on 10,000 random users; our epochs cover every user (the YAML configs scale
``epochs`` and set ``decay_steps`` so that the step count and the staircase lr schedule match).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from mbrec.config import ConfigError
from mbrec.data.dataset import MultiBehaviorDataset
from mbrec.data.samplers import Batch, BPRSpec
from mbrec.graph import SparseOperator, spmm
from mbrec.losses import bpr_loss
from mbrec.models.base import Recommender, register
from mbrec.models.copf.heads import PMEHead, project


@dataclass
class PKEFConfig:
    """PKEF settings (defaults: the release's Beibei/Taobao settings).

    ``layers`` L_k and ``task_weights`` λ_k per behavior (upstream first); each task's losses are multiplied
    by ``task_weight_scale · λ_k`` (3λ_k in the release); ``positives`` per user and behavior (``sampNum``);
    ``mult`` of every score; ``fusion_weight`` of the projected parallel message; ``reg`` of the full-table
    sum of squares.
    """

    dim: int = 64
    layers: list[int] = field(default_factory=lambda: [4, 1, 1])
    task_weights: list[float] = field(default_factory=lambda: [0.0, 4 / 6, 2 / 6])
    task_weight_scale: float = 3.0
    positives: int = 40
    mult: float = 300.0
    fusion_weight: float = 0.3
    reg: float = 0.01

    def validate(self) -> None:
        if any(n < 0 for n in self.layers):
            raise ConfigError("params.layers must be >= 0")
        if any(w < 0 for w in self.task_weights):
            raise ConfigError("params.task_weights must be >= 0")
        if self.positives < 1:
            raise ConfigError("params.positives must be >= 1")


@register("pkef")
class PKEF(Recommender):
    """PKEF: per-behavior parallel/cascade GCNs with parallel-knowledge fusion and a PME decoder."""

    Config = PKEFConfig

    def __init__(self, dataset: MultiBehaviorDataset, config: PKEFConfig, device="cpu") -> None:
        super().__init__(dataset, config, device)
        c, mats = config, dataset.matrices()
        for key in ("layers", "task_weights"):
            if len(getattr(c, key)) != len(self.behaviors):
                raise ConfigError(f"params.{key} needs one entry per behavior ({', '.join(self.behaviors)})")
        self.graphs = [SparseOperator.from_interactions(m, "left", device)
                       for m in mats]
        self.task_weights = [c.task_weight_scale * w for w in c.task_weights]
        self.tasks = [k for k, w in enumerate(self.task_weights) if w != 0.0]
        self.user_emb = nn.Parameter(torch.empty(self.n_users, c.dim))
        self.item_emb = nn.Parameter(torch.empty(self.n_items, c.dim))
        self.head = PMEHead(mats, self.behaviors, c.dim, c.mult, c.positives)
        self.batch_spec = BPRSpec(behaviors=tuple(self.behaviors[k] for k in self.tasks),
                                  positives=c.positives, cap_by_degree=True, negatives_against="same")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.user_emb)
        nn.init.xavier_uniform_(self.item_emb)
        self.head.reset_parameters()

    def encode(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        r"""Parallel sums :math:`\bar P_k` and cascade sums :math:`\sum_l C_k^l`, each ``[M+N, d]``."""
        d, fusion = self.config.dim, self.config.fusion_weight
        e0 = torch.cat([self.user_emb, self.item_emb])
        x, parallel, cascade = e0, [], []
        for graph, n_layers in zip(self.graphs, self.config.layers, strict=True):
            p, c = e0, x
            p_sum, c_sum = p, c
            for _ in range(n_layers):
                messages = spmm(graph, torch.cat([p, c], dim=1))           # [M+N, 2d] = [Â P | Â C]
                p = messages[:, :d] + p
                s = messages[:, d:]
                c = s + c + fusion * project(p, s)
                p_sum, c_sum = p_sum + p, c_sum + c
            x = c + x
            parallel.append(p_sum)
            cascade.append(c_sum)
        return parallel, cascade

    def behavior_tables(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(EU_k ``[M, d]``, EV_k ``[N, d]``) per behavior: the cascade outputs."""
        return [(t[: self.n_users], t[self.n_users:]) for t in self.encode()[1]]


    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        m, mult = self.n_users, self.config.mult
        parallel, cascade = self.encode()
        state = self.head.prepare([(t[:m], t[m:]) for t in cascade], self.tasks)
        out: dict[str, torch.Tensor] = {}
        for k in self.tasks:
            name, t = self.behaviors[k], batch.triples[self.behaviors[k]]
            scores = self.head.pair_scores(state, k, torch.cat([t.users, t.users]),
                                           torch.cat([t.positives, t.negatives]))
            out[f"bpr/{name}"] = self.task_weights[k] * bpr_loss(*scores.split(len(t)))
            users = parallel[k][t.users]
            pos = mult * (users * parallel[k][m + t.positives]).sum(-1)
            neg = mult * (users * parallel[k][m + t.negatives]).sum(-1)
            out[f"bpr/{name}_parallel"] = self.task_weights[k] * bpr_loss(pos, neg)
        out.update(self.head.extra_losses(state, batch, self.task_weights))
        regularized = [self.user_emb, self.item_emb, *self.head.regularized()]
        out["reg/l2"] = self.config.reg * sum(w.pow(2).sum() for w in regularized)
        return out

    @torch.no_grad()
    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        target = len(self.behaviors) - 1
        prepared = self.eval_cached(lambda: self.head.prepare(self.behavior_tables(), [target]))
        return self.head.all_scores(prepared, target, users)
