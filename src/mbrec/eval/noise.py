r"""Noise robustness (MBSSL Fig. 4, mbssl.md §9.4; the protocol is ours, the paper gives no code).

For a ratio :math:`p` and every chosen auxiliary behavior :math:`k` with training pairs :math:`E_k`
(binary ``M x N`` matrix :math:`R_k`), :func:`inject_noise` adds :math:`\lfloor p\,|E_k| \rfloor` new
pairs drawn uniformly, without replacement, from the cells with :math:`R_k[u, i] = 0`:

.. math::  R_k' = R_k + \sum_{(u, i) \in \mathcal N_k} e_u e_i^T, \qquad
           \mathcal N_k \subset \{(u, i) : R_k[u, i] = 0\},\ |\mathcal N_k| = \lfloor p |E_k| \rfloor

The target behavior's training pairs and the held-out splits are untouched. Each behavior draws from
its own generator seeded by ``(seed, behavior position)``, so the noise of one behavior does not depend
on which other behaviors are noised. The model is then retrained from scratch, and
:func:`relative_drop` gives the % drop of each metric against the clean run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from mbrec.data.dataset import MultiBehaviorDataset, binary_csr


def _sorted_keys(mat: sp.csr_matrix) -> np.ndarray:
    """Cell keys ``u * N + i`` of the nonzeros, ascending ``[nnz]``."""
    coo = mat.tocoo()
    return np.sort(coo.row.astype(np.int64) * mat.shape[1] + coo.col.astype(np.int64))


def uniform_new_cells(occupied: np.ndarray, n_cells: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` distinct keys in ``0..n_cells-1`` outside the sorted ``occupied`` keys, uniformly.

    Draws with replacement in vectorised rounds, drops occupied keys and repeats, and keeps the first
    occurrence of each key in draw order; this is sequential rejection sampling, so every subset of
    the free cells of that size is equally likely.
    """
    free = n_cells - len(occupied)
    if count > free:
        raise ValueError(f"cannot add {count} new pairs: only {free} free cells")
    chosen = np.empty(0, dtype=np.int64)
    while len(chosen) < count:
        need = count - len(chosen)
        draw = rng.integers(0, n_cells, size=need + need // 2 + 16, dtype=np.int64)
        if len(occupied):
            pos = np.minimum(np.searchsorted(occupied, draw), len(occupied) - 1)
            draw = draw[occupied[pos] != draw]
        pool = np.concatenate([chosen, draw])
        _, first = np.unique(pool, return_index=True)
        chosen = pool[np.sort(first)][:count]
    return chosen


def inject_noise(dataset: MultiBehaviorDataset, ratio: float, seed: int,
                 behaviors: Sequence[str] | None = None) -> MultiBehaviorDataset:
    """A copy of ``dataset`` with ``floor(ratio · nnz)`` random new pairs in each auxiliary behavior.

    Args:
        dataset: the clean data (not modified).
        ratio: p >= 0, the share of each behavior's training pairs to add.
        seed: noise seed (a non-negative integer).
        behaviors: behaviors to corrupt (default: every behavior but the target; the target is refused).

    Returns:
        A dataset named ``<name>-noise<p>`` whose ``meta["noise"]`` records ratio, seed and the number of
        pairs added per behavior.
    """
    if not ratio >= 0:
        raise ValueError(f"noise ratio must be >= 0, got {ratio}")
    chosen = list(behaviors) if behaviors is not None else dataset.behaviors[:-1]
    unknown = [b for b in chosen if b not in dataset.behaviors]
    if unknown:
        raise ValueError(f"unknown behavior {unknown[0]!r} (have {dataset.behaviors})")
    if dataset.target in chosen:
        raise ValueError(f"the target behavior {dataset.target!r} is never corrupted")
    n_cells = dataset.n_users * dataset.n_items
    train = dict(dataset.train)
    added = {}
    for b in chosen:
        mat = dataset.train[b]
        count = math.floor(round(ratio * mat.nnz, 9))  # 0.29 * 100 is 28.999999999999996 in floats
        rng = np.random.default_rng([seed, dataset.behaviors.index(b)])
        occupied = _sorted_keys(mat)
        keys = np.concatenate([occupied, uniform_new_cells(occupied, n_cells, count, rng)])
        train[b] = binary_csr(keys // dataset.n_items, keys % dataset.n_items, mat.shape)
        added[b] = count
    meta = {**dataset.meta, "noise": {"ratio": ratio, "seed": seed, "added": added}}
    return dataclasses.replace(dataset, name=f"{dataset.name}-noise{ratio:g}", train=train, meta=meta)


def relative_drop(clean_metrics: Mapping[str, float], noisy_metrics: Mapping[str, float],
                  metrics: Sequence[str] | None = None) -> dict[str, float]:
    r"""Percent drop :math:`100\,(m_{clean} - m_{noisy}) / m_{clean}` per metric (NaN when clean is 0).

    Positive = the noisy run is worse. Default metrics: the names present in both mappings.
    """
    names = list(metrics) if metrics is not None else [m for m in clean_metrics if m in noisy_metrics]
    out = {}
    for m in names:
        clean, noisy = float(clean_metrics[m]), float(noisy_metrics[m])
        out[m] = 100.0 * (clean - noisy) / clean if clean != 0 else math.nan
    return out
