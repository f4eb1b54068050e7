r"""Held-out items against the users' auxiliary histories: how a ranking uses what a user has seen.

A held-out pair :math:`(u, i)` is *seen in* auxiliary behavior :math:`b` when :math:`(u, i)` is a training
pair of b (on Taobao 82 % of the test buys were viewed before). From the masked all-item ranking of the
evaluator (:func:`~mbrec.eval.evaluator.scored_batches`, same candidates, same tie rule), for every
auxiliary behavior b:

* ``share``: fraction of held-out pairs seen in b; ``hit``: HR@k over those pairs;
* ``top_slots``: mean number of a user's top-k candidates seen in b (out of k);
* ``hit_within``: over the pairs seen in b, the fraction ranked < k **among the user's other candidates
  seen in b** (how well the model orders the b history itself).

``unseen`` gives ``share``, ``hit`` and ``top_slots`` for items seen in no auxiliary behavior, and
``hit`` the overall HR@k. Everything is batched over users.
"""

from __future__ import annotations

import numpy as np
import torch

from mbrec.data.dataset import MultiBehaviorDataset
from mbrec.eval.evaluator import exact_ranks, scored_batches


def _dense_rows(mat, users: np.ndarray, device) -> torch.Tensor:
    return torch.from_numpy(mat[users].toarray() > 0).to(device)


def seen_breakdown(model, dataset: MultiBehaviorDataset, k: int = 10, split: str = "test",
                   batch_size: int = 1024, mask_behaviors: list[str] | tuple = ()) -> dict:
    """The breakdown of the module docstring at cut-off ``k`` (a JSON-ready dict)."""
    aux = dataset.behaviors[:-1]
    n_pairs = 0
    hits = 0.0
    seen_pairs = dict.fromkeys([*aux, "unseen"], 0.0)
    seen_hits = dict.fromkeys([*aux, "unseen"], 0.0)
    slots = dict.fromkeys([*aux, "unseen"], 0.0)
    within = dict.fromkeys(aux, 0.0)
    n_users = 0
    for batch in scored_batches(model, dataset, split, batch_size, mask_behaviors):
        scores, rows, items = batch.scores, batch.rows, batch.items
        hit = exact_ranks(scores, rows, items) < k                                    # [P]
        top_values, top_items = torch.topk(scores, min(k, scores.shape[1]), dim=1)   # [B, k]
        real = torch.isfinite(top_values)                                             # masked slots do not count
        any_seen = torch.zeros_like(scores, dtype=torch.bool)
        n_pairs += len(rows)
        n_users += len(batch.users)
        hits += float(hit.sum())
        for b in aux:
            seen = _dense_rows(dataset.train[b], batch.users, scores.device)          # [B, N]
            any_seen |= seen
            pair_seen = seen[rows, items]
            seen_pairs[b] += float(pair_seen.sum())
            seen_hits[b] += float((hit & pair_seen).sum())
            slots[b] += float((torch.gather(seen, 1, top_items) & real).sum())
            inside = torch.where(seen, scores, torch.tensor(float("-inf"), device=scores.device))
            within_hit = exact_ranks(inside, rows, items) < k
            within[b] += float((within_hit & pair_seen).sum())
        unseen_pair = ~any_seen[rows, items]
        seen_pairs["unseen"] += float(unseen_pair.sum())
        seen_hits["unseen"] += float((hit & unseen_pair).sum())
        slots["unseen"] += float((~torch.gather(any_seen, 1, top_items) & real).sum())

    def ratio(a: float, b: float) -> float:
        return a / b if b else 0.0

    out = {"k": k, "split": split, "pairs": n_pairs, "users": n_users, "hit": ratio(hits, n_pairs), "behaviors": {}}
    for b in aux:
        out["behaviors"][b] = {"share": ratio(seen_pairs[b], n_pairs), "hit": ratio(seen_hits[b], seen_pairs[b]),
                               "top_slots": ratio(slots[b], n_users), "hit_within": ratio(within[b], seen_pairs[b])}
    out["unseen"] = {"share": ratio(seen_pairs["unseen"], n_pairs), "hit": ratio(seen_hits["unseen"],
                                                                                 seen_pairs["unseen"]),
                     "top_slots": ratio(slots["unseen"], n_users)}
    return out
