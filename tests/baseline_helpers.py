"""Shared fixtures and checks of the baseline model tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from mbrec.data.dataset import MultiBehaviorDataset, binary_csr
from mbrec.data.registry import default_data_root

DATA_ROOT = default_data_root() or Path("missing-data-root")
BEHAVIORS = ["view", "cart", "buy"]


def nested_dataset(seed: int = 0, n_users: int = 14, n_items: int = 11) -> MultiBehaviorDataset:
    """buy ⊂ cart ⊂ view plus one cart pair outside view; user 0 has no view/cart, item 0 is never used."""
    rng = np.random.default_rng(seed)
    view = rng.random((n_users, n_items)) < 0.45
    view[:, 0] = False
    cart = view & (rng.random(view.shape) < 0.5)
    buy = cart & (rng.random(view.shape) < 0.6)
    view[0], cart[0] = False, False
    buy[0, 1:3] = True
    cart[1, np.flatnonzero(~view[1])[-1]] = True
    for u in range(1, n_users):                      # every user has a buy
        if not buy[u].any():
            i = np.flatnonzero(view[u])[0] if view[u].any() else 1
            view[u, i] = cart[u, i] = buy[u, i] = True
    shape = (n_users, n_items)
    train = {b: binary_csr(*np.nonzero(m), shape) for b, m in zip(BEHAVIORS, (view, cart, buy), strict=True)}
    test_items = rng.integers(1, n_items, size=n_users)
    return MultiBehaviorDataset("nested", n_users, n_items, list(BEHAVIORS), train,
                                binary_csr(np.arange(n_users), test_items, shape))


def dense(mat: sp.spmatrix) -> torch.Tensor:
    return torch.from_numpy(mat.toarray()).float()


def mean_bpr(margin: torch.Tensor) -> float:
    """mean −ln σ(margin) = mean [max(−x, 0) + ln(1 + e^{−|x|})], written out (stable for large |x|)."""
    x = margin.detach().double().numpy()
    return float(np.mean(np.maximum(-x, 0.0) + np.log1p(np.exp(-np.abs(x)))))


def grads(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, params))


def assert_close_all(got: list[torch.Tensor], want: list[torch.Tensor], **tol) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g.float(), w.float(), **tol)


# ============================================================================================== MBGCN
