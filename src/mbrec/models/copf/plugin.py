r"""DFME as the prediction module of another model (COPF Table 6: "+DFME" on a backbone).

``dfme`` wraps any registered model whose :meth:`~mbrec.models.base.Recommender.behavior_tables` gives
one table pair :math:`(EU_k\ [M, d],\ EV_k\ [N, d])` per behavior (``params.backbone``; its own
hyper-parameters in ``params.backbone_params``) and trains those tables with COPF's recipe instead of the
backbone's own: the DFME head on the tables, per-task BPR on COPF's sampler, the contrastive loss
between the target's and each auxiliary behavior's tables, and

.. math::  L_2 = \mu \Big(\sum_{P \in \text{backbone}} \lVert P\rVert^2 + \lVert W_g\rVert^2
           + \sum_l \lVert W_l\rVert^2\Big)

over **every** backbone parameter (COPF regularises its whole encoder, which is its two ego tables)
[D]. ``backbone_reg`` weighs the backbone's part apart,
:math:`\mu_b \sum_{P} \lVert P\rVert^2 + \mu(\lVert W_g\rVert^2 + \sum_l \lVert W_l\rVert^2)`; unset,
:math:`\mu_b = \mu`, and ``backbone_reg = 0`` leaves the backbone (an MB-CGCN warm start, say) out of the L2
term. The backbone's own losses, sampler and scorer are not used; its constructor runs as usual (an MB-CGCN
warm start included). Scoring: DFME's target task on the backbone's tables, exactly.

Backbones with tables: ``lightgcn_m`` (one table pair for every behavior; ``dfme`` on it is the
``lightgcn_m_dfme`` model), ``crgcn`` (cascade outputs), ``mbcgcn`` (block outputs), ``pkef`` (cascade
outputs; its own PME head is left unused).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mbrec.config import ConfigError, from_dict
from mbrec.data.dataset import MultiBehaviorDataset
from mbrec.graph import SparseOperator
from mbrec.models.base import Recommender, model_class, register
from mbrec.models.copf.dfme import TablePair
from mbrec.models.copf.model import MultiTaskModel, TaskConfig, squared_norm


def _backbone_class(name: str) -> type[Recommender]:
    try:
        cls = model_class(name)
    except ConfigError as err:
        raise ConfigError(f"params.backbone: {err}") from None
    if issubclass(cls, MultiTaskModel) or not cls.provides_behavior_tables():
        raise ConfigError(f"params.backbone: model {name!r} gives no per-behavior tables for DFME "
                          f"(use one of {', '.join(backbones_with_tables())})")
    return cls


def backbones_with_tables() -> list[str]:
    """Registered models ``dfme`` can wrap."""
    from mbrec.models.base import available_models

    return [name for name in available_models()
            if not issubclass(model_class(name), MultiTaskModel) and model_class(name).provides_behavior_tables()]


@dataclass
class DFMEPluginConfig(TaskConfig):
    """DFME/COPF settings (:class:`~mbrec.models.copf.model.TaskConfig`) plus the backbone.

    ``backbone``: a registered model name; ``backbone_params``: its ``params`` (``dim`` defaults to
    this config's ``dim`` and must equal it); ``backbone_reg``: μ of the backbone's parameters in the
    L2 term (None: ``reg``, as the head's weights).
    """

    backbone: str = "lightgcn_m"
    backbone_params: dict[str, Any] = field(default_factory=dict)
    backbone_reg: float | None = None

    def backbone_config(self) -> Any:
        """The backbone's validated ``Config`` (``dim`` filled in)."""
        cls = _backbone_class(self.backbone)
        config = from_dict(cls.Config, {"dim": self.dim, **self.backbone_params}, "params.backbone_params")
        if getattr(config, "dim", self.dim) != self.dim:
            raise ConfigError(f"params.backbone_params.dim={config.dim} differs from params.dim={self.dim}: "
                              "DFME's experts need the backbone's table width")
        return config

    def validate(self) -> None:
        if self.backbone_reg is not None and self.backbone_reg < 0:
            raise ConfigError(f"params.backbone_reg must be >= 0, got {self.backbone_reg}")
        self.backbone_config()


@register("dfme")
class DFMEOnBackbone(MultiTaskModel):
    """A backbone's per-behavior tables scored and trained by DFME (module docstring)."""

    Config = DFMEPluginConfig

    def __init__(self, dataset: MultiBehaviorDataset, config: DFMEPluginConfig, device="cpu") -> None:
        super().__init__(dataset, config, device, ego_tables=False)
        try:
            self.backbone = _backbone_class(config.backbone)(dataset, config.backbone_config(), device)
        except ConfigError as err:            # the backbone names its keys params.<key>: say where they are
            message = str(err)
            if message.startswith("params.") and not message.startswith("params.backbone"):
                message = "params.backbone_params." + message[len("params."):]
            raise ConfigError(message) from None
        self.head = self.make_dfme()
        self.head.reset_parameters()          # the backbone keeps its own initialisation (and warm start)

    @classmethod
    def without_warm_start(cls, config: DFMEPluginConfig) -> DFMEPluginConfig:
        """Switch off the backbone's warm start (its ``warm_start_fields`` set to 0 in ``backbone_params``)."""
        off = dict.fromkeys(_backbone_class(config.backbone).warm_start_fields, 0)
        return dataclasses.replace(config, backbone_params={**config.backbone_params, **off})

    def encoder_weights(self) -> list[nn.Parameter]:
        return list(self.backbone.parameters())

    def l2_term(self) -> torch.Tensor:
        """μ_b Σ‖backbone parameter‖² + μ Σ‖head W‖² (module docstring; μ_b = ``backbone_reg``, else μ)."""
        c = self.config
        head = c.reg * squared_norm(self.head.regularized())
        backbone_reg = c.reg if c.backbone_reg is None else c.backbone_reg
        if backbone_reg == 0:
            return head
        return head + backbone_reg * squared_norm(self.encoder_weights())

    def reset_parameters(self) -> None:
        self.backbone.reset_parameters()
        self.head.reset_parameters()

    def graph_operators(self) -> list[SparseOperator]:
        return self.bank.operators()

    def encode(self) -> list[TablePair]:
        return self.backbone.behavior_tables()
