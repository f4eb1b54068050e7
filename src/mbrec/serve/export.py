"""Exports of evaluation results."""

from __future__ import annotations

import csv
import io

import numpy as np

from mbrec.data.dataset import MultiBehaviorDataset
from mbrec.eval.evaluator import EvalResult
from mbrec.train.checkpoint import atomic_write_bytes


def write_per_user_csv(path: str, result: EvalResult, dataset: MultiBehaviorDataset) -> None:
    """One row per evaluated user: id, number of target training items, every metric."""
    names = sorted(result.per_user)
    ids = dataset.user_ids if dataset.user_ids is not None else np.arange(dataset.n_users)
    n_train = np.diff(dataset.target_train.indptr)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["user", "n_target_train", *names])
    for j, u in enumerate(result.users):
        writer.writerow([ids[u], int(n_train[u]), *(f"{result.per_user[m][j]:.6g}" for m in names)])
    atomic_write_bytes(path, lambda fh: fh.write(buf.getvalue().encode("utf-8")))
