"""Full-ranking evaluation of the target behavior.

For every evaluation user the model scores **all** items (``score_users``); the user's training
target items are masked (optionally other behaviors' too); each held-out item's exact rank is
``#{candidates with a higher score} + #{candidates with the same score and a smaller id}`` (a NaN score
counts as the lowest score); metrics
follow from the ranks (:mod:`mbrec.eval.metrics`). Work is batched over users; no per-user Python loops.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from mbrec.data.dataset import MultiBehaviorDataset
from mbrec.eval.metrics import ranking_metrics


@dataclass
class EvalResult:
    """Mean metrics plus per-user values (``per_user[name][j]`` belongs to ``users[j]``)."""

    metrics: dict[str, float]
    users: np.ndarray
    per_user: dict[str, np.ndarray] = field(default_factory=dict)


def _rows_to_torch(mat: sp.csr_matrix, users: np.ndarray, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(row position within ``users``, column) pairs of the rows ``users`` of ``mat``."""
    sub = mat[users].tocoo()
    return (torch.from_numpy(sub.row.astype(np.int64)).to(device),
            torch.from_numpy(sub.col.astype(np.int64)).to(device))


def exact_ranks(scores: torch.Tensor, rows: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """0-based rank of ``items[p]`` in row ``rows[p]`` of ``scores`` (ties: smaller item id first).

    Masked candidates must already hold ``-inf``. ``[B, N], [P], [P] -> [P]``.

    Two passes over the scores: ``#{score > target}`` and ``#{score == target}``. Only pairs whose target
    ties with another candidate (rare with real-valued scores) need the id comparison, done on those rows
    alone. When ``rows`` is ``0..B-1`` (one held-out item per user) the rows are not gathered. On the CPU
    the passes run in NumPy on the same memory (its comparisons and row sums are several times faster
    than torch's CPU kernels for these shapes).
    """
    if scores.device.type == "cpu":
        return torch.from_numpy(_ranks_numpy(scores.numpy(), rows.numpy(), items.numpy()))
    return _ranks_torch(scores, rows, items)


def _ranks_torch(scores: torch.Tensor, rows: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """:func:`exact_ranks` in torch (any device)."""
    target = scores[rows, items].unsqueeze(1)                     # [P, 1]
    row_scores = scores if _one_per_row(len(rows), scores.shape[0], rows) else scores[rows]
    higher = (row_scores > target).sum(1)
    tied = (row_scores == target).sum(1)                          # >= 1: the target itself
    crowded = torch.nonzero(tied > 1).squeeze(1)
    if len(crowded):
        ids = torch.arange(scores.shape[1], device=scores.device).unsqueeze(0)
        before = ((row_scores[crowded] == target[crowded]) & (ids < items[crowded].unsqueeze(1))).sum(1)
        higher = higher.index_add(0, crowded, before)
    return higher


def _one_per_row(n_pairs: int, n_rows: int, rows) -> bool:
    return n_pairs == n_rows and bool((rows == (np.arange(n_rows) if isinstance(rows, np.ndarray)
                                               else torch.arange(n_rows, device=rows.device))).all())


def _ranks_numpy(scores: np.ndarray, rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """:func:`exact_ranks` on NumPy arrays (``int64 [P]``)."""
    target = scores[rows, items][:, None]
    row_scores = scores if _one_per_row(len(rows), scores.shape[0], rows) else scores[rows]
    higher = (row_scores > target).sum(1, dtype=np.int64)
    tied = (row_scores == target).sum(1, dtype=np.int64)
    crowded = np.flatnonzero(tied > 1)
    if len(crowded):
        ids = np.arange(scores.shape[1])[None, :]
        higher[crowded] += ((row_scores[crowded] == target[crowded]) & (ids < items[crowded, None])).sum(1)
    return higher


@dataclass
class ScoredBatch:
    """One batch of evaluation users: ``scores`` ``[B, N]`` float32 with masked candidates at ``-inf`` (a
    buffer reused by the next batch), and the held-out pairs as (row in the batch, item), both ``[P]``."""

    users: np.ndarray
    scores: torch.Tensor
    rows: torch.Tensor
    items: torch.Tensor


def candidate_mask(dataset: MultiBehaviorDataset, split: str, mask_behaviors: list[str] | tuple = ()) -> sp.csr_matrix:
    """The (user, item) pairs that are not candidates in ``split`` (see :func:`evaluate`)."""
    held_out = dataset.split(split)
    mask = dataset.target_train.copy()
    for b in mask_behaviors:
        mask = mask + dataset.train[b]
    other = "valid" if split == "test" else "test"
    if dataset.valid is not None:
        mask = mask + dataset.split(other)
    mask = sp.csr_matrix(mask)
    mask = (mask - mask.multiply(held_out)).tocsr()               # never mask a held-out item
    mask.eliminate_zeros()
    return mask


@torch.no_grad()
def scored_batches(model, dataset: MultiBehaviorDataset, split: str = "test", batch_size: int = 2048,
                   mask_behaviors: list[str] | tuple = (), users: np.ndarray | None = None,
                   device: torch.device | str | None = None) -> Iterator[ScoredBatch]:
    """Masked all-item scores of the evaluation users, batch by batch, in eval mode (restored after)."""
    held_out = dataset.split(split)
    eval_users = dataset.eval_users(split) if users is None else np.asarray(users, dtype=np.int64)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    mask = candidate_mask(dataset, split, mask_behaviors)
    was_training = model.training
    model.eval()
    lowest = torch.finfo(torch.float32).min
    buffer: torch.Tensor | None = None
    try:
        for start in range(0, len(eval_users), batch_size):
            batch = eval_users[start:start + batch_size]
            raw = model.score_users(torch.from_numpy(batch).to(device))
            if buffer is None or buffer.shape[1] != raw.shape[1] or buffer.device != raw.device:
                buffer = raw.new_empty((min(batch_size, len(eval_users)), raw.shape[1]), dtype=torch.float32)
            # NaN (and -inf) scores rank last, yet still above the masked (-inf) candidates. ``scores`` is a
            # private float32 copy in one buffer reused by every batch (masking below writes into it, a model
            # may return a cached view, and a fresh [B, N] allocation per batch costs page faults on the CPU)
            scores = torch.nan_to_num(raw, nan=lowest, neginf=lowest, out=buffer[: len(batch)])
            m_rows, m_cols = _rows_to_torch(mask, batch, device)
            scores[m_rows, m_cols] = float("-inf")
            rows, items = _rows_to_torch(held_out, batch, device)
            yield ScoredBatch(batch, scores, rows, items)
    finally:
        model.train(was_training)


@torch.no_grad()
def evaluate(model, dataset: MultiBehaviorDataset, split: str = "test", ks: list[int] | tuple = (10, 50),
             batch_size: int = 2048, mask_behaviors: list[str] | tuple = (), users: np.ndarray | None = None,
             device: torch.device | str | None = None) -> EvalResult:
    """Evaluate ``model`` on the held-out pairs of ``split`` (``test`` or ``valid``).

    Candidates exclude each user's training target items and, for ``mask_behaviors``, those behaviors'
    training items (held-out items themselves are never masked). With a validation split present,
    evaluation on ``test`` also masks the validation items and vice versa (they are known positives).
    """
    eval_users = dataset.eval_users(split) if users is None else np.asarray(users, dtype=np.int64)
    ks = sorted(set(int(k) for k in ks))
    chunks: dict[str, list[torch.Tensor]] = {}
    for b in scored_batches(model, dataset, split, batch_size, mask_behaviors, eval_users, device):
        ranks = exact_ranks(b.scores, b.rows, b.items)
        for name, values in ranking_metrics(ranks, b.rows, len(b.users), ks).items():
            chunks.setdefault(name, []).append(values.cpu())
    per_user = {name: torch.cat(v).numpy() for name, v in chunks.items()}
    metrics = {name: float(v.mean()) if len(v) else 0.0 for name, v in per_user.items()}
    return EvalResult(metrics=metrics, users=eval_users, per_user=per_user)
