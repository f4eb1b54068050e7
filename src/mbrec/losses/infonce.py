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
1k item anchors x 12k items = 11M entries per loss). Here the forward is one matmul, one in-place
``exp`` and one row sum, and keeps only :math:`E = e^{\tilde\ell - c}` with the constant false-negative
entries zeroed. The backward never touches ``[A, R]`` elementwise: with
:math:`s_n = w_n g / \sum_m E_{nm}` and :math:`G = \mathrm{diag}(s) E - \mathrm{diag}(w g) 1_t`,

.. math::
    \partial a = s \odot (E\, O) - w g \odot O_t, \qquad
    \partial O = E^T (s \odot A) - \textstyle\sum_n w_n g\, a_n e_{t_n}^T

(two matmuls and row scalings of ``[A, d]`` / ``[R, d]`` matrices). The shift c is 0 while
``exp(±bound)`` and a row sum of them stay far inside float32's range (``bound < 40``; 1/τ for unit
rows), the row maximum otherwise. Nothing saved is modified, so a retained graph can be backpropagated
again (HMG runs one backward per task).
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

NO_SHIFT_BOUND = 40.0  # exp(±40) and a sum of 1e20 such terms are normal float32 numbers


class _WeightedInfoNCE(torch.autograd.Function):
    """Module docstring; ``bound`` ≥ every ``|ℓ_nm|`` (for the choice of the shift c)."""

    @staticmethod
    def forward(ctx, anchors, table, targets, weights, bound: float, fn_rows, fn_cols, fn_fill):
        exp_logits = anchors @ table.T                                      # [A, R]
        has_fn = fn_rows is not None and fn_rows.numel() > 0
        if has_fn:
            exp_logits[fn_rows, fn_cols] = fn_fill
        if bound < NO_SHIFT_BOUND:
            shift = None
            exp_logits.exp_()
        else:
            shift = exp_logits.amax(dim=1, keepdim=True)
            exp_logits.sub_(shift).exp_()
        row_sums = exp_logits.sum(dim=1)
        if has_fn and fn_fill == 0.0:
            exp_logits[fn_rows, fn_cols] = 0.0                       # constant logits: no gradient
        positive = (anchors * table[targets]).sum(-1)
        ctx.save_for_backward(anchors, table, targets, weights, exp_logits, row_sums)
        log_sums = row_sums.log() if shift is None else row_sums.log() + shift.squeeze(1)
        return ((log_sums - positive) * weights).sum()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        anchors, table, targets, weights, exp_logits, row_sums = ctx.saved_tensors
        scaled = weights * grad                                             # [A]
        row_scale = (scaled / row_sums).unsqueeze(1)                        # [A, 1]
        grad_anchors = (exp_logits @ table).mul_(row_scale).sub_(table[targets] * scaled.unsqueeze(1))
        grad_table = exp_logits.T @ (anchors * row_scale)
        grad_table.index_add_(0, targets, anchors * scaled.unsqueeze(1), alpha=-1.0)
        return grad_anchors, grad_table, None, None, None, None, None, None


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
