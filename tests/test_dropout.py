"""The shared dropout: mask bits read plainly, distribution, rescaling, gradients, eval mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mbrec.models.dropout import dropout, keep_mask, keep_scale


def test_keep_mask_matches_a_plain_reading_of_the_random_words():
    """Lane j of 64-bit word w (little-endian) decides entry 4w + j: dropped below -2^15 + round(p * 2^16)."""
    torch.manual_seed(5)
    mask, p_used = keep_mask((3, 7, 5), 0.3)                        # 105 entries -> 27 words
    torch.manual_seed(5)
    words = torch.empty(27, dtype=torch.int64).random_(-(1 << 63), None).numpy()
    lanes = np.frombuffer(words.astype("<i8").tobytes(), dtype="<i2")[:105].reshape(3, 7, 5)
    np.testing.assert_array_equal(mask.numpy(), lanes >= 19661 - 32768)
    assert p_used == 19661 / 65536


def test_keep_mask_distribution_and_rounding_of_p():
    torch.manual_seed(0)
    big, _ = keep_mask((400_000,), 0.3)
    assert (~big).float().mean().item() == pytest.approx(0.3, abs=0.003)
    for lane in range(4):                                           # every lane position is unbiased
        assert (~big[lane::4]).float().mean().item() == pytest.approx(0.3, abs=0.006)
    assert keep_mask((10,), 0.5)[1] == 0.5
    never, p_never = keep_mask((1000,), 0.999999)                   # p -> 1 still keeps p' < 1
    assert p_never == 65535 / 65536 and never.float().mean().item() < 0.01
    assert keep_scale((10,), 1e-6) is None                          # rounds to p' = 0: nothing to drop


def test_dropout_rescales_by_the_rounded_p_and_gradients_flow_through_kept_entries_only():
    torch.manual_seed(0)
    x = torch.ones(200_000, requires_grad=True)
    out = dropout(x, 0.3, True)
    p_used = 19661 / 65536
    assert out.detach().unique().tolist() == [0.0, pytest.approx(1 / (1 - p_used))]
    assert (out == 0).float().mean().item() == pytest.approx(0.3, abs=0.005)
    assert out.mean().item() == pytest.approx(1.0, abs=0.01)
    out.sum().backward()
    torch.testing.assert_close(x.grad, out.detach())                # d out / d x = mask / (1 - p')
    plain = torch.ones(50)
    assert dropout(plain, 0.3, False) is plain and dropout(plain, 0.0, True) is plain
