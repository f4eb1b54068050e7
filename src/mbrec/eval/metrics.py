r"""Ranking metrics from exact ranks (several held-out items per user allowed).

For a user u with held-out set :math:`T_u` and 0-based ranks :math:`r_t` of its held-out items among
all candidate items (ties broken by ascending item id):

* HR@K = 1 if any :math:`r_t < K`;  Recall@K = :math:`|\{t: r_t < K\}| / |T_u|`;
* Precision@K = :math:`|\{t: r_t < K\}| / K`;
* NDCG@K = :math:`\sum_{t: r_t<K} 1/\log_2(r_t+2) \,/\, \sum_{j<\min(|T_u|,K)} 1/\log_2(j+2)`;
* MRR = :math:`1/(\min_t r_t + 1)`.

Each function takes ``ranks [P]`` (one per held-out pair) and ``owner [P]`` (index of the pair's user
in ``0..U-1``) and returns per-user values ``[U]``.
"""

from __future__ import annotations

import torch

METRICS = ("HR", "Recall", "NDCG", "Precision", "MRR")


def _per_user_sum(values: torch.Tensor, owner: torch.Tensor, n_users: int) -> torch.Tensor:
    out = torch.zeros(n_users, dtype=torch.float64, device=values.device)
    return out.index_add_(0, owner, values.to(torch.float64))


def ranking_metrics(ranks: torch.Tensor, owner: torch.Tensor, n_users: int,
                    ks: list[int]) -> dict[str, torch.Tensor]:
    """Per-user metric values ``{"HR@10": [U], ..., "MRR": [U]}`` from exact 0-based ranks."""
    counts = _per_user_sum(torch.ones_like(ranks, dtype=torch.float64), owner, n_users)
    out: dict[str, torch.Tensor] = {}
    discounts = 1.0 / torch.log2(ranks.to(torch.float64) + 2.0)
    for k in ks:
        hit = (ranks < k).to(torch.float64)
        hits = _per_user_sum(hit, owner, n_users)
        ideal_n = torch.clamp(counts, max=k).to(torch.int64)
        ideal_table = torch.cumsum(1.0 / torch.log2(torch.arange(k, dtype=torch.float64,
                                                                  device=ranks.device) + 2.0), 0)
        idcg = torch.where(ideal_n > 0, ideal_table[(ideal_n - 1).clamp(min=0)], torch.ones_like(counts))
        out[f"HR@{k}"] = (hits > 0).to(torch.float64)
        out[f"Recall@{k}"] = hits / counts.clamp(min=1)
        out[f"Precision@{k}"] = hits / k
        out[f"NDCG@{k}"] = _per_user_sum(hit * discounts, owner, n_users) / idcg
    best = torch.full((n_users,), float("inf"), dtype=torch.float64, device=ranks.device)
    best = best.scatter_reduce(0, owner, ranks.to(torch.float64), reduce="amin")
    out["MRR"] = 1.0 / (best + 1.0)
    return out
