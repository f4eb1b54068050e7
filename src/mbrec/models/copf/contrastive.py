r"""The cross-behavior contrastive loss of COPF as released (copf.md §4.1, Eq. 8 [C]).

For every auxiliary behavior ``k < K-1`` the target tables ``EU[K-1], EV[K-1]`` are contrasted with
behavior k's tables. Anchors are the **positive rows of the target behavior's BPR batch**: users
``u_n`` (repeated once per sampled target positive) and the sampled positive items ``v_n``. With the cosine
:math:`c(a, b) = \langle a, b\rangle / (\lVert a\rVert \lVert b\rVert)` and temperature τ:

.. math::
    \ell_U = \sum_n \Big[-\frac{c(EU[K\!-\!1]_{u_n}, EU[k]_{u_n})}{\tau}
             + \log \sum_{u'=1}^{M} \exp\frac{c(EU[K\!-\!1]_{u_n}, EU[k]_{u'})}{\tau}\Big]

(:math:`\ell_V` alike over all N items) and :math:`\mathcal L^k_{cl} = \gamma(\ell_U + \ell_V) / M` — a
sum over the batch rows divided by the number of users M on both sides. ``mode``: ``both_side`` (default),
``user_side`` (:math:`\ell_U` only) or ``item_side`` (:math:`\ell_V` only).

Computation: repeated anchors are scored once and weighted by their multiplicity (same value). The
``[A, R]`` logits come from one matmul of L2-normalised rows (ε = 1e-12) with 1/τ folded into the anchors,
and :func:`mbrec.losses.infonce.weighted_infonce` keeps only ``exp(logits − c)`` for the backward pass
(softmax = that / row sum), so each ``[A, R]`` matrix is touched a minimal number of times.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from mbrec.losses.infonce import weighted_infonce
from mbrec.losses.normalize import unit_rows

ContrastMode = Literal["both_side", "user_side", "item_side"]
TablePair = tuple[torch.Tensor, torch.Tensor]


def infonce_sum(anchor_table: torch.Tensor, other_table: torch.Tensor, anchors: torch.Tensor,
                tau: float) -> torch.Tensor:
    r""":math:`\sum_n [\log\sum_{m} e^{c(a_{n}, o_m)/\tau} - c(a_{n}, o_{n})/\tau]` for anchor ids ``[P]``.

    ``anchor_table``, ``other_table``: ``[R, d]`` tables over the same R ids (users or items).
    """
    if anchors.numel() == 0:
        return anchor_table.sum() * 0.0
    ids, counts = torch.unique(anchors, return_counts=True)
    scaled = unit_rows(anchor_table.index_select(0, ids)) / tau                # [A, d]
    other = unit_rows(other_table)                                           # [R, d]
    return weighted_infonce(scaled, other, ids, counts, 1.0 / tau)


def behavior_contrast(target: TablePair, auxiliary: TablePair, users: torch.Tensor, items: torch.Tensor,
                      tau: float = 0.1, mode: ContrastMode = "both_side") -> torch.Tensor:
    r""":math:`(\ell_U + \ell_V) / M` between the target tables and one auxiliary behavior's tables.

    ``users``, ``items``: the target behavior's positive BPR rows ``[P]`` (users repeated per positive).
    """
    if mode not in ("both_side", "user_side", "item_side"):
        raise ValueError(f"unknown contrastive mode {mode!r} (both_side, user_side, item_side)")
    n_users = target[0].shape[0]
    total = target[0].new_zeros(())
    if mode in ("both_side", "user_side"):
        total = total + infonce_sum(target[0], auxiliary[0], users, tau)
    if mode in ("both_side", "item_side"):
        total = total + infonce_sum(target[1], auxiliary[1], items, tau)
    return total / n_users


def contrastive_losses(tables: Sequence[TablePair], users: torch.Tensor, items: torch.Tensor,
                       tau: float = 0.1, mode: ContrastMode = "both_side",
                       weight: float = 1.0) -> list[torch.Tensor]:
    """``γ · L_cl^k`` for every auxiliary behavior ``k = 0..K-2`` (in behavior order)."""
    target = tables[-1]
    return [weight * behavior_contrast(target, aux, users, items, tau, mode) for aux in tables[:-1]]
