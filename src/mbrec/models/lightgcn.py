r"""LightGCN on the target behavior and on all behaviors merged (LightGCN-M).

.. math::
    E^{(l+1)} = \hat A E^{(l)}, \quad E^* = \frac{1}{L+1}\sum_{l=0}^{L} E^{(l)}, \quad
    \hat y_{ui} = \langle E^*_u, E^*_i \rangle

with :math:`\hat A = D^{-1/2} \mathrm{bip}(R) D^{-1/2}` (no self-loops). Loss: mean BPR plus
``reg · ½(‖e_u‖² + ‖e_{i+}‖² + ‖e_{i-}‖²) / n`` on the ego rows of the batch (baselines.md §1).

* ``graph: target`` — R = target training matrix (LightGCN).
* ``graph: merged`` — R = binary union of all behaviors, BPR on target pairs (LightGCN-M, COPF Table 6).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from mbrec.data.dataset import MultiBehaviorDataset
from mbrec.data.samplers import Batch, BPRSpec
from mbrec.graph import SparseOperator, spmm, union
from mbrec.losses import bpr_loss, l2_of_rows, triple_scores
from mbrec.models.base import Recommender, register


@dataclass
class LightGCNConfig:
    """``layers`` L; ``reg`` λ of the batch-row L2; ``graph`` target|merged; ``sampling``: one triple per
    target training pair per epoch (``interactions``, the official sampler's volume) or per user (``users``)."""

    dim: int = 64
    layers: int = 3
    reg: float = 1e-4
    init: Literal["normal", "xavier"] = "normal"
    init_std: float = 0.1
    graph: Literal["target", "merged"] = "target"
    sampling: Literal["interactions", "users"] = "interactions"


def propagate_mean(op: SparseOperator, ego: torch.Tensor, layers: int) -> torch.Tensor:
    r"""Mean over :math:`E^{(0)}..E^{(L)}` with :math:`E^{(l+1)} = \hat A E^{(l)}`; ``[n, d] -> [n, d]``."""
    acc, x = ego, ego
    for _ in range(layers):
        x = spmm(op, x)
        acc = acc + x
    return acc / (layers + 1)


class LightGCNBase(Recommender):
    """Shared machinery: ego tables, propagation and a cache for evaluation."""

    def __init__(self, dataset: MultiBehaviorDataset, config: LightGCNConfig, device="cpu") -> None:
        super().__init__(dataset, config, device)
        c = config
        mats = dataset.matrices()
        graph = dataset.target_train if c.graph == "target" else union(mats)
        self.op = SparseOperator.from_interactions(graph, "symmetric", device)
        self.user_emb = nn.Parameter(torch.empty(self.n_users, c.dim))
        self.item_emb = nn.Parameter(torch.empty(self.n_items, c.dim))
        self.batch_spec = BPRSpec(behaviors=(dataset.target,), positives=1, negatives_against="target",
                                  epoch=c.sampling)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for t in (self.user_emb, self.item_emb):
            if self.config.init == "normal":
                nn.init.normal_(t, std=self.config.init_std)
            else:
                nn.init.xavier_uniform_(t)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        out = propagate_mean(self.op, torch.cat([self.user_emb, self.item_emb]), self.config.layers)
        return out[: self.n_users], out[self.n_users:]

    def behavior_tables(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The one propagated table pair, for every behavior."""
        return [self.propagate()] * len(self.behaviors)

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        t = batch.triples[self.behaviors[-1]]
        pos, neg = triple_scores(*self.propagate(), t)
        n = max(len(t), 1)
        reg = l2_of_rows(self.user_emb[t.users], self.item_emb[t.positives], self.item_emb[t.negatives]) / n
        return {"bpr": bpr_loss(pos, neg), "reg/l2": self.config.reg * reg}

    @torch.no_grad()
    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        u, i = self.eval_cached(self.propagate)
        return u[users] @ i.T


@register("lightgcn")
class LightGCN(LightGCNBase):
    """LightGCN; ``params.graph`` picks target-only (default) or merged (LightGCN-M)."""

    Config = LightGCNConfig


@dataclass
class LightGCNMConfig(LightGCNConfig):
    graph: Literal["target", "merged"] = "merged"


@register("lightgcn_m")
class LightGCNM(LightGCNBase):
    """LightGCN on the union of all behaviors, trained on target pairs (COPF's LightGCN_M)."""

    Config = LightGCNMConfig
