"""The in-memory multi-behavior dataset.

A dataset holds M users, N items and K behaviors ordered upstream -> target (the target is last).
Every behavior has one binary ``M x N`` CSR matrix of *training* interactions. The held-out pairs of the
target behavior are a binary CSR matrix too (``test``; several items per user allowed) and, optionally,
``valid``. Original ids (strings) are kept when the data came from an event log, so recommendations can
be returned in the caller's ids.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp


def binary_csr(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """Binary CSR matrix from coordinate arrays; duplicate pairs collapse to one, indices sorted."""
    data = np.ones(len(rows), dtype=np.float32)
    mat = sp.csr_matrix((data, (np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64))),
                        shape=shape)
    mat.sum_duplicates()
    mat.data[:] = 1.0
    mat.sort_indices()
    return mat


@dataclass
class MultiBehaviorDataset:
    """Training graphs per behavior plus held-out target pairs.

    Attributes:
        name: dataset name (used in result records).
        n_users, n_items: M and N.
        behaviors: behavior names, upstream first, target last.
        train: behavior name -> binary ``M x N`` CSR of training interactions.
        test: binary ``M x N`` CSR of held-out target pairs (a user may have several).
        valid: optional binary ``M x N`` CSR of validation target pairs (disjoint from train and test).
        user_ids, item_ids: optional original ids; ``user_ids[u]`` is the id of internal user ``u``.
    """

    name: str
    n_users: int
    n_items: int
    behaviors: list[str]
    train: dict[str, sp.csr_matrix]
    test: sp.csr_matrix
    valid: sp.csr_matrix | None = None
    user_ids: np.ndarray | None = None
    item_ids: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.behaviors:
            raise ValueError("a dataset needs at least one behavior")
        missing = [b for b in self.behaviors if b not in self.train]
        if missing:
            raise ValueError(f"no training matrix for behaviors {missing}")
        shape = (self.n_users, self.n_items)
        for b in self.behaviors:
            if self.train[b].shape != shape:
                raise ValueError(f"behavior {b!r} has shape {self.train[b].shape}, expected {shape}")
        if self.test.shape != shape:
            raise ValueError(f"test has shape {self.test.shape}, expected {shape}")

    # ------------------------------------------------------------------ basic views
    @property
    def target(self) -> str:
        """Name of the target behavior (the last one)."""
        return self.behaviors[-1]

    @property
    def n_behaviors(self) -> int:
        return len(self.behaviors)

    @property
    def target_train(self) -> sp.csr_matrix:
        return self.train[self.target]

    def matrices(self) -> list[sp.csr_matrix]:
        """Training matrices in behavior order (upstream first)."""
        return [self.train[b] for b in self.behaviors]

    def split(self, name: str) -> sp.csr_matrix:
        """Held-out pairs of ``"test"`` or ``"valid"``."""
        if name == "test":
            return self.test
        if name == "valid":
            if self.valid is None:
                raise ValueError(f"dataset {self.name!r} has no validation split")
            return self.valid
        raise ValueError(f"unknown split {name!r} (use 'test' or 'valid')")

    def eval_users(self, split: str = "test") -> np.ndarray:
        """Users with at least one held-out pair in ``split``, ascending."""
        mat = self.split(split)
        return np.flatnonzero(np.diff(mat.indptr) > 0)

    def fingerprint(self) -> str:
        """Short hash of the sizes and all training/held-out pairs (keys caches and checkpoints)."""
        h = hashlib.sha256()
        h.update(f"{self.n_users},{self.n_items},{','.join(self.behaviors)}".encode())
        mats = [*self.matrices(), self.test] + ([self.valid] if self.valid is not None else [])
        for m in mats:
            h.update(np.ascontiguousarray(m.indptr, dtype=np.int64).tobytes())
            h.update(np.ascontiguousarray(m.indices, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    def summary(self) -> dict:
        """Counts used by ``mbrec data info`` and result records."""
        cells = self.n_users * self.n_items
        out = {
            "name": self.name,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "behaviors": list(self.behaviors),
            "target": self.target,
            "train": {b: int(self.train[b].nnz) for b in self.behaviors},
            "density": {b: self.train[b].nnz / cells for b in self.behaviors},
            "test_pairs": int(self.test.nnz),
            "test_users": int(len(self.eval_users("test"))),
        }
        if self.valid is not None:
            out["valid_pairs"] = int(self.valid.nnz)
            out["valid_users"] = int(len(self.eval_users("valid")))
        out["test_pairs_in_behavior"] = {
            b: int(self.test.multiply(self.train[b]).nnz) for b in self.behaviors[:-1]
        }
        return out
