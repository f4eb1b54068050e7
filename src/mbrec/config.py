"""Typed, validated run configuration.

A run is described by a :class:`RunConfig` (YAML file + ``--set key=value`` overrides). Every section
is a dataclass; :func:`from_dict` checks types and rejects unknown keys with a one-line
:class:`ConfigError`. Model hyper-parameters live in each model's own ``Config`` dataclass and are
validated against it when the model is built (``params`` section).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """An invalid configuration value or key (one-line message naming the key)."""


# ------------------------------------------------------------------------------------ generic checks
def _check(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        if isinstance(value, (int, float, str)) and not isinstance(value, bool) and origin is list:
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        inner = args[0] if args else Any
        return origin(_check(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {str(k): _check(v, args[1] if args else Any, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def from_dict(cls: type, data: dict | None, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, checking types; unknown keys are errors."""
    data = {} if data is None else data
    if dataclasses.is_dataclass(data):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or cls.__name__}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown key {where}{unknown[0]} (known: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _check(value, hints[name], f"{prefix}.{name}" if prefix else name)
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def to_dict(obj: Any) -> Any:
    """Plain-data form of a (nested) dataclass (for YAML/JSON records)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=0.01"`` -> (["train", "lr"], 0.01); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"--set {text!r}: empty key")
    return key.strip().split("."), yaml.safe_load(raw)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.sub=value`` overrides to a nested mapping (in a copy)."""
    import copy

    out = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text!r}: {part} is not a section")
        node[path[-1]] = value
    return out


# ------------------------------------------------------------------------------------ sections
@dataclass
class DataConfig:
    """Where the data comes from.

    ``validation``: ``none`` uses the dataset as it is; ``holdout`` moves one random target training
    item per user (with >= 2) into a validation split (seeded by ``validation_seed``).
    ``noise_ratio`` > 0 adds that share of random new pairs to every auxiliary behavior (noise-robustness
    study, MBSSL Fig. 4; :func:`mbrec.eval.noise.inject_noise`, seeded by ``noise_seed``).
    """

    root: str | None = None
    validation: Literal["none", "holdout"] = "none"
    validation_seed: int = 0
    mask_behaviors: list[str] = field(default_factory=list)
    noise_ratio: float = 0.0
    noise_seed: int = 0

    def validate(self) -> None:
        if not 0.0 <= self.noise_ratio <= 10.0:
            raise ConfigError("data.noise_ratio must be in [0, 10]")


@dataclass
class HMGConfig:
    """Gradient manipulation (MBSSL's HMG) settings; ``strategy: none`` sums the losses.

    ``scope``: ``tensor`` = every parameter tensor on its own (released code), ``global`` = one θ (the paper's
    Algorithm 1); ``beta: 0`` = current instead of moving norms (the paper's Eq. 14); ``projection``:
    ``conflict`` (released code) or ``always`` (Algorithm 1 line 6); ``scale_norm``: ``raw`` (released code) or
    ``projected`` (Algorithm 1 line 7: the norm after the projection). :mod:`mbrec.train.hmg` has the equations.

    ``task_threads``: how many per-task backwards run at once, each on one intra-op thread (CPU only;
    ``null`` = torch's thread count, 1 = one after the other with every thread). Same gradients either way.
    """

    strategy: Literal["none", "mbssl", "A", "B", "C"] = "none"
    relax: float = 0.7
    beta: float = 0.9
    task_threads: int | None = None
    scope: Literal["tensor", "global"] = "tensor"
    projection: Literal["conflict", "always"] = "conflict"
    scale_norm: Literal["raw", "projected"] = "raw"


@dataclass
class TrainConfig:
    """Optimisation and evaluation schedule.

    * ``lr_schedule``: ``constant``; ``staircase`` = lr · decay^floor(step / decay_steps) per optimiser
      step (COPF; ``decay_steps`` defaults to M // batch_size); ``step`` = lr · decay^floor(epoch / decay_epochs).
    * ``eval_schedule``: ``every`` = after epochs ``eval_every-1, 2*eval_every-1, ...`` and the last;
      ``copf`` = after 0-based epoch e iff e % 3 == 0 and (e > 90 or e < 2), and after the last (copf.md §1.6).
    * ``optimizer``: Adam (β 0.9/0.999, ε 1e-8) or Adagrad (EHCF's release: lr 0.05, accumulator 1e-8).
    * ``protocol``: ``paper`` selects the best **test** evaluation (what the papers report);
      ``validation`` selects on the validation split and reports the test metrics of that evaluation.
    * ``patience``: early stopping after this many evaluations without improvement (None = off).
    * ``monitor_every``: also evaluate after every ``monitor_every``-th epoch that the schedule skips
      (0 = off). These *monitor* evaluations show the learning curve of long runs (e.g. COPF's schedule
      evaluates only from epoch 93 on); they never take part in model selection or early stopping, so
      the protocols' numbers are the same with or without them.
    """

    epochs: int = 100
    batch_size: int = 256
    optimizer: Literal["adam", "adagrad"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    adagrad_initial_accumulator: float = 0.0
    lr_schedule: Literal["constant", "staircase", "step"] = "constant"
    lr_decay: float = 0.96
    decay_steps: int | None = None
    decay_epochs: int = 10
    eval_schedule: Literal["every", "copf"] = "every"
    eval_every: int = 5
    protocol: Literal["paper", "validation"] = "validation"
    select_metric: str = "HR@10"
    patience: int | None = None
    monitor_every: int = 0
    ks: list[int] = field(default_factory=lambda: [10, 50])
    eval_batch_size: int = 2048
    seed: int = 42
    device: str = "auto"
    threads: int | None = None
    hmg: HMGConfig = field(default_factory=HMGConfig)
    progress: bool = True

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError("train.epochs must be >= 1")
        if self.batch_size < 1:
            raise ConfigError("train.batch_size must be >= 1")
        if self.lr <= 0:
            raise ConfigError("train.lr must be > 0")
        if self.eval_every < 1:
            raise ConfigError("train.eval_every must be >= 1")
        if self.monitor_every < 0:
            raise ConfigError("train.monitor_every must be >= 0 (0 = off)")
        if self.hmg.task_threads is not None and self.hmg.task_threads < 1:
            raise ConfigError("train.hmg.task_threads must be >= 1 (or null: torch's thread count)")
        if not self.ks or min(self.ks) < 1:
            raise ConfigError("train.ks must be a non-empty list of positive integers")
        name, _, k = self.select_metric.partition("@")
        if self.select_metric != "MRR" and (name not in {"HR", "Recall", "NDCG", "Precision"}
                                            or not k.isdigit() or int(k) not in self.ks):
            raise ConfigError(f"train.select_metric {self.select_metric!r}: use MRR or e.g. HR@10 or NDCG@10 "
                              f"with K in train.ks {self.ks}")


@dataclass
class RunConfig:
    """One training run: model name + its params, dataset, data, train, and where to write."""

    model: str = "lightgcn"
    dataset: str = "synthetic"
    params: dict[str, Any] = field(default_factory=dict)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str = "runs"
    results_dir: str | None = None
    name: str | None = None

    def run_name(self) -> str:
        return self.name or f"{self.model}-{self.dataset.replace('/', '_').replace(':', '-')}-s{self.train.seed}"


def read_yaml_mapping(path: str | Path) -> dict:
    """A YAML file whose top level is a mapping; problems become one-line ConfigErrors (file[:line])."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: invalid YAML ({getattr(e, 'problem', e)})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


def load_run_config(path: str | Path | None = None, overrides: list[str] | None = None,
                    base: dict | None = None) -> RunConfig:
    """Read a YAML file (optional), apply ``base`` keys and ``--set`` overrides, validate."""
    data: dict = read_yaml_mapping(path) if path is not None else {}
    for key, value in (base or {}).items():
        if value is not None:
            data[key] = value
    data = apply_overrides(data, overrides or [])
    return from_dict(RunConfig, data)
