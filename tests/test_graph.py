"""Graph layer: bipartite adjacency, normalisations, cumulative/union graphs and the SpMM autograd op."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from mbrec.data.dataset import binary_csr
from mbrec.graph import (
    SparseOperator,
    bipartite,
    cumulative,
    normalize,
    normalized_bipartite,
    spmm,
    union,
)

M, N, D = 40, 30, 8


def random_interactions(seed: int, density: float = 0.1, shape: tuple[int, int] = (M, N)) -> sp.csr_matrix:
    """Random binary matrix; user 0 and item 0 are isolated (no interaction)."""
    rng = np.random.default_rng(seed)
    dense = rng.random(shape) < density
    dense[0, :] = False
    dense[:, 0] = False
    rows, cols = np.nonzero(dense)
    return binary_csr(rows, cols, shape)


def coo_tensor(mat: sp.spmatrix) -> torch.Tensor:
    coo = sp.coo_matrix(mat, dtype=np.float32)
    idx = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    values = torch.from_numpy(coo.data)
    return torch.sparse_coo_tensor(idx, values, coo.shape, check_invariants=True).coalesce()


# ---------------------------------------------------------------------------------------------- adjacency
def test_bipartite_layout_users_first_and_weights_kept():
    r = sp.csr_matrix(np.array([[0, 2, 0], [1, 0, 3]], dtype=np.float32))
    a = bipartite(r).toarray()
    expected = np.zeros((5, 5), dtype=np.float32)
    expected[:2, 2:] = r.toarray()
    expected[2:, :2] = r.toarray().T
    np.testing.assert_array_equal(a, expected)


def test_left_normalisation_rows_sum_to_one_and_isolated_rows_are_zero():
    r = random_interactions(0)
    a = normalized_bipartite(r, "left")
    sums = np.asarray(a.sum(axis=1)).ravel()
    deg = np.asarray(bipartite(r).sum(axis=1)).ravel()
    np.testing.assert_allclose(sums[deg > 0], 1.0, rtol=1e-6)
    assert np.all(sums[deg == 0] == 0)
    assert deg[0] == 0 and deg[M] == 0  # user 0 and item 0 are isolated
    # entry (u, M+i) = 1/d_u
    coo = a.tocoo()
    np.testing.assert_allclose(coo.data, 1.0 / deg[coo.row], rtol=1e-6)
    assert np.isfinite(a.data).all()


def test_right_normalisation_columns_sum_to_one():
    r = random_interactions(1)
    a = normalized_bipartite(r, "right")
    sums = np.asarray(a.sum(axis=0)).ravel()
    deg = np.asarray(bipartite(r).sum(axis=0)).ravel()
    np.testing.assert_allclose(sums[deg > 0], 1.0, rtol=1e-6)
    assert np.all(sums[deg == 0] == 0)


def test_symmetric_normalisation_entries_are_inverse_sqrt_degree_products():
    r = random_interactions(2)
    a = normalized_bipartite(r, "symmetric")
    assert abs(a - a.T).max() == 0
    du = np.asarray(r.sum(axis=1)).ravel()
    di = np.asarray(r.sum(axis=0)).ravel()
    coo = r.tocoo()
    block = a[:M, M:].toarray()
    np.testing.assert_allclose(block[coo.row, coo.col], 1.0 / np.sqrt(du[coo.row] * di[coo.col]), rtol=1e-6)
    assert a[:M, :M].nnz == 0 and a[M:, M:].nnz == 0
    assert a[0].nnz == 0 and a[M].nnz == 0  # isolated user / item rows stay zero
    assert a[:, 0].nnz == 0


def test_self_loops_enter_the_degree():
    # one user with two items: degrees with self loops are user 3, items 2 and 2
    r = sp.csr_matrix(np.array([[1, 1]], dtype=np.float32))
    a = normalize(bipartite(r), "symmetric", self_loops=True).toarray()
    d = np.array([3.0, 2.0, 2.0])
    expected = (np.eye(3) + bipartite(r).toarray()) / np.sqrt(np.outer(d, d))
    np.testing.assert_allclose(a, expected, rtol=1e-6)


def test_none_normalisation_and_unknown_mode():
    r = random_interactions(3)
    assert abs(normalize(bipartite(r), "none") - bipartite(r)).max() == 0
    with pytest.raises(ValueError, match="unknown normalisation"):
        normalize(bipartite(r), "row")


def test_cumulative_weights_count_behaviors_in_the_prefix():
    mats = [random_interactions(s, density=0.3) for s in (4, 5, 6)]
    out = cumulative(mats)
    assert len(out) == 3
    for k, c in enumerate(out):
        expected = sum(m.toarray() for m in mats[: k + 1])
        np.testing.assert_array_equal(c.toarray(), expected)
    assert out[2].max() == 3  # some pair is in all three behaviors: weight 3
    # the prefix sums are independent copies
    out[0].data[:] = 7
    np.testing.assert_array_equal(out[1].toarray(), mats[0].toarray() + mats[1].toarray())


def test_union_is_binary_or():
    mats = [random_interactions(s, density=0.3) for s in (7, 8, 9)]
    u = union(mats)
    expected = (sum(m.toarray() for m in mats) > 0).astype(np.float32)
    np.testing.assert_array_equal(u.toarray(), expected)
    assert set(np.unique(u.data)) == {1.0}


# ---------------------------------------------------------------------------------------------- SpMM
@pytest.mark.parametrize("mode", ["left", "symmetric"])
def test_spmm_forward_and_gradient_equal_torch_sparse_mm(mode):
    adj = normalized_bipartite(random_interactions(10, density=0.15), mode)
    op = SparseOperator(adj)
    assert op.symmetric == (mode == "symmetric")
    torch.manual_seed(0)
    x = torch.randn(M + N, D)
    upstream = torch.randn(M + N, D)

    x1 = x.clone().requires_grad_()
    y1 = spmm(op, x1)
    y1.backward(upstream)

    x2 = x.clone().requires_grad_()
    y2 = torch.sparse.mm(coo_tensor(adj), x2)
    y2.backward(upstream)

    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-6)
    # and against the dense float64 reference: dL/dX = A^T G
    dense = torch.from_numpy(adj.toarray()).double()
    torch.testing.assert_close(x1.grad.double(), dense.T @ upstream.double(), rtol=1e-5, atol=1e-6)
    if mode == "left":  # the transpose matters: A^T G differs from A G for an asymmetric A
        assert not torch.allclose(x1.grad, (dense @ upstream.double()).float(), atol=1e-3)


def test_spmm_rectangular_matrix():
    r = random_interactions(11, density=0.2)
    op = SparseOperator(r)
    assert not op.symmetric and op.shape == (M, N)
    x = torch.randn(N, D, requires_grad=True)
    g = torch.randn(M, D)
    spmm(op, x).backward(g)
    torch.testing.assert_close(x.grad, torch.from_numpy(r.T.toarray()) @ g, rtol=1e-5, atol=1e-6)


def test_spmm_without_grad_input_builds_no_graph():
    adj = normalized_bipartite(random_interactions(12), "left")
    op = SparseOperator(adj)
    x = torch.randn(M + N, D)
    y = spmm(op, x)
    assert not y.requires_grad and y.grad_fn is None
    torch.testing.assert_close(y, torch.from_numpy(adj.toarray()) @ x, rtol=1e-5, atol=1e-6)
    # a constant input followed by a trained weight: only the weight gets a gradient
    weight = torch.randn(D, 1, requires_grad=True)
    (spmm(op, x) @ weight).sum().backward()
    torch.testing.assert_close(weight.grad, y.sum(0, keepdim=True).T, rtol=1e-5, atol=1e-5)
    assert x.grad is None


def test_spmm_two_layer_propagation_gradients():
    """LightGCN-style mean over two layers (with a nonlinearity between): gradients of the user table."""
    adj = normalized_bipartite(random_interactions(13, density=0.15), "left")
    op = SparseOperator(adj)
    ref = coo_tensor(adj)
    torch.manual_seed(1)
    users, items = torch.randn(M, D), torch.randn(N, D)
    target = torch.randn(M + N, D)

    def run(mm):
        u = users.clone().requires_grad_()
        ego = torch.cat([u, items])  # the item table is frozen
        h1 = mm(ego)
        h2 = mm(torch.tanh(h1))
        out = (ego + h1 + h2) / 3
        ((out - target) ** 2).sum().backward()
        return out, u.grad

    out1, grad1 = run(lambda x: spmm(op, x))
    out2, grad2 = run(lambda x: torch.sparse.mm(ref, x))
    torch.testing.assert_close(out1, out2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad1, grad2, rtol=1e-4, atol=1e-5)
    assert grad1.abs().sum() > 0


def test_sparse_operator_to_same_device_is_identity_and_symmetry_check():
    sym = SparseOperator(normalized_bipartite(random_interactions(14), "symmetric"))
    assert sym.to("cpu") is sym
    assert sym.transpose is sym.matrix
    left = SparseOperator(normalized_bipartite(random_interactions(14), "left"))
    assert left.transpose is not left.matrix
    np.testing.assert_array_equal(left.transpose.to_dense().numpy(), left.scipy.T.toarray())
    empty = SparseOperator(sp.csr_matrix((5, 5), dtype=np.float32))
    assert empty.symmetric and empty.nnz == 0


def test_row_block_operator_equals_the_rows_of_the_matrix():
    """SparseOperator.rows: A[index] and its transpose, and spmm through it = the same rows of A X."""
    op = SparseOperator(normalized_bipartite(random_interactions(15), "left"))
    index = np.array([0, 3, 4, 17, M + 1, M + 9, M + N - 1])
    block = op.rows(index)
    assert block.shape == (len(index), M + N) and not block.symmetric and block.nnz == op.scipy[index].nnz
    np.testing.assert_array_equal(block.matrix.to_dense().numpy(), op.scipy[index].toarray())
    np.testing.assert_array_equal(block.transpose.to_dense().numpy(), op.scipy[index].T.toarray())
    x = torch.randn(M + N, D, dtype=torch.float32, requires_grad=True)
    weights = torch.randn(len(index), D)
    (grad_block,) = torch.autograd.grad((spmm(block, x) * weights).sum(), x)
    (grad_full,) = torch.autograd.grad((spmm(op, x)[torch.from_numpy(index)] * weights).sum(), x)
    torch.testing.assert_close(spmm(block, x), spmm(op, x)[torch.from_numpy(index)])
    torch.testing.assert_close(grad_block, grad_full)


@pytest.mark.parametrize("width", [8, 32, 64, 70])
def test_column_chunked_product_equals_one_piece_bit_for_bit(width):
    """Dense rows (>= CPU_CHUNK_MIN_ROW_NNZ nonzeros) take the chunked CPU path; every output column of the
    forward and of the backward equals the one-piece CSR product exactly, sparse rows are not chunked."""
    spmm_module = importlib.import_module("mbrec.graph.spmm")   # the package re-exports the function
    adj = normalized_bipartite(random_interactions(14, density=0.9), "left")   # ~30 nonzeros per row
    op = SparseOperator(adj)
    assert op.nnz >= spmm_module.CPU_CHUNK_MIN_ROW_NNZ * op.shape[0]
    torch.manual_seed(2)
    x = torch.randn(M + N, width)
    upstream = torch.randn(M + N, width)
    calls = []
    original, original_addmm = torch.Tensor.__matmul__, torch.addmm

    def counting(self, other):
        calls.append(other.shape[1])
        return original(self, other)

    def counting_addmm(into, matrix, dense, **kwargs):
        calls.append(dense.shape[1])
        return original_addmm(into, matrix, dense, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.Tensor, "__matmul__", counting)
        mp.setattr(torch, "addmm", counting_addmm)
        xg = x.clone().requires_grad_()
        y = spmm(op, xg)
        y.backward(upstream)
    chunk = spmm_module.CPU_CHUNK_COLUMNS
    expected_pieces = [min(chunk, width - s) for s in range(0, width, chunk)] if width > chunk else [width]
    assert calls == expected_pieces * 2  # forward pieces, then backward pieces
    assert torch.equal(y, op.matrix @ x)
    assert torch.equal(xg.grad, op.transpose @ upstream)
    # a float32 product against the float64 one: float32 tolerances (float64 ones fail on rounding alone)
    torch.testing.assert_close(y, (torch.from_numpy(adj.toarray()).double() @ x.double()).float())

    sparse_op = SparseOperator(normalized_bipartite(random_interactions(15, density=0.05), "left"))
    calls.clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch.Tensor, "__matmul__", counting)
        mp.setattr(torch, "addmm", counting_addmm)
        spmm(sparse_op, x)
    assert calls == [width]


def test_chunked_product_overwrites_its_output_buffer():
    """The chunked path writes each chunk with ``addmm(beta=0, out=chunk)`` into uninitialised memory: torch
    must overwrite (not scale) the old contents, NaN included, or garbage would leak into the product."""
    op = SparseOperator(normalized_bipartite(random_interactions(16, density=0.9), "left"))
    x = torch.randn(M + N, 64)
    out = torch.full((M + N, 64), float("nan"))
    for start in (0, 32):
        chunk = out[:, start:start + 32]
        torch.addmm(chunk, op.matrix, x[:, start:start + 32], beta=0.0, out=chunk)
    assert torch.equal(out, op.matrix @ x)
