"""One run end to end: load data, build the model, train, write the result record.

The result record (``result.json`` in the run folder, and a copy in ``results_dir`` when set) holds
``model, dataset, protocol, seed, epochs, wall_seconds, device, command, config, metrics`` (test
metrics of the selected evaluation), ``history`` (every evaluation), ``groups`` (the selected model's test
metrics per user group of target-training size, :func:`selected_groups`) and more. Tables and plots are
generated from these files. ``wall_seconds`` counts training and evaluation; ``build_seconds`` the model
build of the process that finished the run (warm starts and precomputations such as MB-CGCN's view
LightGCN; a resumed run is rebuilt without its warm start, so there it is only the rebuild).
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

import mbrec
from mbrec.config import ConfigError, RunConfig, to_dict
from mbrec.data.dataset import MultiBehaviorDataset
from mbrec.models.base import Recommender, build_model
from mbrec.train.allocator import keep_freed_memory
from mbrec.train.checkpoint import atomic_write_json, load_checkpoint
from mbrec.train.mkl_shim import mkl_shim_loaded, note_mkl_shim_once
from mbrec.train.seeding import resolve_device, seed_everything
from mbrec.train.trainer import FitResult, Trainer


def describe_device(device: torch.device) -> str:
    """Human description: GPU name, or CPU model with core and thread counts (and the MKL shim when loaded)."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    shim = " (MKL vendor-check shim)" if mkl_shim_loaded() else ""
    return f"cpu: {cpu}{shim}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def load_run_dataset(cfg: RunConfig) -> MultiBehaviorDataset:
    """The dataset of a run, with the validation hold-out applied when configured."""
    from mbrec.data.registry import add_validation_split, load_dataset

    ds = load_dataset(cfg.dataset, data_root=cfg.data.root)
    if cfg.data.validation == "holdout":
        ds = add_validation_split(ds, seed=cfg.data.validation_seed)
    if cfg.data.noise_ratio > 0:
        from mbrec.eval.noise import inject_noise

        ds = inject_noise(ds, cfg.data.noise_ratio, seed=cfg.data.noise_seed)
    unknown = [b for b in cfg.data.mask_behaviors if b not in ds.behaviors]
    if unknown:
        raise ConfigError(f"data.mask_behaviors: unknown behavior {unknown[0]!r} (have {ds.behaviors})")
    return ds


def run_dir_of(cfg: RunConfig) -> Path:
    return Path(cfg.output_dir) / cfg.run_name()


def build_for_run(cfg: RunConfig, dataset: MultiBehaviorDataset,
                  skip_warm_start: bool = False) -> tuple[Recommender, torch.device]:
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    keep_freed_memory()
    device = resolve_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    model = build_model(cfg.model, dataset, cfg.params, device=device, skip_warm_start=skip_warm_start)
    return model, device


def make_record(cfg: RunConfig, dataset: MultiBehaviorDataset, fit: FitResult, device: torch.device,
                command: str) -> dict:
    selected = fit.selected or {}
    return {
        "model": cfg.model,
        "dataset": dataset.name,
        "protocol": cfg.train.protocol,
        "seed": cfg.train.seed,
        "epochs": fit.epochs_run,
        "selected_epoch": selected.get("epoch"),
        "wall_seconds": round(fit.wall_seconds, 2),
        "device": describe_device(device),
        "command": command,
        "config": to_dict(cfg),
        "metrics": selected.get("test", {}),
        "valid_metrics": selected.get("valid"),
        "last_metrics": fit.history[-1]["test"] if fit.history else {},
        "history": fit.history,
        "monitor": fit.monitor,
        "stopped_early": fit.stopped_early,
        "dataset_fingerprint": dataset.fingerprint(),
        "mbrec_version": mbrec.__version__,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def run_training(cfg: RunConfig, resume: bool = False, command: str | None = None,
                 dataset: MultiBehaviorDataset | None = None) -> dict:
    """Train as configured and return (and write) the result record."""
    dataset = dataset if dataset is not None else load_run_dataset(cfg)
    run_dir = run_dir_of(cfg)
    resuming = resume and (run_dir / "last.pt").exists()
    build_start = time.perf_counter()
    model, device = build_for_run(cfg, dataset, skip_warm_start=resuming)
    build_seconds = time.perf_counter() - build_start
    if device.type == "cpu":
        note_mkl_shim_once()
    extra = {"run_config": to_dict(cfg)}
    trainer = Trainer(model, dataset, cfg.train, run_dir, device=device,
                      mask_behaviors=cfg.data.mask_behaviors, extra_state=extra)
    fit = trainer.fit(resume=resume)
    command = command or " ".join(shlex.quote(a) for a in ["mbrec", *sys.argv[1:]])
    record = make_record(cfg, dataset, fit, device, command)
    record["build_seconds"] = round(build_seconds, 2)
    if (run_dir / "best.pt").exists():
        record["groups"] = selected_groups(cfg, dataset, run_dir / "best.pt", model)
    atomic_write_json(run_dir / "result.json", record)
    if cfg.results_dir:
        atomic_write_json(Path(cfg.results_dir) / f"{cfg.run_name()}.json", record)
    return record


def selected_groups(cfg: RunConfig, dataset: MultiBehaviorDataset, best: str | Path,
                    model: Recommender | None = None) -> dict | None:
    """Test metrics per user group (:func:`mbrec.eval.groups.group_metrics`, default bounds) of the model
    saved in ``best`` (the run's selected evaluation), loaded into ``model`` (built when None).
    None when the dataset has no test users."""
    from mbrec.eval.evaluator import evaluate
    from mbrec.eval.groups import DEFAULT_BOUNDS, group_metrics

    if len(dataset.eval_users("test")) == 0:
        return None
    if model is None:
        model, _ = build_for_run(cfg, dataset, skip_warm_start=True)
    state = load_checkpoint(best, map_location=model.device_)
    model.load_state_dict(state["model"])
    result = evaluate(model, dataset, split="test", ks=cfg.train.ks, batch_size=cfg.train.eval_batch_size,
                      mask_behaviors=cfg.data.mask_behaviors)
    return {"protocol": cfg.train.protocol, "epoch": state.get("epoch"), "split": "test",
            "bounds": list(DEFAULT_BOUNDS), "rows": group_metrics(result, dataset)}


def load_trained(checkpoint: str | Path, device: str = "auto", data_root: str | None = None):
    """(model, dataset, run config) from a ``best.pt``/``last.pt`` written by the trainer."""
    from mbrec.config import from_dict

    state = load_checkpoint(checkpoint)
    if "run_config" not in state:
        raise ConfigError(f"{checkpoint}: not an mbrec checkpoint (no run_config)")
    cfg = from_dict(RunConfig, state["run_config"])
    if data_root is not None:
        cfg.data.root = data_root
    cfg.train.device = device
    dataset = load_run_dataset(cfg)
    model, _ = build_for_run(cfg, dataset, skip_warm_start=True)
    model.load_state_dict(state["model"])
    model.eval()
    return model, dataset, cfg
