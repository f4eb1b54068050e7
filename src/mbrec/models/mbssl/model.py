r"""MBSSL (Xu et al., SIGIR 2023) on the model contract, with the released code's defaults.

Per batch of users B (``UserSpec(users="target", drop_last=True)``) the encoder
(:mod:`~mbrec.models.mbssl.encoder`) runs on the full graphs (pass 0) and, with intra-SSL, on two
augmented target graphs (passes 1, 2; redrawn every epoch in :meth:`MBSSL.prepare_epoch`). With
:math:`E_u = E[:M]` ``[M, K, d]``, :math:`E_i = E[M:]` ``[N, K, d]`` and ``h`` ``[K, d]``:

* ``rec`` (target task, Eqs. 10–11): :math:`\sum_k \lambda_k L_k` with the whole-data loss
  :func:`mbrec.losses.nonsampling.nonsampling_loss` of behavior k (``c⁺ = 1``, ``c⁻ = w_k``) on the
  users' label lists, each truncated to its first :math:`M_k` items (:math:`M_k` = the
  ``label_quantile`` quantile of the list lengths). Prediction :math:`\hat x^k_{ui} = \sum_d
  E_u[u,k,d]\, h_k[d]\, E_i[i,k,d]`; ranking uses :math:`k = K`.
* ``aux/intra`` (Eqs. 8–9): :math:`\gamma` × (user + item) InfoNCE between the two views' target slices.
* ``aux/inter/<behavior>`` (Eq. 7): :math:`\mu_k` × (user + item) InfoNCE between the target slice and
  the aux slice of pass 0, with swing false negatives (:mod:`~mbrec.models.mbssl.swing`).
* ``reg/l2``: :math:`\text{reg} \cdot \tfrac12 (\|E_u[B]\|_F^2 + \|E_i\|_F^2)` on the pooled tables
  (all K slices).

SSL anchors are the batch's target pairs (a user once per purchase, an item once per buyer; with
``ssl_anchors="nodes"`` each of those nodes once, the paper's sums), computed once per unique node times
its multiplicity (:mod:`~mbrec.models.mbssl.ssl`). Item candidates include the released code's all-zero
PAD row (one extra :math:`e^0` term per item anchor).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch

from mbrec.config import ConfigError
from mbrec.data.dataset import MultiBehaviorDataset
from mbrec.data.samplers import Batch, UserSpec
from mbrec.graph import SparseOperator
from mbrec.losses.nonsampling import nonsampling_loss
from mbrec.models.base import Recommender, register
from mbrec.models.mbssl.encoder import BehaviorAwareEncoder, EncoderOutput
from mbrec.models.mbssl.ssl import Anchors, draw_target_view, node_contrast
from mbrec.models.mbssl.swing import ragged_arange, swing_false_negatives


@dataclass
class MBSSLConfig:
    """MBSSL hyper-parameters (defaults: the released code = its Beibei settings).

    * ``neg_weights``: c⁻ = w_k per behavior (one value = all behaviors); ``rec_weights``: λ_k per
      behavior; ``reg``: decay of the L2 term on pooled embeddings.
    * ``ssl_anchors``: ``pairs`` (code: a user once per purchase, an item once per buyer in the batch) or
      ``nodes`` (paper Eqs. 7–9: every such node once).
    * ``tau``: SSL temperature; ``similarity``: φ of the SSL logits, ``cosine`` (code) or the raw inner
      product ``dot`` (paper Eqs. 7–9); ``inter_weights``: μ per aux behavior (one value = all);
      ``intra_weight``: γ; ``use_inter`` / ``use_intra``: the "w/o SSL_inter" / "w/o SSL_intra" ablations.
    * ``aug_type``: ``node`` dropout (code), ``edge`` dropout (paper) or ``walk``; ``aug_ratio``: ρ.
    * ``swing_alpha``: α; ``fn_users`` / ``fn_items``: N of the false-negative rule; ``fn_mode``:
      ``zero_logit`` (code), ``remove`` (paper) or ``none``; ``sim_behaviors``: swing on the ``target``
      graph (matches the shipped files) or the ``mean`` over all behaviors (paper); ``swing_cache``:
      keep the false-negative sets in the disk cache.
    * ``pool``: ``code`` (L+1 layer terms) or ``paper`` (Eq. 5, L terms); ``cdm``: cross-behavior
      attention ("w/o CDM" when false).
    * ``aux_behaviors``: behaviors contrasted with the target (default: all others).
    * ``label_quantile``: label lists are cut at this quantile of their lengths.
    """

    dim: int = 64
    layers: int = 4
    attention_dim: int = 16
    dropout: float = 0.3
    pool: Literal["code", "paper"] = "code"
    cdm: bool = True
    neg_weights: list[float] = field(default_factory=lambda: [0.1])
    rec_weights: list[float] = field(default_factory=lambda: [0.0, 5.0 / 6.0, 1.0 / 6.0])
    reg: float = 10.0
    tau: float = 0.5
    similarity: Literal["cosine", "dot"] = "cosine"
    ssl_anchors: Literal["pairs", "nodes"] = "pairs"
    inter_weights: list[float] = field(default_factory=lambda: [1.0])
    intra_weight: float = 1.0
    use_inter: bool = True
    use_intra: bool = True
    aug_type: Literal["node", "edge", "walk"] = "node"
    aug_ratio: float = 0.5
    swing_alpha: float = 0.5
    fn_users: int = 10
    fn_items: int = 10
    fn_mode: Literal["zero_logit", "remove", "none"] = "zero_logit"
    sim_behaviors: Literal["target", "mean"] = "target"
    swing_cache: bool = True
    aux_behaviors: list[str] | None = None
    label_quantile: float = 0.9999

    def validate(self) -> None:
        if min(self.dim, self.layers, self.attention_dim, self.fn_users, self.fn_items) < 1:
            raise ConfigError("params: dim, layers, attention_dim, fn_users and fn_items must be >= 1")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.aug_ratio < 1.0:
            raise ConfigError("params.dropout and params.aug_ratio must be in [0, 1)")
        if self.tau <= 0:
            raise ConfigError("params.tau must be > 0")
        if not 0.0 < self.label_quantile <= 1.0:
            raise ConfigError("params.label_quantile must be in (0, 1]")


@dataclass(frozen=True)
class LabelLists:
    """Each user's training items of one behavior, truncated to the first ``cap`` (CSR arrays)."""

    indptr: np.ndarray
    indices: np.ndarray
    cap: int

    @classmethod
    def build(cls, interactions: sp.csr_matrix, quantile: float) -> LabelLists:
        """``cap`` = the length at rank ⌊quantile · #users with a list⌋ (1-based) of the sorted lengths."""
        mat = sp.csr_matrix(interactions)
        lengths = np.diff(mat.indptr)
        present = np.sort(lengths[lengths > 0])
        rank = max(int(np.floor(quantile * len(present) + 1e-9)), 1)
        cap = int(present[rank - 1]) if len(present) else 0
        kept = np.minimum(lengths, cap)
        indices = mat.indices[ragged_arange(mat.indptr[:-1], kept)].astype(np.int64)
        return cls(np.concatenate([[0], np.cumsum(kept)]).astype(np.int64), indices, cap)

    def pairs(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(position in users, item)`` for every kept label of ``users``, both ``[P]``."""
        counts = self.indptr[users + 1] - self.indptr[users]
        rows = np.repeat(np.arange(len(users), dtype=np.int64), counts)
        return rows, self.indices[ragged_arange(self.indptr[users], counts)]


def _per_behavior(values: list[float], names: list[str], key: str) -> list[float]:
    if len(values) == 1:
        return list(values) * len(names)
    if len(values) != len(names):
        raise ConfigError(f"params.{key}: expected 1 or {len(names)} values ({', '.join(names)}), "
                          f"got {len(values)}")
    return list(values)


@register("mbssl")
class MBSSL(Recommender):
    """Multi-behavior self-supervised learning (module docstring); HMG is the trainer's ``hmg`` plug-in."""

    Config = MBSSLConfig

    def __init__(self, dataset: MultiBehaviorDataset, config: MBSSLConfig, device="cpu") -> None:
        super().__init__(dataset, config, device)
        c = config
        self.target_index = len(self.behaviors) - 1
        if len(c.rec_weights) != len(self.behaviors):
            raise ConfigError(f"params.rec_weights: expected {len(self.behaviors)} values, "
                              f"got {len(c.rec_weights)}")
        self.rec_weights = list(c.rec_weights)
        self.neg_weights = _per_behavior(c.neg_weights, self.behaviors, "neg_weights")
        aux = list(c.aux_behaviors) if c.aux_behaviors is not None else self.behaviors[:-1]
        unknown = [b for b in aux if b not in self.behaviors[:-1]]
        if unknown:
            raise ConfigError(f"params.aux_behaviors: {unknown[0]!r} is not an auxiliary behavior "
                              f"of {self.behaviors}")
        self.aux_indices = [self.behaviors.index(b) for b in aux]
        self.inter_weights = _per_behavior(c.inter_weights, aux, "inter_weights")
        mats = dataset.matrices()
        self.graphs = [SparseOperator.from_interactions(mat, "symmetric", self.device_) for mat in mats]
        self.target_train = dataset.target_train
        self.labels = [LabelLists.build(m, c.label_quantile) for m in mats]
        self.encoder = BehaviorAwareEncoder(self.n_users, self.n_items, len(self.behaviors), c.dim, c.layers,
                                            c.attention_dim, c.dropout, c.pool, c.cdm)
        self.user_false_negatives = self.item_false_negatives = None
        if c.use_inter and c.fn_mode != "none" and self.aux_indices:
            sim_graphs = [dataset.target_train] if c.sim_behaviors == "target" else mats
            self.user_false_negatives = swing_false_negatives(sim_graphs, "user", c.fn_users, c.swing_alpha,
                                                              use_cache=c.swing_cache)
            self.item_false_negatives = swing_false_negatives(sim_graphs, "item", c.fn_items, c.swing_alpha,
                                                              use_cache=c.swing_cache)
        self.batch_spec = UserSpec(users="target", drop_last=True)
        self._views: list[list[SparseOperator]] | None = None
        self._score_cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def reset_parameters(self) -> None:
        self.encoder.reset_parameters()

    # ------------------------------------------------------------------ views and caches
    def prepare_epoch(self, epoch: int) -> None:
        """Draw this epoch's two augmented target graphs (torch's global RNG)."""
        if self.config.use_intra:
            self._views = [draw_target_view(self.target_train, self.config.aug_type, self.config.aug_ratio,
                                            self.config.layers, self.device_) for _ in range(2)]

    def invalidate_cache(self) -> None:
        self._score_cache = None

    def encode(self, with_views: bool) -> EncoderOutput:
        """Pass 0 on the full graphs, plus the two view passes when ``with_views``."""
        if with_views and self._views is None:
            self.prepare_epoch(0)
        return self.encoder(self.graphs, self._views if with_views else ())

    # ------------------------------------------------------------------ losses
    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        c, m, t = self.config, self.n_users, self.target_index
        # host-side index work first: on a GPU it then overlaps nothing it would have to wait for
        user_ids = batch.users.cpu().numpy()
        users = batch.users.to(self.device_)
        labels = {k: tuple(torch.from_numpy(a).to(self.device_) for a in self.labels[k].pairs(user_ids))
                  for k, lam in enumerate(self.rec_weights) if lam != 0.0}
        rows, items = self.labels[t].pairs(user_ids)                           # the batch's target pairs
        counted = c.ssl_anchors == "pairs"
        user_anchors = Anchors.from_occurrences(user_ids[rows], self.user_false_negatives, self.device_, counted)
        item_anchors = Anchors.from_occurrences(items, self.item_false_negatives, self.device_, counted)

        out = self.encode(with_views=c.use_intra)
        table, h = out.nodes[0], out.behaviors
        user_table, item_table = table[:m], table[m:]                               # [M, K, d], [N, K, d]
        batch_users = user_table.index_select(0, users)                             # [B, K, d]
        rec = torch.zeros((), device=self.device_)
        for k, (label_rows, label_items) in labels.items():
            rec = rec + self.rec_weights[k] * nonsampling_loss(batch_users[:, k], item_table[:, k], h[k],
                                                               label_rows, label_items, self.neg_weights[k])
        losses = {"rec": rec}

        pad = item_table.new_zeros(1, item_table.shape[-1])
        if c.use_intra:
            view1, view2 = out.nodes[1], out.nodes[2]
            losses["aux/intra"] = c.intra_weight * (
                node_contrast(view1[:m, t], view2[:m, t], user_anchors, c.tau, "none", c.similarity)
                + node_contrast(view1[m:, t], torch.cat([view2[m:, t], pad]), item_anchors, c.tau, "none",
                                c.similarity))
        if c.use_inter:
            for k, mu in zip(self.aux_indices, self.inter_weights, strict=True):
                losses[f"aux/inter/{self.behaviors[k]}"] = mu * (
                    node_contrast(user_table[:, t], user_table[:, k], user_anchors, c.tau, c.fn_mode, c.similarity)
                    + node_contrast(item_table[:, t], torch.cat([item_table[:, k], pad]), item_anchors,
                                    c.tau, c.fn_mode, c.similarity))
        losses["reg/l2"] = c.reg * 0.5 * (batch_users.pow(2).sum() + item_table.pow(2).sum())
        return losses

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        """:math:`\\hat x^K_{ui} = \\langle E_u[u,K] \\odot h_K, E_i[i,K] \\rangle`, all items: ``[B, N]``."""
        if self._score_cache is None or self.training:
            out = self.encode(with_views=False)
            t, table = self.target_index, out.nodes[0]
            self._score_cache = (table[: self.n_users, t] * out.behaviors[t], table[self.n_users:, t])
        user_part, item_part = self._score_cache
        return user_part[users] @ item_part.T
