"""Top-k recommendations for users given in the dataset's original ids.

Items the user already has in the target behavior are never recommended (optionally also items of
other behaviors). Scores come from the model's ``score_users``; users are processed in blocks.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from mbrec.config import ConfigError
from mbrec.data.dataset import MultiBehaviorDataset


@dataclass
class Recommendations:
    """``items[j]`` / ``scores[j]``: the ranked top-k of ``users[j]`` (original ids)."""

    users: list[str]
    items: list[list[str]]
    scores: list[list[float]]


def _id_lookup(ids: np.ndarray | None, n: int) -> tuple[dict[str, int], np.ndarray]:
    names = np.asarray(ids).astype(str) if ids is not None else np.arange(n).astype(str)
    return {name: i for i, name in enumerate(names)}, names


@torch.no_grad()
def recommend(model, dataset: MultiBehaviorDataset, users: list[str], k: int = 10,
              exclude_behaviors: list[str] = (), batch_size: int = 1024) -> Recommendations:
    """Top-``k`` items for each user id in ``users`` (unknown ids raise a one-line ConfigError)."""
    user_index, _ = _id_lookup(dataset.user_ids, dataset.n_users)
    _, item_names = _id_lookup(dataset.item_ids, dataset.n_items)
    unknown = [u for u in users if u not in user_index]
    if unknown:
        raise ConfigError(f"unknown user id {unknown[0]!r} ({len(unknown)} unknown in all)")
    missing = [b for b in exclude_behaviors if b not in dataset.behaviors]
    if missing:
        raise ConfigError(f"unknown behavior {missing[0]!r} (have {', '.join(dataset.behaviors)})")
    seen = dataset.target_train.copy()
    for b in exclude_behaviors:
        seen = seen + dataset.train[b]
    seen = sp.csr_matrix(seen)
    internal = np.array([user_index[u] for u in users], dtype=np.int64)
    device = next(model.parameters()).device
    model.eval()
    k = min(k, dataset.n_items)
    all_items, all_scores = [], []
    for start in range(0, len(internal), batch_size):
        block = internal[start:start + batch_size]
        scores = model.score_users(torch.from_numpy(block).to(device)).float()
        sub = seen[block].tocoo()
        scores[torch.from_numpy(sub.row).long(), torch.from_numpy(sub.col).long()] = float("-inf")
        top = torch.topk(scores, k, dim=1)
        for vals, idx in zip(top.values.cpu().numpy(), top.indices.cpu().numpy(), strict=True):
            keep = np.isfinite(vals)
            all_items.append([str(item_names[i]) for i in idx[keep]])
            all_scores.append([float(v) for v in vals[keep]])
    return Recommendations(list(users), all_items, all_scores)


def format_recommendations(recs: Recommendations, fmt: str) -> str:
    """CSV (``user,rank,item,score``) or JSON (``[{"user", "items", "scores"}]``)."""
    if fmt == "json":
        rows = [{"user": u, "items": i, "scores": s}
                for u, i, s in zip(recs.users, recs.items, recs.scores, strict=True)]
        return json.dumps(rows, indent=2) + "\n"
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["user", "rank", "item", "score"])
    for u, items, scores in zip(recs.users, recs.items, recs.scores, strict=True):
        for rank, (item, score) in enumerate(zip(items, scores, strict=True), start=1):
            writer.writerow([u, rank, item, f"{score:.6g}"])
    return buf.getvalue()


def write_recommendations(recs: Recommendations, fmt: str, path: str | None) -> None:
    """Write to ``path`` atomically, or to stdout when ``path`` is None."""
    text = format_recommendations(recs, fmt)
    if path is None:
        sys.stdout.write(text)
        return
    from mbrec.train.checkpoint import atomic_write_bytes

    atomic_write_bytes(path, lambda fh: fh.write(text.encode("utf-8")))
