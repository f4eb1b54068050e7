r"""Group analysis and noise robustness over the result records of a grid (MBSSL Figs. 3 and 4).

**Groups.** A record's ``groups`` entry (written by :func:`mbrec.train.runner.run_training`, or added
afterwards from the run's ``best.pt`` by :func:`backfill_groups`) holds the per-group metrics of the
selected model (:func:`mbrec.eval.groups.group_metrics`: test users grouped by their number of target
training interactions). :func:`group_section` averages them per grid row over seeds: for row r, group g
and metric m, :math:`\bar x \pm s` over the row's seeds (sample std, ``ddof=1``).

**Noise.** A grid row with ``noise_of: <clean label>`` is the same model trained on data with
``data.noise_ratio`` = p random auxiliary pairs (:func:`mbrec.eval.noise.inject_noise`). Under the paper
protocol, :func:`noise_section` reports per noisy row and metric the relative drop
:math:`(\bar x_{clean} - \bar x_{noisy}) / \bar x_{clean}` of the seed means (positive = worse with noise).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mbrec.bench.grid import cell_status, dataset_key, expand_grid
from mbrec.bench.spec import GridSpec
from mbrec.config import RunConfig
from mbrec.train.checkpoint import atomic_write_json

GROUP_METRICS = ("HR@10", "NDCG@10")


# ------------------------------------------------------------------------------------ backfill
def backfill_groups(grid: GridSpec, only: list[str] | None = None, seeds: list[int] | None = None,
                    log: Callable[[str], None] = print, extra_set: list[str] | None = None,
                    load_dataset: Callable[[RunConfig], object] | None = None) -> dict[str, int]:
    """Add ``groups`` to every finished cell's record that lacks it, from its run folder's ``best.pt``.

    Both copies of the record (``results_dir`` and the run folder's ``result.json``) are rewritten
    atomically. Cells without a checkpoint (e.g. trained on another machine) are reported as ``no
    checkpoint``. Returns counts per outcome (``added``, ``present``, ``no checkpoint``, ``not done``).
    ``load_dataset`` defaults to the run's own dataset loading.
    """
    from mbrec.train.runner import load_run_dataset, run_dir_of, selected_groups

    load_dataset = load_dataset or load_run_dataset

    counts: dict[str, int] = {}
    loaded: tuple[str, object] | None = None
    for cell in expand_grid(grid, only, extra_set, seeds):
        status, _ = cell_status(cell, check_lock=False)
        if status != "done":
            outcome = "not done"
        else:
            cfg: RunConfig = cell.config
            path = Path(cfg.results_dir) / f"{cell.name}.json"
            record = json.loads(path.read_text(encoding="utf-8"))
            best = run_dir_of(cfg) / "best.pt"
            if record.get("groups"):
                outcome = "present"
            elif not best.exists():
                outcome = "no checkpoint"
            else:
                key = dataset_key(cfg)
                if loaded is None or loaded[0] != key:
                    loaded = None
                    loaded = (key, load_dataset(cfg))
                record["groups"] = selected_groups(cfg, loaded[1], best)
                atomic_write_json(path, record)
                if (run_dir_of(cfg) / "result.json").exists():
                    atomic_write_json(run_dir_of(cfg) / "result.json", record)
                outcome = "added"
        counts[outcome] = counts.get(outcome, 0) + 1
        log(f"{cell.describe()}: {outcome}")
    log(f"grid {grid.name}: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
    return counts


# ------------------------------------------------------------------------------------ groups
def mean_std(values: list[float]) -> dict:
    """``{mean, std, values}`` over seeds; ``std`` is the sample std (``ddof=1``), None for one value."""
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if len(arr) > 1 else None,
            "values": [float(v) for v in values]}


def _stat_or_none(values: list[float | None]) -> dict | None:
    """Mean and std of a group's values over seeds; None for an empty group (no value)."""
    return None if any(v is None for v in values) else mean_std(values)


def group_section(records: list[dict], labels: list[str], label_of: Callable[[dict], str],
                  seed_of: Callable[[dict], int]) -> dict | None:
    """Per row: group metrics averaged over its seeds; rows whose records disagree on the groups or lack
    them are left out. Returns ``{"groups": [labels], "n_users": [...], "metrics": [...], "rows": [...]}``."""
    by_label: dict[str, list[dict]] = {}
    for record in records:
        if record.get("groups") and record["groups"].get("rows"):
            by_label.setdefault(label_of(record), []).append(record)
    if not by_label:
        return None
    first = next(iter(by_label.values()))[0]["groups"]["rows"]
    names = [r["group"] for r in first]
    present = set(first[0]["metrics"])
    metrics = [m for m in GROUP_METRICS if m in present] or sorted(present)[:2]
    rows = []
    order = [lab for lab in labels if lab in by_label] + sorted(set(by_label) - set(labels))
    for label in order:
        runs = sorted(by_label[label], key=seed_of)
        if any([r["group"] for r in run["groups"]["rows"]] != names for run in runs):
            continue
        cells = {m: [_stat_or_none([run["groups"]["rows"][g]["metrics"][m] for run in runs])
                     for g in range(len(names))] for m in metrics}
        rows.append({"label": label, "seeds": [seed_of(r) for r in runs],
                     "protocol": runs[0]["groups"].get("protocol"), "metrics": cells})
    return {"groups": names, "n_users": [r["n_users"] for r in first], "metrics": metrics, "rows": rows}


def render_groups(section: dict, format_stat: Callable[[dict], str]) -> list[str]:
    head = [f"{g} ({n:,})" for g, n in zip(section["groups"], section["n_users"], strict=True)]
    lines = ["Test users grouped by their number of target training interactions (users per group in "
             "brackets); the model each run selected under its protocol; mean ± std over seeds."]
    for m in section["metrics"]:
        lines += ["", f"{m}:", "", "| model | seeds | " + " | ".join(head) + " |",
                  "|" + "|".join("---" for _ in range(len(head) + 2)) + "|"]
        lines += [f"| {r['label']} | {len(r['seeds'])} | "
                  + " | ".join("–" if s is None else format_stat(s) for s in r["metrics"][m]) + " |"
                  for r in section["rows"]]
    return lines


# ------------------------------------------------------------------------------------ noise
def noise_section(rows: list[dict], records: list[dict], noise_of: dict[str, str],
                  label_of: Callable[[dict], str]) -> list[dict]:
    """Relative drop of every noisy row against its clean row (``rows``: one protocol's aggregated rows)."""
    by_label = {r["label"]: r for r in rows}
    ratios: dict[str, set[float]] = {}
    for record in records:
        ratio = record["config"].get("data", {}).get("noise_ratio", 0.0)
        ratios.setdefault(label_of(record), set()).add(float(ratio))
    out = []
    for noisy, clean in noise_of.items():
        if noisy not in by_label or clean not in by_label:
            continue
        metrics = {}
        for m, stat in by_label[noisy]["metrics"].items():
            base = by_label[clean]["metrics"].get(m)
            if base is None:
                continue
            drop = (base["mean"] - stat["mean"]) / base["mean"] if base["mean"] else None
            metrics[m] = {"noisy": stat["mean"], "clean": base["mean"], "relative_drop": drop}
        out.append({"label": noisy, "clean": clean, "noise_ratio": sorted(ratios.get(noisy, set())),
                    "seeds": by_label[noisy]["seeds"], "clean_seeds": by_label[clean]["seeds"],
                    "metrics": metrics})
    return out


def render_noise(entries: list[dict]) -> list[str]:
    metrics = [m for m in GROUP_METRICS if all(m in e["metrics"] for e in entries)]
    header = ["noisy row", "clean row", "noise ratio", "seeds", *(f"{m} noisy / clean (drop)" for m in metrics)]
    lines = ["Same model on data with random auxiliary pairs added (data.noise_ratio), paper protocol; "
             "drop = (clean − noisy) / clean of the seed means.", "",
             "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for e in entries:
        ratio = ", ".join(f"{r:g}" for r in e["noise_ratio"])
        cells = []
        for m in metrics:
            v = e["metrics"][m]
            drop = "n/a" if v["relative_drop"] is None else f"{v['relative_drop'] * 100:+.1f}%"
            cells.append(f"{v['noisy']:.4f} / {v['clean']:.4f} ({drop})")
        lines.append(f"| {e['label']} | {e['clean']} | {ratio} | {len(e['seeds'])} | " + " | ".join(cells) + " |")
    return lines
