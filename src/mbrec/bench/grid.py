"""Benchmark grids: every (model entry × dataset × seed) cell trained one after another, resumably.

The grid file and its keys: :mod:`mbrec.bench.spec`.

The run config of a cell is built in this order: the entry's YAML file (``{dataset}`` in its path is the
dataset spec up to its first ``:``, so ``synthetic:tiny`` reads ``configs/copf_synthetic.yaml``; relative
paths are relative to the working directory) or an empty config when the entry has none; the grid's
``set``; the entry's ``set`` (the more specific override wins); the command line's ``--set`` (for one
invocation, e.g. ``train.threads=1`` when two grids share a machine); and finally the cell's identity, which
always comes from the grid: ``model``, ``dataset``, ``train.seed``, ``output_dir``, ``results_dir`` and
the run name ``<label>-<dataset>-s<seed>`` (``/`` and ``:`` of the spec replaced as in
:meth:`RunConfig.run_name`). Every cell's config (model params included) is validated before any cell
runs, so a typo fails in a second, not after hours of training.

Status of a cell:

* ``skipped`` — its config file does not exist (e.g. a model with no Beibei config); not an error;
* ``done`` — ``<results_dir>/<run name>.json`` exists and holds the same config: never run twice;
* ``resume`` — the run folder has a ``last.pt`` written under the same config, or a parked checkpoint of
  the same config and a later epoch exists (:mod:`mbrec.bench.parking`; it is restored first): training
  continues from it;
* ``busy`` — another process is running this cell now (it holds the lock file ``<run folder>/.lock``);
  skipped, so two ``bench run`` processes can share a grid (e.g. one per seed with ``--seeds``);
* ``run`` — anything else (a stale result or checkpoint of another config is overwritten).

Configs are compared as plain data, ignoring ``train.progress`` (display only), ``train.threads`` and
``train.hmg.task_threads`` (how many CPU threads run it), ``train.device`` and ``train.monitor_every`` (extra
evaluations outside model selection): none of them changes what a cell computes. A setting missing from an
older record or checkpoint counts as its default (:func:`comparable_config`), so adding a switch whose default
keeps the old behaviour does not turn finished cells into new ones.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mbrec.bench import parking
from mbrec.bench.spec import GridSpec, ModelEntry
from mbrec.config import ConfigError, RunConfig, apply_overrides, from_dict, read_yaml_mapping, to_dict
from mbrec.data.dataset import MultiBehaviorDataset
from mbrec.models.base import model_class
from mbrec.train.checkpoint import atomic_write_json, load_checkpoint
from mbrec.train.runner import describe_device, load_run_dataset, run_dir_of, run_training

GRID_META_FILE = "grid.json"


# ------------------------------------------------------------------------------------ cells
@dataclass
class Cell:
    """One (entry, dataset, seed) run; ``config`` is None when the cell is skipped."""

    label: str
    dataset: str
    seed: int
    name: str
    config: RunConfig | None
    skip_reason: str | None = None
    parked: Path | None = None  # where this cell's checkpoint is parked (mbrec.bench.parking)

    def describe(self) -> str:
        return f"{self.label} {self.dataset} s{self.seed}"


def cell_name(label: str, dataset: str, seed: int) -> str:
    """``<label>-<dataset>-s<seed>`` with the spec's ``/`` and ``:`` replaced like RunConfig.run_name."""
    return f"{label}-{dataset_slug(dataset)}-s{seed}"


def dataset_slug(dataset: str) -> str:
    return dataset.replace("/", "_").replace(":", "-")


def expand_grid(grid: GridSpec, only: list[str] | None = None, extra_set: list[str] | None = None,
                seeds: list[int] | None = None) -> list[Cell]:
    """All cells, dataset by dataset (consecutive cells share the loaded dataset), then entry, then seed.

    ``only`` restricts to these labels and ``seeds`` to these seeds; ``extra_set`` overrides every cell
    after the grid's and entry's ``set``. Every non-skipped cell's config is validated (model params too).
    """
    unknown = [lab for lab in only or [] if lab not in grid.labels]
    if unknown:
        raise ConfigError(f"--only: unknown label {unknown[0]!r} (grid labels: {', '.join(grid.labels)})")
    foreign = [s for s in seeds or [] if s not in grid.seeds]
    if foreign:
        raise ConfigError(f"--seeds: {foreign[0]} is not a seed of the grid ({', '.join(map(str, grid.seeds))})")
    cells = []
    for dataset in grid.datasets:
        for entry in grid.models:
            if (only and entry.label not in only) or (entry.datasets and dataset not in entry.datasets):
                continue
            path = Path(entry.config.replace("{dataset}", dataset.split(":", 1)[0])) if entry.config else None
            for seed in grid.seeds:
                if seeds and seed not in seeds:
                    continue
                name = cell_name(entry.label, dataset, seed)
                if path is not None and not path.exists():
                    cells.append(Cell(entry.label, dataset, seed, name, None, f"no config {path}"))
                    continue
                cfg = _cell_config(grid, entry, path, dataset, seed, name, extra_set or [])
                cells.append(Cell(entry.label, dataset, seed, name, cfg, parked=grid.parked_path / name))
    return cells


def _cell_config(grid: GridSpec, entry: ModelEntry, path: Path | None, dataset: str, seed: int,
                 name: str, extra_set: list[str]) -> RunConfig:
    where = f"{entry.label} on {dataset}"
    data = read_yaml_mapping(path) if path is not None else {}
    file_model = data.get("model")
    if file_model is not None and file_model != entry.model:
        raise ConfigError(f"{where}: {path} is a config of model {file_model!r}, "
                          f"the entry says {entry.model!r}")
    try:
        data = apply_overrides(data, [*grid.set, *entry.set, *extra_set])
        data.update(model=entry.model, dataset=dataset, name=name, output_dir=grid.output_dir,
                    results_dir=str(grid.results_path))
        data.setdefault("train", {})
        if not isinstance(data["train"], dict):
            raise ConfigError("train: expected a mapping")
        data["train"]["seed"] = seed
        cfg = from_dict(RunConfig, data)
        from_dict(model_class(cfg.model).Config, cfg.params, "params")
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return cfg


SCHEDULING_KEYS = ("train.progress", "train.threads", "train.monitor_every", "train.device", "train.hmg.task_threads")


def comparable_config(config: dict) -> dict:
    """A run config as plain JSON data, normalised so that equal computations compare equal:

    * the :data:`SCHEDULING_KEYS` are dropped (they change how a run is shown, scheduled, watched and where it
      runs, not what it computes; a cell parked on a CPU machine resumes on a GPU one);
    * a config written before a setting existed gets that setting's default: the config goes through
      :class:`RunConfig` and its ``params`` through the model's ``Config`` and back. A new switch whose default
      keeps the old behaviour (e.g. ``train.hmg.projection``) thus leaves older records and checkpoints
      matching. A config that no longer parses (a removed or renamed key) is compared as it is, so it matches
      nothing of today's and its cell runs again."""
    data = _with_defaults(json.loads(json.dumps(config)))
    for dotted in SCHEDULING_KEYS:
        *parents, key = dotted.split(".")
        node = data
        for name in parents:
            node = node.get(name) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(key, None)
    return data


def _with_defaults(data: dict) -> dict:
    """``data`` parsed into :class:`RunConfig` (and its model's params config) and back; unchanged if it fails."""
    try:
        cfg = from_dict(RunConfig, data)
        full = to_dict(cfg)
        full["params"] = to_dict(from_dict(model_class(cfg.model).Config, cfg.params, "params"))
    except (ConfigError, KeyError, TypeError, ValueError):
        return data
    return full


def cell_status(cell: Cell, check_lock: bool = True) -> tuple[str, str]:
    """``(status, detail)`` with status ``skipped``, ``done``, ``busy``, ``resume`` or ``run`` (module
    docstring); ``check_lock=False`` when the caller holds the cell's lock itself."""
    if cell.config is None:
        return "skipped", cell.skip_reason or ""
    wanted = comparable_config(to_dict(cell.config))
    result = Path(cell.config.results_dir) / f"{cell.name}.json"
    stale = ""
    if result.exists():
        with open(result, encoding="utf-8") as fh:
            record = json.load(fh)
        if comparable_config(record.get("config", {})) == wanted:
            return "done", f"cached {result}"
        stale = "a result of another config is replaced"
    if check_lock and cell_lock_holder(cell) is not None:
        return "busy", "another process runs it"
    local, parked = checkpoint_epochs(cell, wanted)
    if parked is not None and (local is None or parked > local):
        return "resume", f"from parked epoch {parked}"
    if local is not None:
        return "resume", f"from epoch {local}"
    if (run_dir_of(cell.config) / "last.pt").exists():
        stale = stale or "a checkpoint of another config is replaced"
    return "run", stale


def checkpoint_epochs(cell: Cell, wanted: dict) -> tuple[int | None, int | None]:
    """Epochs of the cell's run-folder and parked checkpoints written under config ``wanted`` (None: none)."""
    local = _matching_epoch(run_dir_of(cell.config) / "last.pt", wanted)
    parked = _matching_epoch(cell.parked / "last.pt", wanted) if cell.parked is not None else None
    return local, parked


def _matching_epoch(last: Path, wanted: dict) -> int | None:
    """The epoch of the checkpoint ``last`` when it exists and was written under config ``wanted``."""
    if not last.exists():
        return None
    state = load_checkpoint(last)
    if comparable_config(state.get("run_config", {})) != wanted:
        return None
    return int(state.get("epoch", 0))


# ------------------------------------------------------------------------------------ locks
def _lock_path(cell: Cell) -> Path:
    return run_dir_of(cell.config) / ".lock"


def cell_lock_holder(cell: Cell) -> str | None:
    """The pid text of the live process that holds the cell's lock, or None when it is free."""
    path = _lock_path(cell)
    if not path.exists():
        return None
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            return fh.read().strip() or "?"
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None


@contextmanager
def cell_lock(cell: Cell) -> Iterator[bool]:
    """Hold the cell's lock file while the block runs; yields False (and holds nothing) when another
    process has it. The lock is an ``flock``, so a killed process releases it."""
    path = _lock_path(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------ running
@dataclass
class GridReport:
    """What happened to each cell: ``(cell, status, detail)``; status is a :func:`cell_status` value or
    ``failed``, ``finished`` (ran to the end now) or, in a dry run, the status it would have."""

    outcomes: list[tuple[Cell, str, str]] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for _, s, _ in self.outcomes if s == status)

    @property
    def exit_code(self) -> int:
        return 1 if self.count("failed") else 0

    def summary_line(self, name: str) -> str:
        parts = [f"{self.count(s)} {s}" for s in ("finished", "done", "skipped", "busy", "failed", "run", "resume")
                 if self.count(s)]
        return f"grid {name}: {len(self.outcomes)} cells: " + ", ".join(parts)


def write_grid_meta(grid: GridSpec, grid_file: str | None) -> Path:
    """``grid.json`` in the results folder: row order and which rows are baselines / proposed models."""
    path = grid.results_path / GRID_META_FILE
    atomic_write_json(path, {"name": grid.name, "grid_file": grid_file, "labels": grid.row_labels,
                             "models": {m.label: m.model for m in grid.models}, "imports": grid.imports,
                             "baseline_labels": grid.baseline_labels, "proposed_labels": grid.proposed_labels,
                             "noise_of": {m.label: m.noise_of for m in grid.models if m.noise_of},
                             "datasets": grid.datasets, "seeds": grid.seeds})
    return path


DatasetLoader = Callable[[RunConfig], MultiBehaviorDataset]


def dataset_key(cfg: RunConfig) -> str:
    """Cells with equal keys train on the same loaded dataset (same spec and data settings)."""
    return json.dumps([cfg.dataset, to_dict(cfg.data)])


def cell_command(grid: GridSpec, cell: Cell, grid_file: str | None, extra_set: list[str] | None) -> str:
    """The command that runs (or resumes) exactly this cell, as recorded in its result or progress log."""
    return (f"mbrec bench run {grid_file or grid.name} --only {cell.label} --seeds {cell.seed}"
            + "".join(f" --set {item}" for item in extra_set or []))


def run_grid(grid: GridSpec, only: list[str] | None = None, dry_run: bool = False,
             grid_file: str | None = None, log: Callable[[str], None] = print,
             load_dataset: DatasetLoader = load_run_dataset, extra_set: list[str] | None = None,
             seeds: list[int] | None = None) -> GridReport:
    """Run the grid's cells sequentially (see the module docstring); one progress line per cell.

    A run cell logs a line when it starts (``run``/``resume``) and one when it ends (``finished`` with
    its selected metric, or ``failed`` with the error; a failure does not stop the grid). ``dry_run``
    logs each cell's status and touches nothing. Datasets are loaded once per consecutive block of cells
    with the same data settings.
    """
    cells = expand_grid(grid, only, extra_set, seeds)
    report = GridReport()
    if not dry_run:
        write_grid_meta(grid, grid_file)
    loaded: tuple[str, MultiBehaviorDataset] | None = None
    n = len(cells)
    for i, cell in enumerate(cells, 1):
        head = f"[{i}/{n}] {cell.describe()}"
        status, detail = cell_status(cell)
        if dry_run or status in ("skipped", "done", "busy"):
            log(f"{head}: {status}" + (f" ({detail})" if detail else ""))
            report.outcomes.append((cell, status, detail))
            continue
        with cell_lock(cell) as mine:
            if mine:  # decided again under the lock: another process may have finished it meanwhile
                status, detail = cell_status(cell, check_lock=False)
            else:
                status, detail = "busy", "another process runs it"
            log(f"{head}: {status}" + (f" ({detail})" if detail else ""))
            if status in ("done", "busy"):
                report.outcomes.append((cell, status, detail))
                continue
            cfg = cell.config
            if detail.startswith("from parked"):
                parking.restore(cell.parked, run_dir_of(cfg))
            key = dataset_key(cfg)
            command = cell_command(grid, cell, grid_file, extra_set)
            try:
                if loaded is None or loaded[0] != key:
                    loaded = None  # release the previous dataset before loading the next
                    loaded = (key, load_dataset(cfg))
                record = run_training(cfg, resume=status == "resume", command=command, dataset=loaded[1])
            except Exception as e:  # a failing cell is reported; the grid goes on
                message = f"{type(e).__name__}: {e}".splitlines()[0]
                log(f"{head}: failed ({message})")
                report.outcomes.append((cell, "failed", message))
                continue
            if cell.parked is not None:
                parking.unpark(cell.parked)
            parking.progress_path(grid.results_path, cell.name).unlink(missing_ok=True)
        metric = cfg.train.select_metric
        value = record["metrics"].get(metric)
        shown = f"{metric}={value:.4f}" if value is not None else "no evaluation"
        log(f"{head}: finished ({shown}, epoch {record['selected_epoch']}, {record['wall_seconds']:.1f}s)")
        report.outcomes.append((cell, "finished", shown))
    log(report.summary_line(grid.name))
    return report


def park_grid(grid: GridSpec, only: list[str] | None = None, seeds: list[int] | None = None,
              log: Callable[[str], None] = print, extra_set: list[str] | None = None,
              grid_file: str | None = None, progress_only: bool = False) -> GridReport:
    """Park every unfinished cell whose run folder has a checkpoint newer than its parked one
    (:mod:`mbrec.bench.parking`) and write its evaluations so far to the results folder
    (``progress-<cell>.jsonl``). Outcomes: ``parked`` (copied now), ``kept`` (the parked copy is as new),
    or the cell's status (``done``, ``run``, ``skipped``) when there is nothing to park. A cell that is
    running now is parked too: its ``last.pt`` is only ever replaced whole.

    ``progress_only``: for runs that are given up — only the progress log is written (its header says
    ``"parked": null``) and no checkpoint is copied; a parked copy of the cell that exists is removed, so that
    nothing claims to resume it. Outcome ``logged``."""
    machine = describe_device(torch.device("cpu")).rsplit(",", 1)[0]    # without this process's thread count
    report = GridReport()
    for cell in expand_grid(grid, only, extra_set, seeds):
        status, detail = cell_status(cell, check_lock=False)
        if status == "resume":
            local, kept = checkpoint_epochs(cell, comparable_config(to_dict(cell.config)))
            if progress_only and local is None:
                status, detail = "run", "no checkpoint in the run folder to log"
            elif progress_only:
                parking.unpark(cell.parked)
                status, detail = "logged", f"epoch {local}, no checkpoint kept"
            elif kept is not None and (local is None or kept >= local):
                status, detail = "kept", f"epoch {kept}"
            else:
                parking.park(run_dir_of(cell.config), cell.parked)
                status, detail = "parked", f"epoch {local}"
            if status in ("logged", "parked"):
                parking.write_progress(parking.progress_path(grid.results_path, cell.name),
                                       run_dir_of(cell.config), {"command": cell_command(grid, cell, grid_file,
                                                                                         extra_set),
                                                                 "epoch": local,
                                                                 "parked_on": machine,
                                                                 "parked": None if progress_only
                                                                 else str(cell.parked)})
        log(f"{cell.describe()}: {status}" + (f" ({detail})" if detail else ""))
        report.outcomes.append((cell, status, detail))
    parts = [f"{report.count(s)} {s}" for s in ("parked", "kept", "logged", "done", "run", "skipped")
             if report.count(s)]
    log(f"grid {grid.name}: {len(report.outcomes)} cells: " + ", ".join(parts) + f" (in {grid.parked_path})")
    return report
