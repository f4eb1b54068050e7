"""Benchmark grid files: the keys of a grid and their validation (run by :mod:`mbrec.bench.grid`).

A grid file (YAML)::

    name: taobao                          # results go to benchmarks/results/<name> unless results_dir is set
    output_dir: runs/bench                # run folders (checkpoints) of the cells
    results_dir: benchmarks/results/taobao
    parked_dir: benchmarks/parked/taobao  # parked checkpoints (mbrec.bench.parking); this is the default
    datasets: [taobao]                    # dataset specs (mbrec.data.registry.load_dataset)
    seeds: [1, 2, 3]
    set: [train.epochs=5]                 # overrides for every cell
    models:
      - {label: COPF, model: copf, config: "configs/copf_{dataset}.yaml", set: [params.layers=2]}
      - {label: MF-BPR, model: mf, datasets: [taobao]}   # no config file: model defaults + overrides
      - {label: COPF-noise0.2, model: copf, config: "configs/copf_{dataset}.yaml",
         set: [data.noise_ratio=0.2], noise_of: COPF}     # noise robustness row (mbrec.bench.analysis)
    imports: {COPF-L411: benchmarks/results/copf_taobao}   # rows another grid trained, shown in this summary
    baseline_labels: [MF-BPR]             # rows compared in the relative-gain line of the summary
    proposed_labels: [COPF]

``imports`` maps a row that another grid trains to that grid's results folder (relative to the working
directory): this grid's summary and bar charts read the row's records there and show it beside the grid's own
rows (so one table can hold a model whose reproduction has a grid of its own); ``bench run`` never runs it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mbrec.config import ConfigError, from_dict, read_yaml_mapping

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclass
class ModelEntry:
    """One row of the grid: ``label`` (unique row name), ``model`` (registry name), ``config`` (optional
    YAML run config path, may contain ``{dataset}``), ``set`` overrides, ``datasets`` (optional subset),
    ``noise_of`` (the clean row this row adds ``data.noise_ratio`` noise to: the summary reports the drop)."""

    label: str = ""
    model: str = ""
    config: str | None = None
    set: list[str] = field(default_factory=list)
    datasets: list[str] | None = None
    noise_of: str | None = None


@dataclass
class GridSpec:
    """A benchmark grid (see the module docstring for the keys)."""

    name: str = ""
    datasets: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    models: list[ModelEntry] = field(default_factory=list)
    output_dir: str = "runs"
    results_dir: str | None = None
    parked_dir: str | None = None
    set: list[str] = field(default_factory=list)
    imports: dict[str, str] = field(default_factory=dict)
    baseline_labels: list[str] = field(default_factory=list)
    proposed_labels: list[str] = field(default_factory=list)

    @property
    def results_path(self) -> Path:
        return Path(self.results_dir or f"benchmarks/results/{self.name}")

    @property
    def parked_path(self) -> Path:
        return Path(self.parked_dir or f"benchmarks/parked/{self.name}")

    @property
    def labels(self) -> list[str]:
        return [m.label for m in self.models]

    @property
    def row_labels(self) -> list[str]:
        """The summary's rows: the grid's own labels, then the imported ones."""
        return self.labels + list(self.imports)

    def validate(self) -> None:
        if not _SAFE_NAME.match(self.name):
            raise ConfigError(f"name: {self.name!r} must be a non-empty name of letters, digits and _.+-")
        for key in ("datasets", "seeds", "models"):
            values = getattr(self, key)
            if not values:
                raise ConfigError(f"{key}: at least one is required")
        for key, values in (("datasets", self.datasets), ("seeds", self.seeds), ("labels", self.labels)):
            dupes = sorted({str(v) for v in values if values.count(v) > 1})
            if dupes:
                raise ConfigError(f"{key}: {dupes[0]} appears twice")
        for i, entry in enumerate(self.models):
            if not _SAFE_NAME.match(entry.label):
                raise ConfigError(f"models[{i}].label: {entry.label!r} must be letters, digits and _.+-")
            if not entry.model:
                raise ConfigError(f"models[{i}].model: required (a registered model name)")
            unknown = [d for d in entry.datasets or [] if d not in self.datasets]
            if unknown:
                raise ConfigError(f"models[{i}].datasets: {unknown[0]!r} is not one of the grid's datasets")
            if entry.noise_of is not None and (entry.noise_of not in self.labels or entry.noise_of == entry.label):
                raise ConfigError(f"models[{i}].noise_of: {entry.noise_of!r} must be the label of another row")
        for label, folder in self.imports.items():
            if not _SAFE_NAME.match(label) or label in self.labels:
                raise ConfigError(f"imports.{label}: must be letters, digits and _.+- and not a label of this grid")
            if not folder:
                raise ConfigError(f"imports.{label}: the results folder that holds this row's records is required")
        for key in ("baseline_labels", "proposed_labels"):
            unknown = [lab for lab in getattr(self, key) if lab not in self.row_labels]
            if unknown:
                raise ConfigError(f"{key}: unknown label {unknown[0]!r}")
        both = set(self.baseline_labels) & set(self.proposed_labels)
        if both:
            raise ConfigError(f"label {sorted(both)[0]!r} is both a baseline and a proposed model")


def load_grid(path: str | Path) -> GridSpec:
    """Read and validate a grid file; problems raise a one-line :class:`ConfigError` naming the file."""
    data = read_yaml_mapping(Path(path))
    try:
        return from_dict(GridSpec, data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
