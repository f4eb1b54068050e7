"""A synthetic multi-behavior dataset with a view -> cart -> buy funnel.

Items belong to latent topics; every user likes one or two topics. A user's affinity for an item is the
dot product of their latent vectors, and items also have a Zipf-like popularity. Each user:

1. views items drawn without replacement from ``softmax(affinity / temperature + popularity)``; the number of
   views is log-normal (a few very active users, many light ones), ``mean_views`` on average;
2. moves a subset of the viewed items to the next behavior (about ``funnel_rates[0]`` = 25 % to cart, then
   ``funnel_rates[1]`` = 40 % of those to buy), preferring high-affinity items; every stage keeps at least
   two items, so every user has at least two buys;
3. with probability ``noise_rate`` per stage also performs that behavior on one item not seen upstream.

The test split is leave-one-out: one random buy per user leaves the buy training matrix only; it stays in
view and cart, like the public benchmarks. Test items are therefore predictable from the user's cart and
view history, from co-purchases of users with the same topics and from popularity.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mbrec.data.dataset import MultiBehaviorDataset, binary_csr
from mbrec.data.eventlog import latest_per_user

SYNTHETIC_PRESETS: dict[str, dict] = {
    "tiny": {"n_users": 60, "n_items": 50, "mean_views": 12.0},
    "small": {"n_users": 600, "n_items": 400},
    "medium": {"n_users": 3000, "n_items": 2000},
}
MIN_PER_STAGE = 2


def _default_rates(n_behaviors: int) -> list[float]:
    return [0.25] + [0.4] * max(n_behaviors - 2, 0) if n_behaviors > 1 else []


def _latent_factors(rng: np.random.Generator, n_users: int, n_items: int, dim: int,
                    n_topics: int) -> tuple[np.ndarray, np.ndarray]:
    """User and item vectors: items scatter around a topic centre, users mix one or two topics."""
    centres = rng.normal(size=(n_topics, dim))
    item_topic = rng.integers(n_topics, size=n_items)
    items = centres[item_topic] + 0.6 * rng.normal(size=(n_items, dim))
    first = rng.integers(n_topics, size=n_users)
    second = np.where(rng.random(n_users) < 0.5, rng.integers(n_topics, size=n_users), first)
    users = 0.5 * (centres[first] + centres[second]) + 0.4 * rng.normal(size=(n_users, dim))
    return users, items


def _log_popularity(rng: np.random.Generator, n_items: int, exponent: float) -> np.ndarray:
    """Zipf-like log popularity in random item order, centred."""
    log_pop = -exponent * np.log1p(rng.permutation(n_items).astype(np.float64))
    return log_pop - log_pop.mean()


def _sample_views(rng: np.random.Generator, logits: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per user, ``counts[u]`` items sampled without replacement from ``softmax(logits[u])``
    (Gumbel top-k)."""
    noisy = logits + rng.gumbel(size=logits.shape)
    kth = np.clip(counts, 1, logits.shape[1]) - 1
    threshold = -np.sort(-noisy, axis=1)[np.arange(len(counts)), kth]
    return noisy >= threshold[:, None]


def _sample_within(rng: np.random.Generator, scores: np.ndarray, allowed: np.ndarray,
                   counts: np.ndarray) -> np.ndarray:
    """Per user, ``counts[u]`` of the allowed items, sampled without replacement from
    ``softmax(scores[u])``."""
    users, items = np.nonzero(allowed)
    noisy = scores[users, items] + rng.gumbel(size=len(users))
    order = np.lexsort((-noisy, users))
    sizes = np.bincount(users, minlength=allowed.shape[0])
    rank = np.arange(len(users)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    keep = order[rank < counts[users[order]]]
    chosen = np.zeros_like(allowed)
    chosen[users[keep], items[keep]] = True
    return chosen


def _activity(rng: np.random.Generator, n_users: int, n_items: int, mean_views: float) -> np.ndarray:
    """Views per user: log-normal with the given mean, clipped to ``[4, n_items / 2]``."""
    sigma = 0.7
    draws = rng.lognormal(np.log(mean_views) - sigma**2 / 2, sigma, size=n_users)
    return np.clip(np.rint(draws), 2 * MIN_PER_STAGE, max(2 * MIN_PER_STAGE, n_items // 2)).astype(np.int64)


def _add_noise(rng: np.random.Generator, stage: np.ndarray, upstream: np.ndarray, logits: np.ndarray,
               noise_rate: float) -> np.ndarray:
    """Give a ``noise_rate`` share of users one extra item that is not in ``upstream``."""
    users = np.flatnonzero((rng.random(stage.shape[0]) < noise_rate) & ~upstream.all(axis=1))
    noisy = logits[users] + rng.gumbel(size=(len(users), stage.shape[1]))
    outside = np.where(upstream[users], -np.inf, noisy)
    stage = stage.copy()
    stage[users, np.argmax(outside, axis=1)] = True
    return stage


def _funnel(rng: np.random.Generator, affinity: np.ndarray, logits: np.ndarray, n_stages: int,
            rates: Sequence[float], mean_views: float, noise_rate: float) -> list[np.ndarray]:
    """Dense boolean ``M x N`` masks, one per behavior, upstream first."""
    n_users, n_items = logits.shape
    views = _sample_views(rng, logits, _activity(rng, n_users, n_items, mean_views))
    stages = [views]
    for rate in rates[: n_stages - 1]:
        upstream = stages[-1]
        sizes = upstream.sum(axis=1)
        counts = np.clip(rng.binomial(sizes, rate), MIN_PER_STAGE, sizes)
        stage = _sample_within(rng, affinity, upstream, counts)
        stages.append(_add_noise(rng, stage, upstream, logits, noise_rate))
    return stages


def _hold_out(rng: np.random.Generator, target: np.ndarray, valid: bool) -> tuple[np.ndarray, ...]:
    """Split the target mask into train/test/valid coordinate masks (one random pair per user)."""
    users, items = np.nonzero(target)
    test = latest_per_user(users, (rng.random(len(users)),))
    held = np.zeros_like(test)
    if valid:
        rest = np.flatnonzero(~test)
        held[rest[latest_per_user(users[rest], (rng.random(len(rest)),))]] = True
    return users, items, test, held


def make_synthetic(n_users: int = 600, n_items: int = 400, behaviors: Sequence[str] = ("view", "cart", "buy"),
                   seed: int = 0, dim: int = 8, *, n_topics: int = 8, mean_views: float = 40.0,
                   funnel_rates: Sequence[float] | None = None, temperature: float = 0.7,
                   popularity_exponent: float = 0.8, noise_rate: float = 0.05, valid: bool = False,
                   name: str | None = None) -> MultiBehaviorDataset:
    """Generate a funnel dataset (see the module docstring); the same arguments give identical matrices.

    Args:
        behaviors: names, upstream first; the last one is the target. Any number >= 1 works: each stage
            is a subset of the previous one.
        funnel_rates: share of the previous stage kept by each later stage (default 0.25, then 0.4).
        temperature: lower = views follow the user's taste more closely.
        valid: also hold out one more target pair per user with at least two left (``ds.valid``).
    """
    names = list(behaviors)
    if not names:
        raise ValueError("make_synthetic needs at least one behavior")
    rates = list(funnel_rates) if funnel_rates is not None else _default_rates(len(names))
    if len(rates) < len(names) - 1:
        raise ValueError(f"need {len(names) - 1} funnel rates for {len(names)} behaviors, got {len(rates)}")
    rng = np.random.default_rng(seed)
    user_vecs, item_vecs = _latent_factors(rng, n_users, n_items, dim, n_topics)
    affinity = user_vecs @ item_vecs.T / np.sqrt(dim)
    logits = affinity / temperature + _log_popularity(rng, n_items, popularity_exponent)
    stages = _funnel(rng, affinity, logits, len(names), rates, mean_views, noise_rate)
    shape = (n_users, n_items)
    train = {b: binary_csr(*np.nonzero(mask), shape) for b, mask in zip(names[:-1], stages, strict=False)}
    users, items, test, held = _hold_out(rng, stages[-1], valid)
    keep = ~(test | held)
    train[names[-1]] = binary_csr(users[keep], items[keep], shape)
    meta = {"generator": "mbrec.data.synthetic", "seed": seed, "dim": dim, "n_topics": n_topics,
            "mean_views": mean_views, "funnel_rates": rates, "temperature": temperature,
            "popularity_exponent": popularity_exponent, "noise_rate": noise_rate}
    return MultiBehaviorDataset(
        name=name or "synthetic", n_users=n_users, n_items=n_items, behaviors=names, train=train,
        test=binary_csr(users[test], items[test], shape),
        valid=binary_csr(users[held], items[held], shape) if valid else None, meta=meta,
    )
