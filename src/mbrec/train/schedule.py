"""Learning-rate schedules and evaluation schedules."""

from __future__ import annotations

from mbrec.config import TrainConfig


def learning_rate(cfg: TrainConfig, step: int, epoch: int, steps_per_decay: int) -> float:
    """The learning rate for global optimiser ``step`` (0-based) in 0-based ``epoch``.

    * ``constant``: ``lr``;
    * ``staircase``: ``lr · decay^floor(step / steps_per_decay)`` (COPF, copf.md §1.5);
    * ``step``: ``lr · decay^floor(epoch / decay_epochs)``.
    """
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if cfg.lr_schedule == "staircase":
        return cfg.lr * cfg.lr_decay ** (step // max(steps_per_decay, 1))
    return cfg.lr * cfg.lr_decay ** (epoch // max(cfg.decay_epochs, 1))


def default_decay_steps(cfg: TrainConfig, n_users: int) -> int:
    """``decay_steps`` or, when unset, ``M // batch_size`` (one step short of an epoch, as in COPF)."""
    return cfg.decay_steps if cfg.decay_steps is not None else max(n_users // cfg.batch_size, 1)


def is_eval_epoch(cfg: TrainConfig, epoch: int) -> bool:
    """Whether to evaluate after 0-based ``epoch`` (the last epoch is always evaluated)."""
    if epoch == cfg.epochs - 1:
        return True
    if cfg.eval_schedule == "copf":
        return epoch % 3 == 0 and (epoch > 90 or epoch < 2)
    return (epoch + 1) % cfg.eval_every == 0
