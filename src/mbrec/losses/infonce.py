r"""Weighted InfoNCE over a whole candidate table, fused (shared by COPF's and MBSSL's contrastive losses).

For anchors :math:`a_n` (already scaled, e.g. unit rows divided by τ), a candidate table :math:`O`
``[R, d]``, each anchor's positive row :math:`t_n` and weights :math:`w_n` (multiplicities of unique
anchors):

.. math::
    \mathcal L = \sum_n w_n \Big[\log \sum_{m=1}^{R} e^{\tilde\ell_{nm}} - \ell_{n t_n}\Big],
    \qquad \ell_{nm} = \langle a_n, o_m \rangle

where :math:`\tilde\ell = \ell` except at false-negative pairs ``(fn_rows, fn_cols)``: ``fn_fill = 0``
replaces the logit by the constant 0 (it still adds :math:`e^0` to the sum and passes no gradient; MBSSL's
released rule), ``fn_fill = -inf`` drops the pair from the sum. A positive must not be a false negative.

Why fused: autograd's ``logsumexp`` keeps the logits and the exponentials and runs max, subtract, exp,
sum forward and subtract, exp, multiply backward, each a pass over the ``[A, R]`` matrix (Taobao: about
3k item anchors x 12k items = 36M entries per loss). Here the forward keeps only ``exp(ℓ - c)`` and the
backward is one scaling of it plus the two matmuls :math:`G O` and :math:`G^T A` with
:math:`G = w \cdot \mathrm{softmax} - w\,\mathbb 1_{t}` (zero at constant false negatives).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

SAFE_EXPONENT = 80.0  # exp(-80) is still a normal float32 (> 1.2e-38)


class _WeightedInfoNCE(torch.autograd.Function):
    """Module docstring; ``bound`` ≥ every ``|ℓ_nm|``. With ``2·bound < 80`` the shift c is the constant
    ``bound`` (no under/overflow is possible), otherwise the row maximum."""

    @staticmethod
    def forward(ctx, anchors, table, targets, weights, bound: float, fn_rows, fn_cols, fn_fill):
        exp_logits = anchors @ table.T                                      # [A, R]
        has_fn = fn_rows is not None and fn_rows.numel() > 0
        if has_fn:
            exp_logits.index_put_((fn_rows, fn_cols), exp_logits.new_tensor(fn_fill))
        if 2 * bound < SAFE_EXPONENT:
            shift = torch.full((anchors.shape[0], 1), bound, dtype=anchors.dtype, device=anchors.device)
        else:
            shift = exp_logits.amax(dim=1, keepdim=True)
        exp_logits.sub_(shift).exp_()
        row_sums = exp_logits.sum(dim=1)
        positive = (anchors * table[targets]).sum(-1)
        ctx.save_for_backward(anchors, table, targets, weights, exp_logits, row_sums,
                              fn_rows if has_fn else None, fn_cols if has_fn else None)
        return ((row_sums.log() + shift.squeeze(1) - positive) * weights).sum()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        anchors, table, targets, weights, exp_logits, row_sums, fn_rows, fn_cols = ctx.saved_tensors
        scaled = weights * grad
        coef = exp_logits * (scaled / row_sums).unsqueeze(1)                # softmax · w · grad
        if fn_rows is not None:
            coef.index_put_((fn_rows, fn_cols), coef.new_zeros(()))         # constant logits: no gradient
        coef[torch.arange(len(targets), device=coef.device), targets] -= scaled
        return coef @ table, coef.T @ anchors, None, None, None, None, None, None


def weighted_infonce(anchors: torch.Tensor, table: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                     bound: float, fn_rows: torch.Tensor | None = None, fn_cols: torch.Tensor | None = None,
                     fn_fill: float = 0.0) -> torch.Tensor:
    """:math:`\\mathcal L` of the module docstring (a scalar).

    Args:
        anchors: ``[A, d]`` scaled anchor rows. table: ``[R, d]`` candidates. targets: ``[A]`` row of each
            anchor's positive in ``table``. weights: ``[A]``. bound: an upper bound of ``|⟨a_n, o_m⟩|``
            (``1/τ`` for unit rows scaled by ``1/τ``).
        fn_rows, fn_cols: ``[F]`` false-negative pairs (anchor position, table row), or None.
        fn_fill: ``0.0`` (constant logit) or ``float("-inf")`` (pair left out of the sum).
    """
    if fn_fill not in (0.0, float("-inf")):
        raise ValueError(f"fn_fill must be 0.0 or -inf, got {fn_fill}")
    return _WeightedInfoNCE.apply(anchors, table, targets, weights.to(anchors.dtype), float(bound),
                                  fn_rows, fn_cols, fn_fill)
