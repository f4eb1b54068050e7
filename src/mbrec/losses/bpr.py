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


def triple_scores(user_table: torch.Tensor, item_table: torch.Tensor, triples) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Inner-product scores :math:`(\langle e_u, e_{i^+}\rangle, \langle e_u, e_{i^-}\rangle)` of BPR triples.

    ``user_table [M, d]``, ``item_table [N, d]``, ``triples`` with ``users/positives/negatives [n]`` -> two ``[n]``.
    Rows are gathered with ``index_select``: its backward is an ``index_add``, 3-10x faster on CPU than the
    accumulating ``index_put`` behind ``table[ids]`` when ids repeat (a user's 40 positives).
    """
    u = user_table.index_select(0, triples.users)
    return ((u * item_table.index_select(0, triples.positives)).sum(-1),
            (u * item_table.index_select(0, triples.negatives)).sum(-1))


def l2_of_rows(*tables: torch.Tensor) -> torch.Tensor:
    r""":math:`\tfrac12 \sum_t \lVert X_t \rVert_F^2` of the given (gathered) rows."""
    return 0.5 * sum(t.pow(2).sum() for t in tables)
