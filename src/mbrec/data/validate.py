"""Consistency checks and the ``mbrec data info`` table for a :class:`MultiBehaviorDataset`."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from mbrec.data.dataset import MultiBehaviorDataset

WARNING_PREFIX = "warning: "


def _matrix_problems(label: str, matrix: object, shape: tuple[int, int]) -> list[str]:
    """Type, shape and binary-value problems of one matrix."""
    if not sp.issparse(matrix):
        return [f"{label}: not a scipy sparse matrix ({type(matrix).__name__})"]
    problems = []
    if matrix.shape != shape:
        problems.append(f"{label}: shape {matrix.shape}, expected {shape}")
    csr = matrix.tocsr()
    if csr.nnz and not np.all(csr.data == 1):
        bad = csr.data[csr.data != 1]
        problems.append(f"{label}: {len(bad)} stored values are not 1 (e.g. {bad[0]!r}); "
                        "matrices must be binary")
    if not csr.has_canonical_format:
        csr = csr.copy()
        before = csr.nnz
        csr.sum_duplicates()
        if csr.nnz != before:
            problems.append(f"{label}: {before - csr.nnz} duplicate entries")
    return problems


def _overlap(a: sp.spmatrix, b: sp.spmatrix) -> int:
    return int(a.astype(bool).multiply(b.astype(bool)).nnz)


def _id_problems(ds: MultiBehaviorDataset) -> list[str]:
    problems = []
    checks = (("user_ids", ds.user_ids, ds.n_users), ("item_ids", ds.item_ids, ds.n_items))
    for label, ids, expected in checks:
        if ids is not None and len(ids) != expected:
            problems.append(f"{label}: {len(ids)} ids for {expected} {label.split('_')[0]}s")
        elif ids is not None and len(np.unique(ids)) != len(ids):
            problems.append(f"{label}: {len(ids) - len(np.unique(ids))} repeated ids")
    return problems


def _split_problems(ds: MultiBehaviorDataset) -> list[str]:
    problems = []
    target = ds.target_train
    if ds.test.nnz == 0:
        problems.append("test: no held-out pairs")
    if (inside := _overlap(ds.test, target)) > 0:
        problems.append(f"test: {inside} pairs are also in the {ds.target!r} training set")
    if ds.valid is not None:
        if (inside := _overlap(ds.valid, target)) > 0:
            problems.append(f"valid: {inside} pairs are also in the {ds.target!r} training set")
        if (inside := _overlap(ds.valid, ds.test)) > 0:
            problems.append(f"valid: {inside} pairs are also in the test set")
    return problems


def _user_warnings(ds: MultiBehaviorDataset) -> list[str]:
    warnings = []
    active = np.zeros(ds.n_users, dtype=bool)
    for behavior in ds.behaviors:
        active |= np.diff(ds.train[behavior].tocsr().indptr) > 0
    if (idle := int((~active).sum())) > 0:
        warnings.append(f"{WARNING_PREFIX}{idle} of {ds.n_users} users have no training interaction")
    test_users = ds.eval_users("test")
    no_target = int(np.sum(np.diff(ds.target_train.tocsr().indptr)[test_users] == 0))
    if no_target:
        warnings.append(f"{WARNING_PREFIX}{no_target} test users have no {ds.target!r} training interaction")
    return warnings


def validate_dataset(ds: MultiBehaviorDataset) -> list[str]:
    """Problems found in ``ds``, one line each; an empty list means the dataset is fine.

    Lines starting with ``"warning: "`` (:data:`WARNING_PREFIX`) are not errors, e.g. users without any
    training interaction.
    """
    shape = (ds.n_users, ds.n_items)
    problems: list[str] = []
    matrices = [(f"train[{b!r}]", ds.train.get(b)) for b in ds.behaviors] + [("test", ds.test)]
    if ds.valid is not None:
        matrices.append(("valid", ds.valid))
    for label, matrix in matrices:
        problems += _matrix_problems(label, matrix, shape)
    if problems:
        return problems
    problems += [f"train[{b!r}]: no interactions" for b in ds.behaviors if ds.train[b].nnz == 0]
    problems += _split_problems(ds) + _id_problems(ds)
    return problems + _user_warnings(ds)


def is_warning(line: str) -> bool:
    """Whether a :func:`validate_dataset` line is only a warning."""
    return line.startswith(WARNING_PREFIX)


def _table(rows: list[list[str]]) -> list[str]:
    """Rows of cells aligned in columns: the first column left-aligned, the others right-aligned."""
    widths = [max(len(row[k]) for row in rows if k < len(row)) for k in range(max(map(len, rows)))]
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[k]) if k == 0 else cell.rjust(widths[k]) for k, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return lines


def info_lines(ds: MultiBehaviorDataset) -> list[str]:
    """The ``mbrec data info`` report: sizes, per-behavior counts and density, held-out splits."""
    summary = ds.summary()
    lines = [
        f"dataset   {ds.name}",
        f"users     {ds.n_users:,}",
        f"items     {ds.n_items:,}",
        f"target    {ds.target}",
        "",
    ]
    rows = [["behavior", "pairs", "density", "per user", "test pairs inside"]]
    for behavior in ds.behaviors:
        count = summary["train"][behavior]
        inside = summary["test_pairs_in_behavior"].get(behavior)
        rows.append([
            behavior + (" (target)" if behavior == ds.target else ""), f"{count:,}",
            f"{summary['density'][behavior]:.5%}", f"{count / max(ds.n_users, 1):.2f}",
            "-" if inside is None else f"{inside:,}",
        ])
    lines += _table(rows)
    lines.append("")
    splits = [["split", "pairs", "users"],
              ["test", f"{summary['test_pairs']:,}", f"{summary['test_users']:,}"]]
    if ds.valid is not None:
        splits.append(["valid", f"{summary['valid_pairs']:,}", f"{summary['valid_users']:,}"])
    lines += _table(splits)
    if ds.user_ids is not None or ds.item_ids is not None:
        lines += ["", "original ids kept: " + ", ".join(
            label for label, ids in (("users", ds.user_ids), ("items", ds.item_ids)) if ids is not None)]
    return lines
