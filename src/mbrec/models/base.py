"""The model contract and the model registry.

Every model is a :class:`Recommender`:

* ``losses(batch) -> dict[str, Tensor]``: named scalar losses of one training batch. Names follow
  one convention the trainer relies on: ``aux/...`` are auxiliary task losses (e.g. contrastive),
  ``reg/...`` are regularisers (added after any gradient manipulation, never manipulated), every other
  name is a target-task loss. The trainer sums them or hands them to a gradient-manipulation plug-in.
* ``score_users(users) -> Tensor[B, N]``: scores of all items for the target behavior (evaluation calls
  it under ``torch.no_grad()`` and in ``eval()`` mode).
* ``prepare_epoch(epoch)``: optional hook before each training epoch (redraw views, refresh caches).
* ``batch_spec``: what batches the model trains on (:mod:`mbrec.data.samplers`).
* ``behavior_tables()``: optional; one ``(users [M, d], items [N, d])`` table pair per behavior, for
  prediction plug-ins that replace a model's own scorer (DFME, :mod:`mbrec.models.copf.plugin`).

Models are built from an in-memory dataset and a typed ``Config`` dataclass; they never read files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from mbrec.config import ConfigError, from_dict
from mbrec.data.dataset import MultiBehaviorDataset
from mbrec.data.samplers import Batch, BPRSpec, UserSpec

AUX_PREFIX = "aux/"
REG_PREFIX = "reg/"


def loss_role(name: str) -> str:
    """``"target"``, ``"aux"`` or ``"reg"`` for a loss name (see the module docstring)."""
    if name.startswith(AUX_PREFIX):
        return "aux"
    if name.startswith(REG_PREFIX):
        return "reg"
    return "target"


@dataclass
class NoConfig:
    """For models without hyper-parameters."""


class Recommender(nn.Module):
    """Base class of all models (see the module docstring for the contract)."""

    Config: ClassVar[type] = NoConfig
    name: ClassVar[str] = "recommender"
    #: integer config fields that trigger an in-constructor warm start (e.g. MF pretraining); they are
    #: set to 0 when a saved state dict will replace the weights anyway (resume, evaluate, recommend).
    warm_start_fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, dataset: MultiBehaviorDataset, config: Any = None,
                 device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.config = config if config is not None else self.Config()
        self.n_users = dataset.n_users
        self.n_items = dataset.n_items
        self.behaviors = list(dataset.behaviors)
        self.device_ = torch.device(device)
        self.batch_spec: BPRSpec | UserSpec = BPRSpec(behaviors=(dataset.target,))
        self._eval_cache: Any = None

    def losses(self, batch: Batch) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def prepare_epoch(self, epoch: int) -> None:
        """Called before every training epoch; default: nothing."""

    def behavior_tables(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-behavior ``(users [M, d], items [N, d])`` tables (optional, module docstring)."""
        raise NotImplementedError(f"model {self.name!r} gives no per-behavior tables")

    @classmethod
    def provides_behavior_tables(cls) -> bool:
        return cls.behavior_tables is not Recommender.behavior_tables

    @classmethod
    def without_warm_start(cls, config: Any) -> Any:
        """``config`` with the in-constructor warm starts switched off (``warm_start_fields`` set to 0)."""
        for field_name in cls.warm_start_fields:
            setattr(config, field_name, 0)
        return config

    def train(self, mode: bool = True) -> Recommender:
        self.invalidate_cache()
        return super().train(mode)

    def invalidate_cache(self) -> None:
        """Drop cached propagated tables (called when switching train/eval mode)."""
        self._eval_cache = None

    def eval_cached(self, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per evaluation pass: cached in eval mode until :meth:`invalidate_cache`,
        recomputed on every call in training mode (parameters change between calls)."""
        if self._eval_cache is None or self.training:
            self._eval_cache = compute()
        return self._eval_cache


# ------------------------------------------------------------------------------------ registry
_REGISTRY: dict[str, type[Recommender]] = {}


def register(name: str) -> Callable[[type[Recommender]], type[Recommender]]:
    """Class decorator: make a model buildable by ``name``."""

    def wrap(cls: type[Recommender]) -> type[Recommender]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model name {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def available_models() -> list[str]:
    _import_all()
    return sorted(_REGISTRY)


def model_class(name: str) -> type[Recommender]:
    _import_all()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r} (available: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def build_model(name: str, dataset: MultiBehaviorDataset, params: dict | Any | None = None,
                device: torch.device | str = "cpu", skip_warm_start: bool = False) -> Recommender:
    """Validate ``params`` against the model's ``Config`` and build it on ``device``.

    ``skip_warm_start``: the caller will load a state dict, so in-constructor warm starts are skipped.
    """
    cls = model_class(name)
    config = from_dict(cls.Config, params or {}, prefix="params")
    if skip_warm_start:
        config = cls.without_warm_start(config)
    model = cls(dataset, config, device=device)
    return model.to(device)


def _import_all() -> None:
    import importlib
    import pkgutil

    import mbrec.models as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name != "base":
            importlib.import_module(f"mbrec.models.{info.name}")
