r"""MB-CGCN (Cheng et al., WWW'23): cascading LightGCN blocks with feature transforms (baselines.md §4).

Per behavior b (upstream → target) :math:`\hat A_b = D^{-1/2}\,\mathrm{bip}(B_b)\,D^{-1/2}` (no self-loops).
Block b is a LightGCN with :math:`L_b` layers and the mean over layers 0..L_b; between blocks a separate
user and item :math:`d\times d` transform; the prediction sums the **untransformed** block outputs:

.. math::
    X_1 = E_0, \qquad Y_b = \frac{1}{L_b + 1}\sum_{l=0}^{L_b} \hat A_b^l X_b = [U_b; I_b], \qquad
    X_{b+1} = [U_b W^{(b)}_u;\, I_b W^{(b)}_i]\ (b < K)

    e_u = \sum_b U_b[u], \quad e_i = \sum_b I_b[i], \quad \hat y(u, i) = \langle e_u, e_i \rangle

(tables ``[M+N, d]``, users first; 2(K-1) transforms). Loss: target BPR only,
``mean BPR + reg · [½‖E_0 rows of the batch‖² + ½ Σ‖W‖²] / n``. Init :math:`\mathcal N(0, 0.01^2)` for
tables and transforms.

Sampler: the release draws ⌊|B_target|/2048⌋+1 batches of 2,048 distinct random users per epoch (one
positive, negatives rejected against target-train). Our closest: every user once per epoch, one positive,
target-train rejection; the YAML configs scale ``epochs``/``eval_every`` by the ratio of steps per epoch.

Warm start [C → D]: the README pretrains on view and starts E_0 from the view model's ego tables
(``--pretrain 1``; the parser default is no pretraining). ``pretrain_epochs > 0`` trains a LightGCN
(:mod:`mbrec.models.lightgcn`, one uniform user-triple per user and epoch) on the **first** behavior
inside the constructor, in memory, and copies its ego tables; its sampler seed comes from the global torch
generator (fixed by the run seed). ``pretrain_epochs = 0``: no pretraining (release default). The warm
start's length sets MB-CGCN's level: the release trains its view model to convergence, and the configs
use 800 passes at lr 1e-2 (Taobao probe in ``configs/mbcgcn_taobao.yaml``); progress goes to the
``mbrec`` logger.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from mbrec.config import ConfigError
from mbrec.data.dataset import MultiBehaviorDataset
from mbrec.data.samplers import Batch, BPRSpec
from mbrec.graph import SparseOperator
from mbrec.losses import bpr_loss, l2_of_rows, triple_scores
from mbrec.models.base import Recommender, register
from mbrec.models.lightgcn import LightGCN, LightGCNConfig, propagate_mean
from mbrec.models.mbgcn import fit_in_memory


@dataclass
class MBCGCNConfig:
    """MB-CGCN settings (defaults: the release's parser defaults).

    ``layers`` L_b per behavior (upstream first); ``reg`` of the batch-row/transform L2; ``init_std`` of the
    normal init; ``pretrain_*``: in-constructor LightGCN warm start on the first behavior (0 = none).
    """

    dim: int = 64
    layers: list[int] = field(default_factory=lambda: [1, 5, 3])
    reg: float = 1e-4
    init_std: float = 0.01
    pretrain_epochs: int = 0
    pretrain_layers: int = 3
    pretrain_lr: float = 1e-3
    pretrain_reg: float = 1e-4
    pretrain_batch_size: int = 2048

    def validate(self) -> None:
        if any(n < 0 for n in self.layers):
            raise ConfigError("params.layers must be >= 0")
        if self.pretrain_epochs < 0:
            raise ConfigError("params.pretrain_epochs must be >= 0")


def pretrained_lightgcn_tables(dataset: MultiBehaviorDataset, behavior: str, config: MBCGCNConfig,
                               device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """Ego tables ``([M, d], [N, d])`` of a LightGCN trained in memory on ``behavior`` alone."""
    single = MultiBehaviorDataset(name=f"{dataset.name}-{behavior}", n_users=dataset.n_users,
                                  n_items=dataset.n_items, behaviors=[behavior],
                                  train={behavior: dataset.train[behavior]}, test=dataset.test)
    lightgcn = LightGCN(single, LightGCNConfig(dim=config.dim, layers=config.pretrain_layers,
                                               reg=config.pretrain_reg, sampling="users"), device)
    lightgcn.to(device)
    fit_in_memory(lightgcn, single, config.pretrain_epochs, config.pretrain_lr, config.pretrain_batch_size,
                  label=f"MB-CGCN warm start (LightGCN on {behavior})")
    return lightgcn.user_emb.detach().clone(), lightgcn.item_emb.detach().clone()


@register("mbcgcn")
class MBCGCN(Recommender):
    """MB-CGCN: LightGCN blocks chained by feature transforms; sum of block outputs scores the target."""

    Config = MBCGCNConfig
    warm_start_fields = ("pretrain_epochs",)

    def __init__(self, dataset: MultiBehaviorDataset, config: MBCGCNConfig, device="cpu") -> None:
        super().__init__(dataset, config, device)
        c, n_transitions = config, len(self.behaviors) - 1
        if len(c.layers) != len(self.behaviors):
            raise ConfigError(f"params.layers needs one entry per behavior ({', '.join(self.behaviors)})")
        self.graphs = [SparseOperator.from_interactions(m, "symmetric", device)
                       for m in dataset.matrices()]
        self.user_emb = nn.Parameter(torch.empty(self.n_users, c.dim))
        self.item_emb = nn.Parameter(torch.empty(self.n_items, c.dim))
        self.user_transforms = nn.Parameter(torch.empty(n_transitions, c.dim, c.dim))
        self.item_transforms = nn.Parameter(torch.empty(n_transitions, c.dim, c.dim))
        self.batch_spec = BPRSpec(behaviors=(dataset.target,), positives=1, negatives_against="target")
        self.reset_parameters()
        if c.pretrain_epochs > 0:
            users, items = pretrained_lightgcn_tables(dataset, self.behaviors[0], c, device)
            with torch.no_grad():
                self.user_emb.copy_(users)
                self.item_emb.copy_(items)

    def reset_parameters(self) -> None:
        for p in (self.user_emb, self.item_emb, self.user_transforms, self.item_transforms):
            nn.init.normal_(p, std=self.config.init_std)

    def behavior_tables(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Block outputs :math:`(U_b, I_b)` per behavior, ``([M, d], [N, d])`` each."""
        x = torch.cat([self.user_emb, self.item_emb])
        out = []
        for b, graph in enumerate(self.graphs):
            y = propagate_mean(graph, x, self.config.layers[b])
            users, items = y[: self.n_users], y[self.n_users:]
            out.append((users, items))
            if b < len(self.graphs) - 1:
                x = torch.cat([users @ self.user_transforms[b], items @ self.item_transforms[b]])
        return out

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final ``e_u`` ``[M, d]`` and ``e_i`` ``[N, d]``: unit-weight sums of the block outputs."""
        tables = self.behavior_tables()
        return sum(u for u, _ in tables), sum(i for _, i in tables)


    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        t = batch.triples[self.behaviors[-1]]
        pos, neg = triple_scores(*self.propagate(), t)
        reg = l2_of_rows(self.user_emb[t.users], self.item_emb[t.positives], self.item_emb[t.negatives],
                         self.user_transforms, self.item_transforms) / max(len(t), 1)
        return {"bpr": bpr_loss(pos, neg), "reg/l2": self.config.reg * reg}

    @torch.no_grad()
    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        u, i = self.eval_cached(self.propagate)
        return u[users] @ i.T
