r"""Bayesian personalised ranking and L2 helpers."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    r""":math:`\mathrm{softplus}(-(\hat y^+ - \hat y^-)) = -\ln \sigma(\hat y^+ - \hat y^-)`, ``[n] -> []``.

    An empty batch gives 0 (with a graph, so ``backward`` still works).
    """
    if pos_scores.numel() == 0:
        return pos_scores.sum() * 0.0
    values = F.softplus(neg_scores - pos_scores)
    return values.mean() if reduction == "mean" else values.sum()


def l2_of_rows(*tables: torch.Tensor) -> torch.Tensor:
    r""":math:`\tfrac12 \sum_t \lVert X_t \rVert_F^2` of the given (gathered) rows."""
    return 0.5 * sum(t.pow(2).sum() for t in tables)
