"""The fused weighted InfoNCE equals plain autograd maths (value and both gradients)."""

from __future__ import annotations

import pytest
import torch

from mbrec.losses.infonce import weighted_infonce


def reference(anchors, table, targets, weights, fn_rows, fn_cols, fn_fill):
    """The module docstring's loss with autograd's logsumexp over a dense logit matrix."""
    logits = anchors @ table.T
    if fn_rows is not None:
        mask = torch.zeros_like(logits, dtype=torch.bool)
        mask[fn_rows, fn_cols] = True
        logits = torch.where(mask, torch.full_like(logits, fn_fill), logits)
    positive = logits[torch.arange(len(targets)), targets]
    return ((torch.logsumexp(logits, dim=1) - positive) * weights).sum()


def problem(seed: int, scale: float, dtype=torch.float64, n_anchors=7, n_rows=11, dim=5, with_fn=True):
    g = torch.Generator().manual_seed(seed)
    anchors = (torch.nn.functional.normalize(torch.randn(n_anchors, dim, generator=g, dtype=dtype), dim=1)
               * scale).requires_grad_()
    table = torch.nn.functional.normalize(torch.randn(n_rows, dim, generator=g, dtype=dtype), dim=1)
    table.requires_grad_()
    targets = torch.randint(0, n_rows, (n_anchors,), generator=g)
    weights = torch.randint(1, 4, (n_anchors,), generator=g).to(dtype)
    fn_rows = fn_cols = None
    if with_fn:
        rows, cols = [], []
        for n in range(n_anchors):  # two false negatives per anchor, never its positive
            others = [c for c in torch.randperm(n_rows, generator=g).tolist() if c != targets[n]][:2]
            rows += [n, n]
            cols += others
        fn_rows, fn_cols = torch.tensor(rows), torch.tensor(cols)
    return anchors, table, targets, weights, fn_rows, fn_cols


@pytest.mark.parametrize("scale", [2.0, 10.0, 60.0])  # 60 > the no-shift bound: the row-max path
@pytest.mark.parametrize("fill", [0.0, float("-inf"), None])
def test_value_and_gradients_equal_autograd(scale, fill):
    anchors, table, targets, weights, fn_rows, fn_cols = problem(3, scale, with_fn=fill is not None)
    fused = weighted_infonce(anchors, table, targets, weights, scale, fn_rows, fn_cols, fill or 0.0)
    grads = torch.autograd.grad(fused * 1.7, [anchors, table])
    plain = reference(anchors, table, targets, weights, fn_rows, fn_cols, fill or 0.0)
    expected = torch.autograd.grad(plain * 1.7, [anchors, table])
    torch.testing.assert_close(fused, plain, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_float32_without_shift_matches_float64_at_a_cold_temperature():
    anchors, table, targets, weights, fn_rows, fn_cols = problem(5, 1 / 0.05, n_anchors=64, n_rows=3000, dim=16)
    want = reference(anchors, table, targets, weights, fn_rows, fn_cols, 0.0)
    a32, t32 = (anchors.detach().float().requires_grad_(), table.detach().float().requires_grad_())
    got = weighted_infonce(a32, t32, targets, weights.float(), 20.0, fn_rows, fn_cols, 0.0)
    assert abs(got.item() - want.item()) / abs(want.item()) < 1e-5


def test_a_retained_graph_gives_the_same_gradients_twice():
    anchors, table, targets, weights, fn_rows, fn_cols = problem(7, 5.0)
    loss = weighted_infonce(anchors, table, targets, weights, 5.0, fn_rows, fn_cols, 0.0)
    first = torch.autograd.grad(loss, [anchors, table], retain_graph=True)
    second = torch.autograd.grad(loss, [anchors, table])
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_false_negatives_pass_no_gradient_to_their_table_rows():
    anchors, table, targets, weights, _, _ = problem(11, 3.0, n_anchors=1, with_fn=False)
    others = [c for c in range(table.shape[0]) if c != targets[0]]
    fn_cols = torch.tensor(others[:1])
    loss = weighted_infonce(anchors, table, targets, weights, 3.0, torch.tensor([0]), fn_cols, 0.0)
    grad_table = torch.autograd.grad(loss, table)[0]
    assert torch.count_nonzero(grad_table[fn_cols[0]]) == 0
    assert torch.count_nonzero(grad_table[others[1]]) > 0


def test_unit_rows_equals_f_normalize_values_and_gradients():
    """The fused row normalisation gives F.normalize's rows and input gradient, including a zero row and
    a row shorter than eps (both divided by eps, no projection term), and passes gradcheck."""
    from mbrec.losses import unit_rows

    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64) * 3
    x[2] = 0.0
    x[4] = 1e-9 * torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    upstream = torch.randn(6, 4, generator=g, dtype=torch.float64)
    ours_in, ref_in = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = unit_rows(ours_in, eps=1e-6)
    ref = torch.nn.functional.normalize(ref_in, dim=-1, eps=1e-6)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=0)
    (ours * upstream).sum().backward()
    (ref * upstream).sum().backward()
    torch.testing.assert_close(ours_in.grad, ref_in.grad, rtol=1e-10, atol=0)
    assert float(ours_in.grad[4].abs().max()) > 1e5          # the short row's gradient is g / eps, not zero
    away = x.clone()
    away[2], away[4] = 1.0, -1.0                              # gradcheck away from the norm's kink at 0
    assert torch.autograd.gradcheck(lambda t: unit_rows(t), (away.requires_grad_(),))
