"""Bipartite adjacencies, normalisations and cumulative behavior graphs (scipy, built once).

Node tables are stacked users first: rows ``0..M-1`` are users, ``M..M+N-1`` are items.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import scipy.sparse as sp

Normalization = Literal["left", "symmetric", "right", "none"]


def bipartite(interactions: sp.spmatrix) -> sp.csr_matrix:
    r"""The ``(M+N) x (M+N)`` bipartite adjacency :math:`\mathrm{bip}(W) = [[0, W], [W^T, 0]]`.

    Edge weights are kept (a weighted ``W`` gives a weighted graph).
    """
    w = sp.csr_matrix(interactions, dtype=np.float32)
    out = sp.bmat([[None, w], [w.T, None]], format="csr", dtype=np.float32)
    out.sort_indices()
    return out


def _inverse(values: np.ndarray, power: float) -> np.ndarray:
    out = np.zeros_like(values, dtype=np.float64)
    nz = values > 0
    out[nz] = np.power(values[nz].astype(np.float64), -power)
    return out


def normalize(adj: sp.spmatrix, mode: Normalization = "symmetric", self_loops: bool = False) -> sp.csr_matrix:
    r"""Normalise a square adjacency.

    * ``left``: :math:`D^{-1} A` (rows sum to 1; rows of degree 0 stay zero),
    * ``symmetric``: :math:`D^{-1/2} A D^{-1/2}`,
    * ``right``: :math:`A D^{-1}`,
    * ``none``: :math:`A`.

    ``D`` is the diagonal of row sums of ``A`` (after adding the identity when ``self_loops``).
    A zero degree gives a zero factor, never ``inf``.
    """
    a = sp.csr_matrix(adj, dtype=np.float64)
    if self_loops:
        a = a + sp.identity(a.shape[0], dtype=np.float64, format="csr")
    deg = np.asarray(a.sum(axis=1)).ravel()
    if mode == "left":
        a = sp.diags(_inverse(deg, 1.0)) @ a
    elif mode == "right":
        a = a @ sp.diags(_inverse(deg, 1.0))
    elif mode == "symmetric":
        d = sp.diags(_inverse(deg, 0.5))
        a = d @ a @ d
    elif mode != "none":
        raise ValueError(f"unknown normalisation {mode!r} (left, symmetric, right, none)")
    out = sp.csr_matrix(a, dtype=np.float32)
    out.eliminate_zeros()
    out.sort_indices()
    return out


def cumulative(interactions: Sequence[sp.spmatrix]) -> list[sp.csr_matrix]:
    r"""Prefix sums :math:`C_k = \sum_{k' \le k} B_{k'}` (weighted: a pair in two behaviors weighs 2)."""
    out: list[sp.csr_matrix] = []
    acc: sp.csr_matrix | None = None
    for mat in interactions:
        m = sp.csr_matrix(mat, dtype=np.float32)
        acc = m if acc is None else (acc + m).tocsr()
        out.append(acc.copy())
    return out


def union(interactions: Sequence[sp.spmatrix]) -> sp.csr_matrix:
    """Binary union of several interaction matrices."""
    acc = sp.csr_matrix(interactions[0], dtype=np.float32)
    for m in interactions[1:]:
        acc = (acc + sp.csr_matrix(m, dtype=np.float32)).tocsr()
    acc.data[:] = 1.0
    acc.sort_indices()
    return acc


def normalized_bipartite(interactions: sp.spmatrix, mode: Normalization = "symmetric",
                         self_loops: bool = False) -> sp.csr_matrix:
    """``normalize(bipartite(R), mode, self_loops)`` — the usual one-liner for GCN recommenders."""
    return normalize(bipartite(interactions), mode=mode, self_loops=self_loops)
