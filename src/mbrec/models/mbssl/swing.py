r"""Swing similarity (MBSSL Eq. 6, as the released similarity files compute it) and false-negative sets.

For a binary matrix :math:`X` (rows × columns) with neighbour sets :math:`N(\cdot)` the swing similarity
between two distinct rows is a sum over **unordered pairs of distinct** shared columns:

.. math::
    S(s, s') = \sum_{\{a, b\} \subseteq N(s) \cap N(s'),\ a < b} \frac{1}{\alpha + |N(a) \cap N(b)|},
    \qquad S(s, s) = 0.

User–user similarity is ``swing_similarity(R)``, item–item similarity ``swing_similarity(R.T)``.

Computation (no loop over rows, no dense rows × rows matrix). Let :math:`P` have one row per column
pair :math:`(a, b)` with :math:`P[(a,b), s] = X[s,a] X[s,b]` and let :math:`w_{ab} = 1/(\alpha + C_{ab})`
with :math:`C_{ab} = \sum_s P[(a,b), s]`. Then :math:`S = P^T \mathrm{diag}(w) P` with the diagonal
cleared. :math:`P^T` is built directly in CSR form from the *wedges* (a row ``s`` and two of its columns
``a < b``, generated row by row); :math:`C_{ab}` is a ``bincount`` over pair keys, and pairs with
:math:`C_{ab} = 1` (they only touch the diagonal) are dropped. Wedges are generated in blocks of first
columns ``a`` so memory stays bounded; the work of the sparse product is the number of butterflies
(2×2 bicliques).

False negatives (§3.2): for row ``s`` let ``t`` be its N-th largest value **counting zeros**; then
``FN(s) = {s' : S(s, s') > t}``. A row with fewer than N nonzeros loses all of them, ties at ``t`` are
kept, and ``s`` itself (``S(s, s) = 0``) is never removed. Sets are stored as CSR index arrays and cached
on disk (``MBREC_CACHE_DIR`` or ``~/.cache/mbrec``), keyed by a hash of the graphs, α, N and the side.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp

Side = Literal["user", "item"]
CACHE_VERSION = b"mbrec-swing-fn-v1"


def ragged_arange(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of ``arange(starts[j], starts[j] + counts[j])`` over j (int64)."""
    starts = np.asarray(starts, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    group_offsets = np.cumsum(counts) - counts                       # where each group begins in the output
    return np.repeat(starts - group_offsets, counts) + np.arange(total, dtype=np.int64)


@dataclass(frozen=True)
class FalseNegatives:
    """False-negative sets of ``n`` nodes as CSR index arrays: ``FN(s) = indices[indptr[s]:indptr[s+1]]``."""

    indptr: np.ndarray
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def counts(self) -> np.ndarray:
        """``|FN(s)|`` for every node, ``[n]``."""
        return np.diff(self.indptr)

    def select(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(position j in nodes, false negative of nodes[j])`` pairs, both ``[F]`` int64."""
        nodes = np.asarray(nodes, dtype=np.int64)
        counts = self.indptr[nodes + 1] - self.indptr[nodes]
        positions = np.repeat(np.arange(len(nodes), dtype=np.int64), counts)
        return positions, self.indices[ragged_arange(self.indptr[nodes], counts)].astype(np.int64)


# ------------------------------------------------------------------------------------------ similarity
def _wedge_blocks(per_column: np.ndarray, max_wedges: int, max_keys: int,
                  n_columns: int) -> list[tuple[int, int]]:
    """Split first-column ids into ``[lo, hi)`` blocks of at most ``max_wedges`` wedges and
    ``max_keys`` pair keys (a column with more wedges than the budget gets a block of its own)."""
    blocks: list[tuple[int, int]] = []
    width_cap = max(1, max_keys // max(n_columns, 1))
    cumulative = np.concatenate([[0], np.cumsum(per_column)])
    lo = 0
    while lo < len(per_column):
        hi = int(np.searchsorted(cumulative, cumulative[lo] + max_wedges, side="right")) - 1
        hi = min(max(hi, lo + 1), lo + width_cap, len(per_column))
        blocks.append((lo, hi))
        lo = hi
    return blocks


def swing_similarity(matrix: sp.spmatrix, alpha: float = 0.5, max_wedges: int = 1 << 23,
                     max_keys: int = 1 << 21) -> sp.csr_matrix:
    """Swing similarity between the rows of a binary sparse ``rows × columns`` matrix (module docstring).

    Returns a symmetric float64 CSR ``rows × rows`` matrix with an empty diagonal.
    ``max_wedges`` / ``max_keys`` bound the memory of one block (about 60 bytes per wedge).
    """
    x = sp.csr_matrix(matrix, dtype=np.float64)
    x.sum_duplicates()
    x.eliminate_zeros()                                  # only the nonzero pattern counts
    x.sort_indices()
    n_rows, n_columns = x.shape
    row_end = np.repeat(x.indptr[1:], np.diff(x.indptr)).astype(np.int64)     # end of each entry's row
    row_of = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(x.indptr))
    entries = np.arange(x.nnz, dtype=np.int64)
    partners = row_end - entries - 1                  # later columns of the same row: wedges started here
    per_column = np.bincount(x.indices, weights=partners, minlength=n_columns).astype(np.int64)
    similarity = sp.csr_matrix((n_rows, n_rows), dtype=np.float64)
    for lo, hi in _wedge_blocks(per_column, max_wedges, max_keys, n_columns):
        chosen = np.flatnonzero((x.indices >= lo) & (x.indices < hi) & (partners > 0))
        first = np.repeat(chosen, partners[chosen])                       # entry of column a, per wedge
        second = ragged_arange(chosen + 1, partners[chosen])             # entry of column b > a (same row)
        keys = (x.indices[first].astype(np.int64) - lo) * n_columns + x.indices[second]
        shared = np.bincount(keys, minlength=(hi - lo) * n_columns)     # C_ab per pair key
        multiple = shared >= 2                                            # C_ab = 1 only touches the diagonal
        useful = multiple[keys]
        if not useful.any():
            continue
        pair_id = (np.cumsum(multiple) - 1)[keys[useful]]                 # compact ids of the kept pairs
        rows = row_of[first[useful]]                                      # nondecreasing (row-major wedges)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_rows))])
        weights = 1.0 / (alpha + shared[multiple])
        n_pairs = len(weights)
        incidence = sp.csr_matrix((np.ones(len(pair_id)), pair_id, indptr), shape=(n_rows, n_pairs))
        weighted = sp.csr_matrix((weights[pair_id], pair_id, indptr), shape=(n_rows, n_pairs))
        similarity = similarity + (weighted @ incidence.T.tocsr()).tocsr()   # P^T diag(w) P
    similarity.setdiag(0.0)
    similarity.eliminate_zeros()
    similarity.sort_indices()
    return similarity


def mean_swing_similarity(graphs: Sequence[sp.spmatrix], side: Side, alpha: float = 0.5) -> sp.csr_matrix:
    """Average of the per-graph swing similarities of users (``side="user"``) or items."""
    if not graphs:
        raise ValueError("mean_swing_similarity needs at least one graph")
    total = None
    for graph in graphs:
        mat = sp.csr_matrix(graph)
        sim = swing_similarity(mat if side == "user" else mat.T.tocsr(), alpha)
        total = sim if total is None else (total + sim).tocsr()
    return (total / len(graphs)).tocsr()


# ------------------------------------------------------------------------------------- false negatives
def false_negative_sets(similarity: sp.spmatrix, n: int, max_cells: int = 1 << 22) -> FalseNegatives:
    """``FN(s) = {s' : S(s,s') > t_s}``, ``t_s`` = N-th largest value of row ``s`` counting zeros.

    Values are compared in float32, so sums that differ only by their rounding order tie. Rows with
    fewer than N nonzeros have ``t_s = 0``. The others are taken in order of length, in
    blocks padded with zeros to dense ``[rows, width]`` arrays of at most ``max_cells`` cells (one row
    always fits), and ``t_s`` comes from ``np.partition``.
    """
    if n < 1:
        raise ValueError(f"the false-negative size N must be >= 1, got {n}")
    sim = sp.csr_matrix(similarity, dtype=np.float64)
    sim.sum_duplicates()
    sim.sort_indices()
    n_rows = sim.shape[0]
    lengths = np.diff(sim.indptr)
    row_of = np.repeat(np.arange(n_rows), lengths)
    values = sim.data.astype(np.float32)      # ties are judged in float32: summation order cannot split them
    keep = values > 0                                            # final for rows with < N nonzeros (t = 0)
    long_rows = np.flatnonzero(lengths >= n)
    long_rows = long_rows[np.argsort(lengths[long_rows], kind="stable")]
    start = 0
    while start < len(long_rows):
        widths = lengths[long_rows[start:]]                      # nondecreasing
        fits = np.arange(1, len(widths) + 1) * widths <= max_cells
        stop = start + max(1, int(fits.sum()))
        rows = long_rows[start:stop]
        entries = ragged_arange(sim.indptr[rows], lengths[rows])
        local = np.repeat(np.arange(len(rows)), lengths[rows])
        dense = np.zeros((len(rows), int(lengths[rows].max())), dtype=np.float32)
        dense[local, entries - sim.indptr[rows][local]] = values[entries]
        threshold = -np.partition(-dense, n - 1, axis=1)[:, n - 1]      # N-th largest (row length >= N)
        keep[entries] = values[entries] > threshold[local]
        start = stop
    counts = np.bincount(row_of[keep], minlength=n_rows)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return FalseNegatives(indptr, sim.indices[keep].astype(np.int64))


# ------------------------------------------------------------------------------------------ disk cache
def default_cache_dir() -> Path:
    """``$MBREC_CACHE_DIR`` when set, else ``~/.cache/mbrec``."""
    env = os.environ.get("MBREC_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "mbrec"


def cache_key(graphs: Sequence[sp.spmatrix], side: Side, alpha: float, n: int) -> str:
    """Hash of the graphs' shapes and nonzero patterns (in order), the side, α and N."""
    h = hashlib.sha256(CACHE_VERSION)
    h.update(f"{side}|{float(alpha)!r}|{int(n)}|{len(graphs)}".encode())
    for graph in graphs:
        mat = sp.csr_matrix(graph)
        mat.sum_duplicates()
        mat.eliminate_zeros()
        mat.sort_indices()
        h.update(f"{mat.shape}".encode())
        h.update(np.ascontiguousarray(mat.indptr, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(mat.indices, dtype=np.int64).tobytes())
    return h.hexdigest()[:24]


def swing_false_negatives(graphs: Sequence[sp.spmatrix], side: Side, n: int, alpha: float = 0.5,
                          cache_dir: str | os.PathLike | None = None,
                          use_cache: bool = True) -> FalseNegatives:
    """False-negative sets of users or items from the (mean) swing similarity of ``graphs``.

    ``graphs`` are ``users × items`` binary matrices: the target graph alone (``sim_behaviors:
    target``) or every behavior's graph (``mean``). With ``use_cache`` the sets are read from / written
    to ``<cache_dir>/swing_fn_<side>_<key>.npz`` (written to a temporary file, then renamed).
    """
    path = None
    if use_cache:
        folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        path = folder / f"swing_fn_{side}_{cache_key(graphs, side, alpha, n)}.npz"
        if path.exists():
            with np.load(path) as stored:
                return FalseNegatives(stored["indptr"], stored["indices"])
    sets = false_negative_sets(mean_swing_similarity(graphs, side, alpha), n)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.stem, suffix=".tmp",
                                         delete=False) as fh:
            np.savez(fh, indptr=sets.indptr, indices=sets.indices)
            tmp_name = fh.name
        os.replace(tmp_name, path)
    return sets
