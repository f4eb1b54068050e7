r"""Matrix factorisation with BPR (MF-BPR): :math:`\hat y_{ui} = \langle p_u, q_i \rangle`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from mbrec.data.dataset import MultiBehaviorDataset
from mbrec.data.samplers import Batch, BPRSpec
from mbrec.losses import bpr_loss, l2_of_rows, triple_scores
from mbrec.models.base import Recommender, register


@dataclass
class MFConfig:
    dim: int = 64
    reg: float = 1e-4
    init_std: float = 0.1
    sampling: Literal["interactions", "users"] = "interactions"


@register("mf")
class MF(Recommender):
    """MF-BPR on the target behavior; L2 on the batch rows (``reg · ½‖·‖² / n``)."""

    Config = MFConfig

    def __init__(self, dataset: MultiBehaviorDataset, config: MFConfig, device="cpu") -> None:
        super().__init__(dataset, config, device)
        self.user_emb = nn.Parameter(torch.empty(self.n_users, config.dim))
        self.item_emb = nn.Parameter(torch.empty(self.n_items, config.dim))
        self.batch_spec = BPRSpec(behaviors=(dataset.target,), positives=1, negatives_against="target",
                                  epoch=config.sampling)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.user_emb, std=self.config.init_std)
        nn.init.normal_(self.item_emb, std=self.config.init_std)

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        t = batch.triples[self.behaviors[-1]]
        reg = l2_of_rows(self.user_emb[t.users], self.item_emb[t.positives], self.item_emb[t.negatives])
        return {"bpr": bpr_loss(*triple_scores(self.user_emb, self.item_emb, t)),
                "reg/l2": self.config.reg * reg / max(len(t), 1)}

    @torch.no_grad()
    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_emb[users] @ self.item_emb.T
