r"""Whole-data (non-sampling) weighted squared loss of EHCF/GHCF/MBSSL, in its efficient form.

For a batch of users B, all items I, a behavior vector :math:`h \in \mathbb R^d`, predictions
:math:`\hat x_{ui} = \sum_d e_{u,d}\, h_d\, e_{i,d}`, weight :math:`c^+ = 1` on positives and
:math:`c^- = w` on every (u, i) pair, the loss (constant dropped) is

.. math::
    L = w \sum_{m,n} (h_m h_n) \Big(\sum_{u \in B} e_{um} e_{un}\Big)\Big(\sum_{i} e_{im} e_{in}\Big)
        + \sum_{(u,i) \in P} \big((1 - w)\,\hat x_{ui}^2 - 2\,\hat x_{ui}\big)

which equals :math:`\sum_{u\in B}\sum_i c_{ui} (y_{ui} - \hat x_{ui})^2 - |P|` with
:math:`c_{ui} = 1` on positives and ``w`` elsewhere. Cost :math:`O((|B| + N) d^2 + |P| d)`.
"""

from __future__ import annotations

import torch


def nonsampling_loss(user_emb: torch.Tensor, item_emb: torch.Tensor, h: torch.Tensor,
                     pos_rows: torch.Tensor, pos_items: torch.Tensor, neg_weight: float) -> torch.Tensor:
    """Efficient whole-data loss.

    Args:
        user_emb: ``[B, d]`` embeddings of the batch users.
        item_emb: ``[N', d]`` embeddings of all items (a zero PAD row may be included).
        h: ``[d]`` behavior vector.
        pos_rows: ``[P]`` row index into ``user_emb`` of each positive pair.
        pos_items: ``[P]`` item index into ``item_emb`` of each positive pair.
        neg_weight: ``w`` (c⁻).

    Returns:
        Scalar loss (see the module docstring).
    """
    user_gram = user_emb.T @ user_emb                               # [d, d]
    item_gram = item_emb.T @ item_emb                               # [d, d]
    all_pairs = (user_gram * item_gram * torch.outer(h, h)).sum()
    x = (user_emb.index_select(0, pos_rows) * h * item_emb.index_select(0, pos_items)).sum(-1)  # [P]
    return neg_weight * all_pairs + ((1.0 - neg_weight) * x.pow(2) - 2.0 * x).sum()


def nonsampling_loss_reference(user_emb: torch.Tensor, item_emb: torch.Tensor, h: torch.Tensor,
                               pos_rows: torch.Tensor, pos_items: torch.Tensor,
                               neg_weight: float) -> torch.Tensor:
    """Brute force over the full ``[B, N']`` score matrix (for tests): Σ c (y - x̂)² - |P|."""
    scores = (user_emb * h) @ item_emb.T
    labels = torch.zeros_like(scores)
    labels[pos_rows, pos_items] = 1.0
    weights = torch.where(labels > 0, torch.ones_like(scores), torch.full_like(scores, neg_weight))
    return (weights * (labels - scores).pow(2)).sum() - labels.sum()
