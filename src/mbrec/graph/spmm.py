r"""Sparse x dense matmul with a fast backward.

``torch.sparse.mm`` on a CSR matrix computes its backward through a transpose built on every call,
which on recommendation graphs is about 10x slower than the forward. :class:`SparseOperator` keeps
the CSR matrix **and** its transpose (the same object when the matrix is symmetric), and
:func:`spmm` is an autograd function whose backward is one more CSR product:

.. math::  Y = \hat A X, \qquad \frac{\partial \mathcal L}{\partial X} = \hat A^T \frac{\partial \mathcal L}{\partial Y}

No gradient flows into the matrix values (graphs are constants).

On CPU, a product whose matrix has many nonzeros per row is computed in column chunks of
``CPU_CHUNK_COLUMNS``: torch's CSR kernel re-reads a row of X for every nonzero, and a 32-column slice
of X stays in cache where a 64-column one does not. Each output column is computed exactly as without
chunking (tested bit for bit). Measured on the Beibei and Taobao graphs with 64 columns (2 threads,
idle machine): 1.5-3.5x faster forward at 19-163 nonzeros per row, equal at 14, slower at 7
(``benchmarks/bench_spmm_width.py`` records the sparse products MBSSL and HMG use).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

CPU_CHUNK_COLUMNS = 32
CPU_CHUNK_MIN_ROW_NNZ = 16


def _csr_tensor(mat: sp.csr_matrix, device: torch.device | str, copy: bool = True) -> torch.Tensor:
    """A torch CSR tensor of ``mat`` (sorted, float32); ``copy=False`` lets it share arrays that already have
    the right types with ``mat`` (for a matrix nobody else holds)."""
    mat = sp.csr_matrix(mat, dtype=np.float32)
    mat.sort_indices()
    # int32 indices when they fit: MKL otherwise converts int64 indices on every product
    index = np.int32 if max(mat.nnz, *mat.shape) < np.iinfo(np.int32).max else np.int64
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(mat.indptr.astype(index, copy=copy)),
            torch.from_numpy(mat.indices.astype(index, copy=copy)),
            torch.from_numpy(mat.data.astype(np.float32, copy=copy)),
            size=mat.shape,
            device=device,
            check_invariants=False,
        )


class SparseOperator:
    """A constant sparse matrix ready for :func:`spmm` (CSR tensor + cached CSR transpose).

    Args:
        matrix: scipy sparse matrix, shape ``(R, C)``.
        device: where the tensors live.
        symmetric: ``True`` to reuse the matrix as its own transpose; ``None`` checks it.
        copy: ``False`` lets the CSR tensor share the arrays of ``matrix`` (one that nobody else holds).
    """

    def __init__(self, matrix: sp.spmatrix, device: torch.device | str = "cpu",
                 symmetric: bool | None = None, copy: bool = True) -> None:
        mat = sp.csr_matrix(matrix, dtype=np.float32)
        if symmetric is None:
            symmetric = mat.shape[0] == mat.shape[1] and abs(mat - mat.T).max() <= 1e-7 if mat.nnz else True
        self.shape = mat.shape
        self.nnz = int(mat.nnz)
        self.symmetric = bool(symmetric)
        self.scipy = mat
        self.matrix = _csr_tensor(mat, device, copy=copy)
        self.transpose = self.matrix if self.symmetric else _csr_tensor(mat.T.tocsr(), device, copy=False)

    @classmethod
    def from_interactions(cls, interactions: sp.spmatrix, mode: str = "symmetric",
                          device: torch.device | str = "cpu") -> SparseOperator:
        """Operator of the normalised bipartite graph of an ``M x N`` interaction matrix
        (``mode``: ``symmetric`` or ``left``, see :func:`mbrec.graph.adjacency.normalize`)."""
        from mbrec.graph.adjacency import normalized_bipartite

        return cls(normalized_bipartite(interactions, mode), device=device, symmetric=mode == "symmetric")

    def rows(self, index: np.ndarray) -> SparseOperator:
        """The row block ``A[index]`` ``[len(index), C]`` with its transpose, as a new operator; its arrays
        are fresh, so the CSR tensors share them instead of copying (one per training step in DFME)."""
        return SparseOperator(self.scipy[index], self.device, symmetric=False, copy=False)

    @property
    def device(self) -> torch.device:
        return self.matrix.device

    def to(self, device: torch.device | str) -> SparseOperator:
        """A copy on ``device`` (returns ``self`` when already there)."""
        target = torch.device(device)
        if target.type == self.device.type and target.index in (None, self.device.index):  # "cuda" = "cuda:0"
            return self
        return SparseOperator(self.scipy, device=device, symmetric=self.symmetric)

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        return spmm(self, x)


def csr_product(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``matrix @ x`` for a CSR ``matrix [R, C]`` and a dense ``x [C, d]``; column-chunked on CPU when the
    matrix has at least ``CPU_CHUNK_MIN_ROW_NNZ`` nonzeros per row (module docstring)."""
    x = x.contiguous()
    rows, width = matrix.shape[0], x.shape[1]
    dense_rows = matrix._nnz() >= CPU_CHUNK_MIN_ROW_NNZ * max(rows, 1)
    if x.device.type != "cpu" or width <= CPU_CHUNK_COLUMNS or not dense_rows:
        return matrix @ x
    out = x.new_empty(rows, width)
    for start in range(0, width, CPU_CHUNK_COLUMNS):
        stop = min(start + CPU_CHUNK_COLUMNS, width)
        chunk = out[:, start:stop]
        # beta 0 with out=: written in place, no zero-fill of a temporary and no copy back (10-30 % faster
        # per product than `out[:, a:b] = matrix @ x[:, a:b].contiguous()`, same bits)
        torch.addmm(chunk, matrix, x[:, start:stop], beta=0.0, out=chunk)
    return out


class _SpMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, matrix: torch.Tensor, transpose: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.transpose = transpose
        return csr_product(matrix, x)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_x = csr_product(ctx.transpose, grad_out) if ctx.needs_input_grad[2] else None
        return None, None, grad_x


def spmm(op: SparseOperator, x: torch.Tensor) -> torch.Tensor:
    r"""``op.matrix @ x`` (``[R, C] x [C, d] -> [R, d]``) with backward ``op.transpose @ grad``."""
    if not x.requires_grad:
        return csr_product(op.matrix, x)
    return _SpMM.apply(op.matrix, op.transpose, x.contiguous())
