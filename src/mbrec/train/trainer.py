"""The training loop: sampling, optimisation, evaluation schedule, model selection, checkpoints.

The trainer only uses the model contract (``batch_spec``, ``losses``, ``score_users``,
``prepare_epoch``); it never looks inside a model. After every epoch it writes ``last.pt`` atomically
(model, optimiser, gradient-combiner and RNG states, history), so ``fit(resume=True)`` continues
exactly where a stopped run left off and draws the same batches. The selected model (best evaluation
under the configured protocol) is saved as ``best.pt``.
"""

from __future__ import annotations

import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mbrec.config import TrainConfig
from mbrec.data.dataset import MultiBehaviorDataset
from mbrec.data.samplers import make_sampler
from mbrec.eval.evaluator import evaluate
from mbrec.models.base import Recommender
from mbrec.train.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint
from mbrec.train.gradients import make_combiner
from mbrec.train.schedule import default_decay_steps, is_eval_epoch, learning_rate
from mbrec.train.seeding import seed_everything


@dataclass
class FitResult:
    """What a finished (or early-stopped) run produced.

    ``history``: one entry per evaluation: ``{"epoch": completed epochs, "test": {...}, "valid": {...},
    "loss": {...}, "seconds": training seconds so far}``. ``selected``: the entry chosen by the protocol.
    ``monitor``: the ``train.monitor_every`` evaluations (same fields plus ``"monitor": true``), kept apart
    from ``history`` so that selection and early stopping never see them.
    """

    history: list[dict] = field(default_factory=list)
    monitor: list[dict] = field(default_factory=list)
    selected: dict | None = None
    epochs_run: int = 0
    wall_seconds: float = 0.0
    stopped_early: bool = False


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Trainer:
    """Trains one model on one dataset under a :class:`TrainConfig`; writes into ``run_dir``."""

    def __init__(self, model: Recommender, dataset: MultiBehaviorDataset, cfg: TrainConfig,
                 run_dir: str | Path, device: torch.device | str = "cpu", mask_behaviors: list[str] = (),
                 extra_state: dict | None = None, log: Callable[[str], None] = _stderr) -> None:
        self.model = model
        self.dataset = dataset
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = torch.device(device)
        self.mask_behaviors = list(mask_behaviors)
        self.extra_state = extra_state or {}
        self.log = log
        if cfg.protocol == "validation" and dataset.valid is None:
            raise ValueError("protocol 'validation' needs a validation split (set data.validation: holdout)")
        self.sampler = make_sampler(model.batch_spec, dataset, cfg.batch_size)
        self.optimizer = make_optimizer(cfg, model.parameters())
        self.combiner = make_combiner(cfg.hmg)
        self.decay_steps = default_decay_steps(cfg, dataset.n_users)
        self.selection_split = "test" if cfg.protocol == "paper" else "valid"

    # ------------------------------------------------------------------ checkpoints
    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.pt"

    def _state(self, epoch: int, step: int, rng: np.random.Generator, result: FitResult,
               best_value: float | None, bad_evals: int, seconds: float) -> dict:
        return {
            "epoch": epoch, "step": step, "seconds": seconds,
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "combiner": self.combiner.state_dict(),
            "numpy_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "python_rng": random.getstate(),
            "history": result.history, "selected": result.selected, "monitor": result.monitor,
            "best_value": best_value, "bad_evals": bad_evals, "stopped_early": result.stopped_early,
            "fingerprint": self.dataset.fingerprint(), **self.extra_state,
        }

    def _restore(self, rng: np.random.Generator) -> dict:
        state = load_checkpoint(self.last_path, map_location=self.device)
        if state.get("fingerprint") != self.dataset.fingerprint():
            raise ValueError(f"{self.last_path}: checkpoint was made on a different dataset")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        for param_state in self.optimizer.state.values():  # map_location put Adam's step counters on the
            if torch.is_tensor(param_state.get("step")):   # device; torch expects them on the CPU
                param_state["step"] = param_state["step"].cpu()
        self.combiner.load_state_dict(state["combiner"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"].cpu())
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])  # RNG states must be CPU bytes
        random.setstate(state["python_rng"])
        return state

    # ------------------------------------------------------------------ evaluation
    def evaluate_now(self) -> dict[str, dict[str, float]]:
        out = {}
        splits = ["test"] if self.cfg.protocol == "paper" and self.dataset.valid is None else ["valid", "test"]
        for split in splits:
            res = evaluate(self.model, self.dataset, split=split, ks=self.cfg.ks,
                           batch_size=self.cfg.eval_batch_size, mask_behaviors=self.mask_behaviors,
                           device=self.device)
            out[split] = res.metrics
        return out

    def _write_metrics_log(self, history: list[dict]) -> None:
        text = "".join(json.dumps(h) + "\n" for h in history)
        atomic_write_bytes(self.run_dir / "metrics.jsonl", lambda fh: fh.write(text.encode()))

    # ------------------------------------------------------------------ loop
    def fit(self, resume: bool = False) -> FitResult:
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        rng = seed_everything(cfg.seed)
        result = FitResult()
        start_epoch, step, best_value, bad_evals, seconds = 0, 0, None, 0, 0.0
        if resume and self.last_path.exists():
            state = self._restore(rng)
            start_epoch, step, seconds = state["epoch"], state["step"], state["seconds"]
            result.history, result.selected = state["history"], state["selected"]
            result.monitor = state.get("monitor", [])
            best_value, bad_evals = state["best_value"], state["bad_evals"]
            result.stopped_early = state.get("stopped_early", False)
            self.log(f"resumed from {self.last_path} at epoch {start_epoch}")
        writer = _tensorboard(self.run_dir)
        metric = cfg.select_metric
        params = [p for p in self.model.parameters() if p.requires_grad]
        epoch = start_epoch
        for epoch in range(start_epoch, cfg.epochs):
            if result.stopped_early:
                break
            t0 = time.perf_counter()
            self.model.train()
            self.model.prepare_epoch(epoch)
            totals: dict[str, float] = {}
            n_batches = 0
            bar = tqdm(self.sampler.epoch(rng), total=len(self.sampler), desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       disable=not cfg.progress, leave=False, mininterval=1.0, file=sys.stderr)
            for batch in bar:
                lr = learning_rate(cfg, step, epoch, self.decay_steps)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                self.optimizer.zero_grad(set_to_none=True)
                losses = self.model.losses(batch.to(self.device))
                self.combiner.backward(losses, params)
                self.optimizer.step()
                step += 1
                n_batches += 1
                for name, value in losses.items():  # kept on the device: no GPU->CPU sync per step
                    totals[name] = totals.get(name, 0.0) + value.detach()
            seconds += time.perf_counter() - t0
            mean_losses = {k: float(v) / max(n_batches, 1) for k, v in totals.items()}
            if writer is not None:
                for k, v in mean_losses.items():
                    writer.add_scalar(f"loss/{k}", v, epoch + 1)
            if is_eval_epoch(cfg, epoch):
                evals = self.evaluate_now()
                entry = {"epoch": epoch + 1, **evals, "loss": mean_losses, "seconds": round(seconds, 3)}
                result.history.append(entry)
                value = evals[self.selection_split][metric]
                if best_value is None or value >= best_value:
                    best_value, bad_evals = value, 0
                    result.selected = entry
                    save_checkpoint(self.best_path, {"model": self.model.state_dict(), "epoch": epoch + 1,
                                                     **self.extra_state})
                else:
                    bad_evals += 1
                self._log_eval(entry)
                if writer is not None:
                    for split in evals:
                        for k, v in evals[split].items():
                            writer.add_scalar(f"{split}/{k}", v, epoch + 1)
                if cfg.patience is not None and bad_evals >= cfg.patience:
                    result.stopped_early = True
                    self.log(f"early stop after epoch {epoch + 1}: {bad_evals} evaluations without gain")
            elif cfg.monitor_every and (epoch + 1) % cfg.monitor_every == 0:
                entry = {"epoch": epoch + 1, **self.evaluate_now(), "loss": mean_losses,
                         "seconds": round(seconds, 3), "monitor": True}
                result.monitor.append(entry)
                self._log_eval(entry)
            else:
                self._log_heartbeat(epoch, mean_losses, seconds,
                                    learning_rate(cfg, max(step - 1, 0), epoch, self.decay_steps))
            save_checkpoint(self.last_path, self._state(epoch + 1, step, rng, result, best_value,
                                                        bad_evals, seconds))
            if result.history or result.monitor:
                self._write_metrics_log(sorted(result.history + result.monitor, key=lambda h: h["epoch"]))
        result.epochs_run = result.history[-1]["epoch"] if result.history else epoch + 1
        result.wall_seconds = seconds
        if writer is not None:
            writer.close()
        return result

    def _log_heartbeat(self, epoch: int, losses: dict[str, float], seconds: float, lr: float) -> None:
        """Without a progress bar, one line per epoch that is not evaluated (loss, time, lr, ETA)."""
        if self.cfg.progress:
            return
        done = epoch + 1
        per_epoch = seconds / max(done, 1)
        eta = per_epoch * (self.cfg.epochs - done)
        self.log(f"epoch {done}/{self.cfg.epochs}: loss={sum(losses.values()):.4f} lr={lr:.3g} "
                 f"({seconds:.0f}s, {per_epoch:.1f} s/epoch, about {eta / 60:.0f} min left)")

    def _log_eval(self, entry: dict) -> None:
        keys = [f"HR@{k}" for k in self.cfg.ks[:1]] + [f"NDCG@{k}" for k in self.cfg.ks[:1]]
        parts = []
        for split in ("valid", "test"):
            if split in entry:
                parts.append(split + " " + " ".join(f"{k}={entry[split][k]:.4f}" for k in keys))
        loss = sum(entry["loss"].values())
        kind = " (monitor)" if entry.get("monitor") else ""
        self.log(f"epoch {entry['epoch']}{kind}: loss={loss:.4f} {' | '.join(parts)} ({entry['seconds']:.0f}s)")


def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    """The optimiser named by ``cfg.optimizer`` (the trainer sets its learning rate every step)."""
    if cfg.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                   initial_accumulator_value=cfg.adagrad_initial_accumulator)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _tensorboard(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard not installed
        return None
    return SummaryWriter(str(run_dir / "tb"))
