r"""CRGCN (Yan et al., TOIS'23): cascading residual GCN over the behavior chain (baselines.md §3).

Per behavior b (upstream → target) :math:`\hat A_b = D^{-1/2}\,\mathrm{bip}(B_b)\,D^{-1/2}` with the
degrees of behavior b alone, no self-loops. A GCN layer of behavior b is
:math:`X \leftarrow \hat A_b X + c_{b,l}` (learnable bias :math:`c_{b,l} \in \mathbb R^d`, zero init, added
to every node; no weight, no nonlinearity); only the last layer's output is kept. The cascade adds the
row-L2-normalised output to its input:

.. math::
    H_0 = E_0 = [E_u; E_i], \qquad Z_b = \mathrm{GCN}_b^{L_b}(H_{b-1}), \qquad
    H_b = H_{b-1} + \frac{Z_b}{\max(\lVert Z_b \rVert_{row}, 10^{-12})}, \qquad
    \hat y_b(u, i) = \langle H_b[u], H_b[M + i] \rangle

(tables ``[M+N, d]``, users first; zero rows stay zero). Ranking uses :math:`H_K` (target).

Loss: :math:`\sum_b \frac{1}{|B|}\sum_{u \in B} \mathrm{softplus}(-(\hat y_b(u,p) - \hat y_b(u,n)))
+ \mathrm{reg}\,(\lVert E_u \rVert_F + \lVert E_i \rVert_F)/N` — one triple per batch user and behavior,
negatives rejected against the **union** of the user's behaviors. Users without a behavior-b item get a
dummy triple in the release (padding row 0: zero gradient, a constant ln 2 in the mean); we divide the sum
over real triples by the number of batch users, which gives the release's gradient without the constant.
The release's ``−ln(σ(x) + 10^{-10})`` is computed as softplus; its 1-based padding rows (item 0 a ranking
candidate) are dropped [D], so the Frobenius regulariser divides by N instead of N + 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mbrec.config import ConfigError
from mbrec.data.dataset import MultiBehaviorDataset
from mbrec.data.samplers import Batch, BPRSpec
from mbrec.graph import SparseOperator, spmm
from mbrec.models.base import Recommender, register


@dataclass
class CRGCNConfig:
    """CRGCN settings (defaults: the release's scripts).

    ``layers`` L_b per behavior (upstream first); ``reg`` weight of the un-squared Frobenius norms of the
    two embedding tables; ``bias``: the per-layer learnable bias of the release (``false`` = the paper's
    "no additional parameters").
    """

    dim: int = 64
    layers: list[int] = field(default_factory=lambda: [1, 1, 1])
    reg: float = 1e-3
    bias: bool = True

    def validate(self) -> None:
        if any(n < 1 for n in self.layers):
            raise ConfigError("params.layers: every behavior needs at least one layer")


@register("crgcn")
class CRGCN(Recommender):
    """CRGCN: one LightGCN-style block per behavior, cascaded with row-normalised residuals."""

    Config = CRGCNConfig

    def __init__(self, dataset: MultiBehaviorDataset, config: CRGCNConfig, device="cpu") -> None:
        super().__init__(dataset, config, device)
        c = config
        if len(c.layers) != len(self.behaviors):
            raise ConfigError(f"params.layers needs one entry per behavior ({', '.join(self.behaviors)})")
        self.graphs = [SparseOperator.from_interactions(m, "symmetric", device)
                       for m in dataset.matrices()]
        self.user_emb = nn.Parameter(torch.empty(self.n_users, c.dim))
        self.item_emb = nn.Parameter(torch.empty(self.n_items, c.dim))
        self.biases = (nn.ParameterList([nn.Parameter(torch.empty(n, c.dim)) for n in c.layers])
                       if c.bias else None)
        self.batch_spec = BPRSpec(behaviors=None, positives=1, cap_by_degree=True, negatives_against="union")
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.user_emb)
        nn.init.xavier_uniform_(self.item_emb)
        if self.biases is not None:
            for b in self.biases:
                nn.init.zeros_(b)

    def cascade_tables(self) -> list[torch.Tensor]:
        """Cascade outputs :math:`H_1..H_K`, each ``[M+N, d]``."""
        h = torch.cat([self.user_emb, self.item_emb])
        out = []
        for b, graph in enumerate(self.graphs):
            z = h
            for layer in range(self.config.layers[b]):
                z = spmm(graph, z)
                if self.biases is not None:
                    z = z + self.biases[b][layer]
            h = h + F.normalize(z, dim=1, eps=1e-12)
            out.append(h)
        return out

    def behavior_tables(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The cascade outputs split into user and item tables, ``([M, d], [N, d])`` per behavior."""
        return [(h[: self.n_users], h[self.n_users:]) for h in self.cascade_tables()]

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        tables = self.cascade_tables()
        n_users = max(len(batch.users), 1)
        out = {}
        for name, h in zip(self.behaviors, tables, strict=True):
            t = batch.triples[name]
            u = h[t.users]
            margin = (u * h[self.n_users + t.positives]).sum(-1) - (u * h[self.n_users + t.negatives]).sum(-1)
            out[f"bpr/{name}"] = F.softplus(-margin).sum() / n_users
        norms = self.user_emb.norm() + self.item_emb.norm()
        out["reg/l2"] = self.config.reg * norms / self.n_items
        return out

    @torch.no_grad()
    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        h = self.eval_cached(lambda: self.cascade_tables()[-1])
        return h[users] @ h[self.n_users:].T
