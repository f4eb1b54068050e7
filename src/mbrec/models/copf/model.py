r"""COPF (COGCN + DFME, copf.md) on the model contract, every switch of the paper's Tables 3-5, and
LightGCN-M + DFME (Table 6).

One training step (batches: every user once per epoch; per behavior ``min(40, deg)`` positives with
replacement and negatives rejected against the same behavior, copf.md §1.4):

1. ``tables = encode()``: K pairs ``(EU[k] [M, d], EV[k] [N, d])`` — COGCN (:mod:`.cogcn`) or LightGCN-M;
2. ``head.prepare_pairs(tables, {task: its pairs})``: fitting tables etc., once, for the active tasks
   (``λ_k = 0`` skipped; DFME computes its last fitting layer only on the rows the pairs read);
3. losses: ``bpr/<behavior>`` = :math:`3\lambda_k \cdot \mathrm{mean}\,\mathrm{softplus}(\hat y^k_-
   - \hat y^k_+)`; ``aux/cl/<behavior>`` = the contrastive loss of every auxiliary behavior
   (:mod:`.contrastive`, also for ``λ_k = 0``; omitted when ``cl_weight = 0``); ``reg/l2`` =
   :math:`\mu(\lVert E_u\rVert^2 + \lVert E_v\rVert^2 + \sum \lVert W\rVert^2)` over full tables, W = the
   head's weight matrices (DFME: ``W_g``, ``W_l``; never R or biases); PME adds ``bpr/<k>_without_<j>``.
   (``E_u, E_v`` = :meth:`MultiTaskModel.encoder_weights`; the ``dfme`` plug-in, :mod:`.plugin`, puts every
   parameter of its backbone there.)

Evaluation: ``score_users`` encodes once (cached until ``invalidate_cache``) and scores the target task
against all items exactly (:func:`.dfme.expert_all_scores`).

Switches of ``copf`` (``COPFConfig``): ``pre``/``graph``/``post``/``cogcn_adj`` (encoder, §3.3),
``decoder`` (dfme, bilinear, dot, sb, mmoe, ple, mesi, pme), ``agg`` (only with ``decoder=dfme``: gate =
DFME; none/sum/linear/vanilla/projection = Table 4), ``forward``/``stop_grad`` (only with DFME's gate),
``cl_weight``.

``variant`` presets (copf.md §8.2; plus Table 4/5 names) set switches; **the variant wins over defaults**,
and an explicit non-default value of a switch that the variant sets to something else is a ConfigError:

=========  =======================================  =========  ===========================================
variant    switches                                 variant    switches
=========  =======================================  =========  ===========================================
wo_cogcn   pre=none, graph=own                      wo_con     cl_weight=0
copf_p     pre=none                                 wo_for     forward=plain
copf_a     graph=all                                wo_back    stop_grad=none
copf_d     post=merged, decoder=dot, cl_weight=0    all_sg     stop_grad=all
copf_f     pre=none, graph=all                      wo_fit     forward=plain, stop_grad=none
copf_c     pre=strict, graph=own                    agg_<a>    agg=<a>: none, sum, linear, vanilla,
copf_b     pre=strict                                          projection (Table 4; CL kept)
copf_h     graph=own                                cogcn_<h>  decoder=<h>, cl_weight=0: sb, mmoe, ple,
wo_dfme    decoder=bilinear, cl_weight=0                       bilinear, mesi, pme (Table 5)
=========  =======================================  =========  ===========================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from mbrec.config import ConfigError
from mbrec.data.dataset import MultiBehaviorDataset
from mbrec.data.samplers import Batch, BPRSpec
from mbrec.graph import SparseOperator, union
from mbrec.losses import bpr_loss
from mbrec.models.base import Recommender, register
from mbrec.models.copf.cogcn import (
    Adjacency,
    GraphBank,
    GraphScope,
    Post,
    Pre,
    cogcn_propagate,
    encoder_graphs,
    split_tables,
)
from mbrec.models.copf.contrastive import ContrastMode, contrastive_losses
from mbrec.models.copf.dfme import DFME, Forward, PredictionHead, StopGrad, TablePair
from mbrec.models.copf.heads import (
    BilinearHead,
    LinearHead,
    MESIHead,
    OwnExpertHead,
    PMEHead,
    ProjectionHead,
    SharedInputHead,
    SumHead,
    VanillaFusionHead,
)
from mbrec.models.lightgcn import propagate_mean

Decoder = Literal["dfme", "bilinear", "dot", "sb", "mmoe", "ple", "mesi", "pme"]
Aggregation = Literal["gate", "none", "sum", "linear", "vanilla", "projection"]
Variant = Literal["wo_cogcn", "copf_p", "copf_a", "copf_d", "copf_f", "copf_c", "copf_b", "copf_h", "wo_dfme",
                  "wo_con", "wo_for", "wo_back", "all_sg", "wo_fit", "agg_none", "agg_sum", "agg_linear",
                  "agg_vanilla", "agg_projection", "cogcn_sb", "cogcn_mmoe", "cogcn_ple", "cogcn_bilinear",
                  "cogcn_mesi", "cogcn_pme"]

VARIANTS: dict[str, dict[str, object]] = {
    "wo_cogcn": {"pre": "none", "graph": "own"},
    "copf_p": {"pre": "none"},
    "copf_a": {"graph": "all"},
    "copf_d": {"post": "merged", "decoder": "dot", "cl_weight": 0.0},
    "copf_f": {"pre": "none", "graph": "all"},
    "copf_c": {"pre": "strict", "graph": "own"},
    "copf_b": {"pre": "strict"},
    "copf_h": {"graph": "own"},
    "wo_dfme": {"decoder": "bilinear", "cl_weight": 0.0},
    "wo_con": {"cl_weight": 0.0},
    "wo_for": {"forward": "plain"},
    "wo_back": {"stop_grad": "none"},
    "all_sg": {"stop_grad": "all"},
    "wo_fit": {"forward": "plain", "stop_grad": "none"},
    **{f"agg_{a}": {"agg": a} for a in ("none", "sum", "linear", "vanilla", "projection")},
    **{f"cogcn_{h}": {"decoder": h, "cl_weight": 0.0}
       for h in ("sb", "mmoe", "ple", "bilinear", "mesi", "pme")},
}


@dataclass
class TaskConfig:
    """Settings shared by every model of this module (defaults = the released COPF code, copf.md §6.1).

    ``fit_layers``: DFME layers per task (``gnn_mtl_layer``; None or a short list → padded with 1).
    ``bpr_weights``: λ per behavior (default 1/K each); each task's BPR is multiplied by ``bpr_scale·λ_k``.
    ``samples_per_user``: positives per user and behavior per step (``min(S, deg)``).
    ``alpha``, ``beta``, ``fit_scale``: fitting-table scales; ``mult``: tower scale; ``tau``, ``cl_weight``
    (γ), ``cl_mode``: contrastive loss; ``reg``: μ of the full-table L2.
    """

    dim: int = 64
    fit_layers: list[int] | None = None
    bpr_weights: list[float] | None = None
    bpr_scale: float = 3.0
    samples_per_user: int = 40
    alpha: float = 0.1
    beta: float = 0.001
    fit_scale: float = 0.1
    mult: float = 300.0
    tau: float = 0.1
    cl_weight: float = 1.0
    cl_mode: ContrastMode = "both_side"
    reg: float = 0.01
    forward: Forward = "fit"
    stop_grad: StopGrad = "official"


@dataclass
class COPFConfig(TaskConfig):
    """COPF hyper-parameters and switches (module docstring); ``cogcn_layers``: ``gnn_layer`` per behavior."""

    cogcn_layers: list[int] | None = None
    pre: Pre = "cumulative"
    graph: GraphScope = "upstream"
    post: Post = "decoupled"
    cogcn_adj: Adjacency = "code"
    decoder: Decoder = "dfme"
    agg: Aggregation = "gate"
    num_experts: int = 3
    variant: Variant | None = None

    def __post_init__(self) -> None:
        if self.variant is not None:
            if self.variant not in VARIANTS:
                raise ConfigError(f"params.variant: unknown variant {self.variant!r} ({', '.join(VARIANTS)})")
            defaults = {f.name: f.default for f in dataclasses.fields(self)}
            for key, value in VARIANTS[self.variant].items():
                current = getattr(self, key)
                if current != value and current != defaults[key]:
                    raise ConfigError(f"params.{key}={current!r} conflicts with variant {self.variant!r} "
                                      f"(which sets {key}={value!r})")
                setattr(self, key, value)
        if self.agg != "gate" and self.decoder != "dfme":
            raise ConfigError(f"params.agg={self.agg!r} replaces DFME's aggregation; it needs decoder='dfme'")
        gated_dfme = (self.decoder, self.agg) == ("dfme", "gate")
        if (self.forward != "fit" or self.stop_grad != "official") and not gated_dfme:
            raise ConfigError("params.forward/stop_grad apply to DFME's gated experts only "
                              f"(decoder={self.decoder!r}, agg={self.agg!r})")


@dataclass
class LightGCNMDFMEConfig(TaskConfig):
    """LightGCN-M backbone (symmetric-normalised union graph, mean over ``layers`` + 1 tables) + DFME."""

    layers: int = 3


def squared_norm(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """:math:`\\sum_W \\lVert W\\rVert^2` over ``weights`` (the L2 term's sum; scalar tensor)."""
    return sum(w.pow(2).sum() for w in weights)


def per_behavior(values: Sequence[int] | None, n_behaviors: int, key: str) -> list[int]:
    """A per-behavior layer list: None or a shorter list is padded with 1; negative or too long: error."""
    out = list(values or [])
    if len(out) > n_behaviors or any(v < 0 for v in out):
        raise ConfigError(f"params.{key}: need at most {n_behaviors} non-negative entries, got {out}")
    return out + [1] * (n_behaviors - len(out))


class MultiTaskModel(Recommender):
    """Shared wiring: encoder tables → prediction head → per-task BPR + contrastive + L2 (see module)."""

    head: PredictionHead

    def __init__(self, dataset: MultiBehaviorDataset, config: TaskConfig, device="cpu",
                 ego_tables: bool = True) -> None:
        super().__init__(dataset, config, device)
        n = len(self.behaviors)
        weights = list(config.bpr_weights) if config.bpr_weights is not None else [1.0 / n] * n
        if len(weights) != n or any(w < 0 for w in weights):
            raise ConfigError(f"params.bpr_weights: need {n} non-negative values, got {weights}")
        self.task_weights = [config.bpr_scale * w for w in weights]
        self.fit_layers = per_behavior(config.fit_layers, n, "fit_layers")
        self.bank = GraphBank(dataset.matrices(), device=device)
        if ego_tables:                        # False: the encoder (a backbone model) holds its own tables
            self.user_emb = nn.Parameter(torch.empty(self.n_users, config.dim))
            self.item_emb = nn.Parameter(torch.empty(self.n_items, config.dim))
        self.batch_spec = BPRSpec(behaviors=tuple(self.behaviors), positives=config.samples_per_user,
                                  cap_by_degree=True, negatives_against="same", epoch="users")

    def make_dfme(self) -> DFME:
        c = self.config
        return DFME([self.bank.behavior(k) for k in range(len(self.behaviors))], dim=c.dim,
                    fit_layers=self.fit_layers, alpha=c.alpha, beta=c.beta, fit_scale=c.fit_scale,
                    mult=c.mult, stop_grad=c.stop_grad, forward=c.forward)

    def encoder_weights(self) -> list[nn.Parameter]:
        """The encoder's parameters under the L2 term (default: the ego tables ``E_u``, ``E_v``)."""
        return [self.user_emb, self.item_emb]

    def reset_parameters(self) -> None:
        for weight in self.encoder_weights():
            nn.init.xavier_uniform_(weight)
        self.head.reset_parameters()

    def graph_operators(self) -> list[SparseOperator]:
        return self.bank.operators()

    def _apply(self, fn, recurse: bool = True):
        """Move/cast the constant graphs together with the parameters (``.to``, ``.double()``)."""
        super()._apply(fn, recurse)
        for op in self.graph_operators():
            op.matrix = fn(op.matrix)
            op.transpose = op.matrix if op.symmetric else fn(op.transpose)
        return self

    def encode(self) -> list[TablePair]:
        raise NotImplementedError

    def task_pairs(self, batch: Batch) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Per task with ``λ_k > 0``: the (users, items) pairs it scores, positives first, ``[2P]`` each."""
        pairs = {}
        for k, weight in enumerate(self.task_weights):
            if weight != 0:
                t = batch.triples[self.behaviors[k]]
                pairs[k] = (torch.cat([t.users, t.users]), torch.cat([t.positives, t.negatives]))
        return pairs

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        tables = self.encode()
        pairs = self.task_pairs(batch)
        active = list(pairs)
        state = self.head.prepare_pairs(tables, pairs)
        out: dict[str, torch.Tensor] = {}
        for k in active:
            t = batch.triples[self.behaviors[k]]
            scores = self.head.pair_scores(state, k, *pairs[k])
            pos, neg = scores[: len(t)], scores[len(t):]
            out[f"bpr/{self.behaviors[k]}"] = self.task_weights[k] * bpr_loss(pos, neg)
        out.update(self.head.extra_losses(state, batch, self.task_weights))
        c = self.config
        if c.cl_weight > 0 and len(self.behaviors) > 1:
            target = batch.triples[self.behaviors[-1]]
            cl = contrastive_losses(tables, target.users, target.positives, c.tau, c.cl_mode, c.cl_weight)
            out.update({f"aux/cl/{name}": loss for name, loss in zip(self.behaviors[:-1], cl, strict=True)})
        out["reg/l2"] = self.l2_term()
        return out

    def l2_term(self) -> torch.Tensor:
        """``reg/l2`` = μ (Σ‖encoder weight‖² + Σ‖head W‖²), full tables (scalar tensor)."""
        return self.config.reg * squared_norm([*self.encoder_weights(), *self.head.regularized()])

    @torch.no_grad()
    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        target = len(self.behaviors) - 1
        prepared = self.eval_cached(lambda: self.head.prepare(self.encode(), [target]))
        return self.head.all_scores(prepared, target, users)


@register("copf")
class COPF(MultiTaskModel):
    """COPF: COGCN encoder + DFME (or an ablation head), copf.md."""

    Config = COPFConfig

    def __init__(self, dataset: MultiBehaviorDataset, config: COPFConfig, device="cpu") -> None:
        super().__init__(dataset, config, device)
        self.layers = per_behavior(config.cogcn_layers, len(self.behaviors), "cogcn_layers")
        self.encoder_ops, self.residual = encoder_graphs(self.bank, config.graph, config.cogcn_adj)
        self.head = self._make_head(dataset)
        self.reset_parameters()

    def _make_head(self, dataset: MultiBehaviorDataset) -> PredictionHead:
        c, n = self.config, len(self.behaviors)
        if c.decoder == "dfme":
            simple = {"none": lambda: OwnExpertHead(c.mult), "sum": lambda: SumHead(c.mult),
                      "linear": lambda: LinearHead(n, c.dim, c.mult),
                      "vanilla": lambda: VanillaFusionHead(c.dim, c.mult),
                      "projection": lambda: ProjectionHead(n, c.dim, c.mult)}
            return self.make_dfme() if c.agg == "gate" else simple[c.agg]()
        if c.decoder == "dot":
            return OwnExpertHead(c.mult)
        if c.decoder == "bilinear":
            return BilinearHead(n, c.dim, c.mult)
        if c.decoder == "mesi":
            return MESIHead(n, c.dim, c.mult)
        if c.decoder == "pme":
            return PMEHead(dataset.matrices(), self.behaviors, c.dim, c.mult, c.samples_per_user)
        return SharedInputHead(c.decoder, n, c.dim, c.num_experts)

    def encode(self) -> list[TablePair]:
        ego = torch.cat([self.user_emb, self.item_emb])
        stacked = cogcn_propagate(ego, self.encoder_ops, self.residual, self.layers, self.config.pre)
        return split_tables(stacked, self.n_users, self.config.post)


@register("lightgcn_m_dfme")
class LightGCNMDFME(MultiTaskModel):
    """LightGCN-M (union graph, baselines.md §1.2) giving every behavior the same table pair, + DFME."""

    Config = LightGCNMDFMEConfig

    def __init__(self, dataset: MultiBehaviorDataset, config: LightGCNMDFMEConfig, device="cpu") -> None:
        super().__init__(dataset, config, device)
        if config.layers < 0:
            raise ConfigError(f"params.layers must be >= 0, got {config.layers}")
        self.union_op = SparseOperator.from_interactions(union(dataset.matrices()), "symmetric", device)
        self.head = self.make_dfme()
        self.reset_parameters()

    def graph_operators(self) -> list[SparseOperator]:
        return [*self.bank.operators(), self.union_op]

    def encode(self) -> list[TablePair]:
        out = propagate_mean(self.union_op, torch.cat([self.user_emb, self.item_emb]), self.config.layers)
        return [(out[: self.n_users], out[self.n_users:])] * len(self.behaviors)
