r"""Inverted dropout with a cheap random mask, shared by the models (MBSSL, GHCF / EHCF, MBGCN).

torch's CPU ``F.dropout`` (``bernoulli_``) and ``torch.rand`` draw one serial Mersenne-Twister number per
entry: 20-45 ms for a ``[3, 29693, 64]`` MBSSL layer table on one thread, 10-12 % of a GHCF Taobao step.
:func:`keep_mask` takes four 16-bit decisions from every 64-bit draw of the same torch generator (6-8 ms
for that table), so runs stay reproducible from ``torch.manual_seed`` with no second random stream.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

MASK_BITS = 16                        # random bits per keep / drop decision


def keep_mask(shape: Sequence[int], p: float, device: torch.device | str | None = None) -> tuple[torch.Tensor, float]:
    r"""A Bernoulli keep mask from 16 random bits per entry: ``(mask bool [shape], p')``.

    Entry j reads lane :math:`b_j \in \{-2^{15}, …, 2^{15} - 1\}`, the j-th int16 of uniform 64-bit draws
    (``random_`` over the full int64 range, 4 lanes per word in memory order), and is dropped when
    :math:`b_j < -2^{15} + t` with :math:`t = \min(\mathrm{round}(p \cdot 2^{16}), 2^{16} - 1)`. The
    entries are independent with drop probability :math:`p' = t / 2^{16}` (:math:`|p' - p| \le 2^{-17}`
    for :math:`p < 1 - 2^{-17}`; 0.3 gives 0.3000031, 0.5 gives 0.5 exactly).
    """
    numel = math.prod(shape)
    threshold = min(round(p * (1 << MASK_BITS)), (1 << MASK_BITS) - 1)      # p < 1 keeps p' < 1
    words = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device).random_(-(1 << 63), None)
    lanes = words.view(torch.int16)[:numel].view(*shape)
    return lanes >= threshold - (1 << (MASK_BITS - 1)), threshold / (1 << MASK_BITS)


def keep_scale(shape: Sequence[int], p: float, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
    """``mask / (1 - p')`` as a ``dtype`` tensor of ``shape`` (:func:`keep_mask`); ``None`` when ``p' = 0``."""
    mask, p_used = keep_mask(shape, p, device)
    if p_used == 0.0:
        return None
    return mask.to(dtype).mul_(1.0 / (1.0 - p_used))


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout ``x · mask / (1 - p')`` (:func:`keep_mask`); ``x`` itself in eval mode or when ``p' = 0``.

    The distribution of ``F.dropout(x, p)`` with ``p`` rounded to a multiple of 2⁻¹⁶; the rescaling uses the
    rounded ``p'``, so the expectation is exactly ``x``. Gradients flow to ``x`` only.
    """
    if not training or p == 0.0:
        return x
    scale = keep_scale(x.shape, p, x.device, x.dtype)
    return x if scale is None else x * scale
