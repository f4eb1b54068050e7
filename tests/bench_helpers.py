"""Shared pieces of the benchmark-grid tests: a tiny dataset, a 2 models x 2 seeds grid, a quiet runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mbrec.bench.grid import run_grid
from mbrec.bench.spec import GridSpec
from mbrec.config import from_dict
from mbrec.data.dataset import MultiBehaviorDataset, binary_csr

REPO = Path(__file__).resolve().parents[1]
TRAIN_SET = ["train.epochs=2", "train.eval_every=1", "train.batch_size=64", "train.lr=0.01",
             "train.protocol=paper", "train.ks=[10]", "train.progress=false", "train.device=cpu",
             "params.dim=8"]


def tiny_dataset(seed: int = 0, n_users: int = 48, n_items: int = 36) -> MultiBehaviorDataset:
    """view ⊇ cart ⊇ buy per user; one held-out buy per user for test and one for valid."""
    rng = np.random.default_rng(seed)
    rows = {b: [] for b in ("view", "cart", "buy", "test", "valid")}
    cols = {b: [] for b in rows}
    for u in range(n_users):
        items = rng.choice(n_items, size=10, replace=False)
        for b, chosen in (("view", items[:10]), ("cart", items[:6]), ("buy", items[:3]),
                          ("test", items[3:4]), ("valid", items[4:5])):
            rows[b] += [u] * len(chosen)
            cols[b] += list(chosen)
    mats = {b: binary_csr(np.array(rows[b]), np.array(cols[b]), (n_users, n_items)) for b in rows}
    return MultiBehaviorDataset("tiny", n_users, n_items, ["view", "cart", "buy"],
                                {b: mats[b] for b in ("view", "cart", "buy")}, mats["test"], mats["valid"])


DATASET = tiny_dataset()


def make_grid(tmp: Path, **extra) -> GridSpec:
    data = {
        "name": "tiny", "output_dir": str(tmp / "runs"), "results_dir": str(tmp / "results"),
        "datasets": ["tiny"], "seeds": [1, 2], "set": TRAIN_SET,
        "models": [{"label": "MF", "model": "mf"},
                   {"label": "LGN-M", "model": "lightgcn_m", "set": ["params.layers=1"]}],
        "baseline_labels": ["MF"], "proposed_labels": ["LGN-M"],
    }
    if "models" in extra:
        data.update(baseline_labels=[], proposed_labels=[])
    data.update(extra)
    return from_dict(GridSpec, data)


def quiet_run(grid: GridSpec, lines: list[str] | None = None, **kwargs):
    log = lines.append if lines is not None else (lambda m: None)
    return run_grid(grid, log=log, load_dataset=lambda cfg: DATASET, **kwargs)
