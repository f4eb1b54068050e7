r"""Metrics by user sparsity group (MBSSL Fig. 3, mbssl.md §9.3).

Evaluation users are grouped by :math:`n_u`, their number of **target training** interactions, with
increasing bounds :math:`b_1 < \dots < b_G`:

.. math::
    g(u) = 0 \text{ if } n_u < b_1, \quad g(u) = j \text{ if } b_j \le n_u < b_{j+1}, \quad
    g(u) = G \text{ if } n_u \ge b_G

The default bounds ``(9, 13, 17, 20)`` give the paper's five groups ``<9, 9-12, 13-16, 17-19, >=20``.
Inside a group, a metric is the mean of the per-user values of an
:class:`~mbrec.eval.evaluator.EvalResult` (``per_user[name]`` ``[U]``, aligned with ``users`` ``[U]``);
an empty group reports ``None``. The paper plots NDCG@50 of the selected model per group.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from mbrec.data.dataset import MultiBehaviorDataset
from mbrec.eval.evaluator import EvalResult
from mbrec.train.checkpoint import atomic_write_bytes

DEFAULT_BOUNDS = (9, 13, 17, 20)


def _check_bounds(bounds: Sequence[int]) -> list[int]:
    values = [int(b) for b in bounds]
    if not values or values[0] < 1 or any(b >= c for b, c in zip(values, values[1:], strict=False)):
        raise ValueError(f"group bounds must be strictly increasing integers >= 1, got {list(bounds)}")
    return values


def group_labels(bounds: Sequence[int] = DEFAULT_BOUNDS) -> list[str]:
    """``["<9", "9-12", "13-16", "17-19", ">=20"]`` for the default bounds (``G + 1`` labels)."""
    b = _check_bounds(bounds)
    inner = [f"{lo}" if hi - lo == 1 else f"{lo}-{hi - 1}" for lo, hi in zip(b, b[1:], strict=False)]
    return [f"<{b[0]}", *inner, f">={b[-1]}"]


def assign_groups(counts: np.ndarray, bounds: Sequence[int] = DEFAULT_BOUNDS) -> np.ndarray:
    """Group index ``g(u)`` in ``0..G`` of each interaction count, ``[U] -> [U]``."""
    return np.searchsorted(np.asarray(_check_bounds(bounds)), np.asarray(counts), side="right")


def group_metrics(result: EvalResult, dataset: MultiBehaviorDataset, bounds: Sequence[int] = DEFAULT_BOUNDS,
                  metrics: Sequence[str] | None = None) -> list[dict]:
    """Per-group means of the per-user metrics of ``result``.

    Args:
        result: an evaluation of ``dataset`` (its ``users`` and ``per_user`` values are used).
        dataset: gives each user's target training count ``n_u``.
        bounds: increasing group bounds (see the module docstring).
        metrics: metric names (default: every metric of ``result``).

    Returns:
        One row per group, in order: ``{"group": label, "min_interactions": lo, "max_interactions": hi
        (None for the last group), "n_users": count, "metrics": {name: mean or None}}``.
    """
    names = list(metrics) if metrics is not None else list(result.per_user)
    missing = [m for m in names if m not in result.per_user]
    if missing:
        have = ", ".join(result.per_user)
        raise ValueError(f"metric {missing[0]!r} is not in the evaluation (have {have})")
    b = _check_bounds(bounds)
    users = np.asarray(result.users, dtype=np.int64)
    groups = assign_groups(np.diff(dataset.target_train.indptr)[users], b)
    lows, highs = [0, *b], [c - 1 for c in b] + [None]
    rows = []
    for g, label in enumerate(group_labels(b)):
        members = groups == g
        n = int(members.sum())
        values = {m: float(np.mean(result.per_user[m][members])) if n else None for m in names}
        rows.append({"group": label, "min_interactions": lows[g], "max_interactions": highs[g],
                     "n_users": n, "metrics": values})
    return rows


def plot_groups(rows: list[dict] | Mapping[str, list[dict]], path: str | Path, metric: str | None = None,
                title: str | None = None) -> Path:
    """Bar chart of ``metric`` per group (one bar series per model) written atomically to ``path``.

    ``rows`` is the output of :func:`group_metrics`, or a mapping ``model label -> rows`` to compare
    models (their groups must agree). The x labels carry the group sizes. The file format follows the
    suffix of ``path`` (``.png``, ``.pdf``, ``.svg``). Needs matplotlib (``mbrec[plots]``); drawn on
    the Agg canvas without pyplot, so no global backend is changed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plot_groups needs matplotlib: pip install 'mbrec[plots]'") from None
    series = dict(rows) if isinstance(rows, Mapping) else {"": list(rows)}
    first = next(iter(series.values()), None)
    if not first:
        raise ValueError("plot_groups needs at least one group row")
    labels = [r["group"] for r in first]
    for name, model_rows in series.items():
        if [r["group"] for r in model_rows] != labels:
            raise ValueError(f"groups of {name!r} differ from those of the first model")
    metric = metric or next(iter(first[0]["metrics"]))

    fig = Figure(figsize=(max(4.0, 1.2 * len(labels) + 1.5), 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(len(labels))
    width = 0.8 / len(series)
    for j, (name, model_rows) in enumerate(series.items()):
        values = [np.nan if r["metrics"].get(metric) is None else r["metrics"][metric] for r in model_rows]
        ax.bar(x + (j - (len(series) - 1) / 2) * width, values, width, label=name or None)
    ax.set_xticks(x, [f"{r['group']}\n({r['n_users']:,} users)" for r in first])
    ax.set_xlabel("target training interactions per user")
    ax.set_ylabel(metric)
    if title:
        ax.set_title(title)
    if len(series) > 1 or next(iter(series)):
        ax.legend()
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".") or "png", dpi=120)
    atomic_write_bytes(path, lambda fh: fh.write(buffer.getvalue()))
    return path
