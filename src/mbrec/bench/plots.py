"""PNG plots of a results folder (matplotlib's Agg canvas; matplotlib is optional: ``mbrec[plots]``).

* ``plots/bars_<dataset>.png`` — per dataset, one group of bars per model: HR@10 and NDCG@10 (or the
  first two table metrics the runs have) under the paper protocol, mean over seeds with ±1 sample std
  error bars (:mod:`mbrec.bench.summary`).
* ``plots/groups_<dataset>.png`` — per dataset with group metrics (:mod:`mbrec.bench.analysis`), the first
  group metric per user group, one bar series per model (mean over seeds, ±1 std error bars).
* ``plots/curves/<run name>.png`` — per run, the first two table metrics against the epoch for every
  evaluation of its history: test solid, validation dashed when the run has it.

Figures are drawn on a :class:`matplotlib.figure.Figure` (no pyplot, no global backend change) and
written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from mbrec.bench.grid import dataset_slug
from mbrec.bench.summary import build_summary, load_records, record_label, table_metrics
from mbrec.train.checkpoint import atomic_write_bytes


class PlotError(RuntimeError):
    """Plots cannot be drawn (matplotlib missing)."""


def _new_figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotError("plots need matplotlib: pip install 'mbrec[plots]'") from None
    return Figure(figsize=(width, height), layout="constrained")


def _save_png(fig, path: Path) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    atomic_write_bytes(path, lambda fh: fh.write(buffer.getvalue()))
    return path


def plot_bars(section: dict, dataset: str, path: Path) -> Path:
    """Grouped bars (models × first two metrics) with ±std error bars for one dataset."""
    metrics = section["metrics"][:2]
    rows = section["rows"]
    fig = _new_figure(max(4.0, 1.1 * len(rows) + 2.0), 3.6)
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    width = 0.8 / len(metrics)
    for j, m in enumerate(metrics):
        means = [r["metrics"][m]["mean"] if m in r["metrics"] else np.nan for r in rows]
        errors = [(r["metrics"][m]["std"] or 0.0) if m in r["metrics"] else 0.0 for r in rows]
        ax.bar(x + (j - (len(metrics) - 1) / 2) * width, means, width, yerr=errors, capsize=3, label=m)
    ax.set_xticks(x, [r["label"] for r in rows], rotation=30, ha="right")
    seeds = sorted({s for r in rows for s in r["seeds"]})
    ax.set_title(f"{dataset} (paper protocol, mean ± std over {len(seeds)} seeds)")
    ax.legend()
    return _save_png(fig, path)


def plot_group_bars(section: dict, dataset: str, path: Path) -> Path:
    """Bars of the first group metric: groups on the x axis, one series per model, ±std error bars."""
    metric, rows = section["metrics"][0], section["rows"]
    labels = [f"{g}\n({n:,} users)" for g, n in zip(section["groups"], section["n_users"], strict=True)]
    fig = _new_figure(max(4.5, 1.3 * len(labels) + 1.5), 3.6)
    ax = fig.add_subplot()
    x = np.arange(len(labels))
    width = 0.8 / max(len(rows), 1)
    for j, row in enumerate(rows):
        stats = row["metrics"][metric]
        ax.bar(x + (j - (len(rows) - 1) / 2) * width, [np.nan if s is None else s["mean"] for s in stats], width,
               yerr=[0.0 if s is None else s["std"] or 0.0 for s in stats], capsize=2, label=row["label"])
    ax.set_xticks(x, labels)
    ax.set_xlabel("target training interactions per user")
    ax.set_ylabel(metric)
    ax.set_title(f"{dataset}: {metric} by user group")
    ax.legend(fontsize="small")
    return _save_png(fig, path)


def plot_curve(record: dict, path: Path) -> Path:
    """Metric vs epoch for one run: test solid, validation dashed."""
    from matplotlib.ticker import MaxNLocator

    history = record["history"]
    metrics = table_metrics([h["test"] for h in history])[:2]
    fig = _new_figure(5.0, 3.4)
    ax = fig.add_subplot()
    epochs = [h["epoch"] for h in history]
    for m in metrics:
        line = ax.plot(epochs, [h["test"].get(m, np.nan) for h in history], marker="o", ms=3,
                       label=f"test {m}")[0]
        if any("valid" in h for h in history):
            ax.plot(epochs, [h.get("valid", {}).get(m, np.nan) for h in history], ls="--",
                    color=line.get_color(), label=f"valid {m}")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"{record_label(record)} on {record['dataset']}, seed {record['config']['train']['seed']}")
    ax.legend()
    return _save_png(fig, path)


def plot_results(results_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """All bar charts and training curves of a results folder; returns the written paths."""
    results_dir = Path(results_dir)
    out = Path(out_dir) if out_dir is not None else results_dir / "plots"
    _new_figure(1.0, 1.0)  # fail early, before any work, when matplotlib is missing
    written = []
    for name, ds in build_summary(results_dir)["datasets"].items():
        section = ds["protocols"].get("paper")
        if section is not None:
            written.append(plot_bars(section, name, out / f"bars_{dataset_slug(name)}.png"))
        if ds.get("groups") and ds["groups"]["rows"]:
            written.append(plot_group_bars(ds["groups"], name, out / f"groups_{dataset_slug(name)}.png"))
    for record in load_records(results_dir):
        if record["history"]:
            cfg = record["config"]
            run_name = (cfg.get("name")
                        or f"{cfg['model']}-{dataset_slug(cfg['dataset'])}-s{cfg['train']['seed']}")
            written.append(plot_curve(record, out / "curves" / f"{run_name}.png"))
    return written
