"""Full-ranking evaluation of the target behavior.

For every evaluation user the model scores **all** items (``score_users``); the user's training
target items are masked (optionally other behaviors' too); each held-out item's exact rank is
``#{candidates with a higher score} + #{candidates with the same score and a smaller id}`` (a NaN score
counts as the lowest score); metrics
follow from the ranks (:mod:`mbrec.eval.metrics`). Work is batched over users; no per-user Python loops.
"""

from __future__ import annotations

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
    """
    target = scores[rows, items].unsqueeze(1)                     # [P, 1]
    row_scores = scores[rows]                                      # [P, N]
    higher = (row_scores > target).sum(1)
    ids = torch.arange(scores.shape[1], device=scores.device).unsqueeze(0)
    tied_before = ((row_scores == target) & (ids < items.unsqueeze(1))).sum(1)
    return higher + tied_before


@torch.no_grad()
def evaluate(model, dataset: MultiBehaviorDataset, split: str = "test", ks: list[int] | tuple = (10, 50),
             batch_size: int = 2048, mask_behaviors: list[str] | tuple = (), users: np.ndarray | None = None,
             device: torch.device | str | None = None) -> EvalResult:
    """Evaluate ``model`` on the held-out pairs of ``split`` (``test`` or ``valid``).

    Candidates exclude each user's training target items and, for ``mask_behaviors``, those behaviors'
    training items (held-out items themselves are never masked). With a validation split present,
    evaluation on ``test`` also masks the validation items and vice versa (they are known positives).
    """
    held_out = dataset.split(split)
    eval_users = dataset.eval_users(split) if users is None else np.asarray(users, dtype=np.int64)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    mask = dataset.target_train.copy()
    for b in mask_behaviors:
        mask = mask + dataset.train[b]
    other = "valid" if split == "test" else "test"
    if dataset.valid is not None:
        mask = mask + dataset.split(other)
    mask = sp.csr_matrix(mask)
    mask = (mask - mask.multiply(held_out)).tocsr()               # never mask a held-out item
    mask.eliminate_zeros()

    was_training = model.training
    model.eval()
    ks = sorted(set(int(k) for k in ks))
    chunks: dict[str, list[torch.Tensor]] = {}
    lowest = torch.finfo(torch.float32).min
    try:
        for start in range(0, len(eval_users), batch_size):
            batch = eval_users[start:start + batch_size]
            # a private float32 copy: masking below writes into it, and a model may return a cached view
            scores = model.score_users(torch.from_numpy(batch).to(device)).to(torch.float32, copy=True)
            # NaN (and -inf) scores rank last, yet still above the masked (-inf) candidates
            torch.nan_to_num(scores, nan=lowest, neginf=lowest, out=scores)
            m_rows, m_cols = _rows_to_torch(mask, batch, device)
            scores[m_rows, m_cols] = float("-inf")
            rows, items = _rows_to_torch(held_out, batch, device)
            ranks = exact_ranks(scores, rows, items)
            for name, values in ranking_metrics(ranks, rows, len(batch), ks).items():
                chunks.setdefault(name, []).append(values.cpu())
    finally:
        model.train(was_training)
    per_user = {name: torch.cat(v).numpy() for name, v in chunks.items()}
    metrics = {name: float(v.mean()) if len(v) else 0.0 for name, v in per_user.items()}
    return EvalResult(metrics=metrics, users=eval_users, per_user=per_user)
