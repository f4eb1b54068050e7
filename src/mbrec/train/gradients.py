"""How the named losses of a batch become parameter gradients.

A *gradient combiner* receives the loss dict and the parameters and leaves ``.grad`` set. The plain
:class:`SumCombiner` back-propagates the sum; gradient-manipulation plug-ins (HMG, :mod:`mbrec.train.hmg`)
treat target (``name``), auxiliary (``aux/...``) and regulariser (``reg/...``) losses differently.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mbrec.config import HMGConfig


class SumCombiner:
    """``sum(losses).backward()``."""

    def backward(self, losses: dict[str, torch.Tensor], params: Sequence[torch.nn.Parameter]) -> None:
        total = sum(losses.values())
        total.backward()

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def make_combiner(cfg: HMGConfig):
    """The combiner for ``train.hmg`` (``strategy: none`` = plain sum)."""
    if cfg.strategy == "none":
        return SumCombiner()
    from mbrec.train.hmg import HMG

    return HMG(strategy=cfg.strategy, relax=cfg.relax, beta=cfg.beta, task_threads=cfg.task_threads,
               scope=cfg.scope, projection=cfg.projection, scale_norm=cfg.scale_norm)
