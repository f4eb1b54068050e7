"""Finding and loading datasets by name, path or ``synthetic[:preset]`` spec.

The data root (a folder holding one directory per dataset, like ``shared/datasets``) is, in order:
the ``MBREC_DATA_ROOT`` environment variable, ``../shared/datasets`` relative to the current directory,
or ``../shared/datasets`` next to the repository that holds this package.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mbrec.data.dataset import MultiBehaviorDataset, binary_csr
from mbrec.data.directory import find_data_file, load_directory
from mbrec.data.errors import DataError
from mbrec.data.eventlog import latest_per_user
from mbrec.data.ghcf import load_adjacency_lists
from mbrec.data.synthetic import SYNTHETIC_PRESETS, make_synthetic

DATA_ROOT_ENV = "MBREC_DATA_ROOT"
SYNTHETIC_PREFIX = "synthetic"


class DatasetNotFound(DataError):
    """No dataset directory matches a spec; the message lists where we looked."""

    def __init__(self, spec: str, searched: list[Path]) -> None:
        self.spec = spec
        self.searched = searched
        places = ", ".join(str(p) for p in searched) or "no data root found"
        super().__init__(spec, f"dataset not found (looked in: {places}); set {DATA_ROOT_ENV} to the folder "
                               "holding the dataset directories, pass --data-root, or give a path")


def candidate_data_roots() -> list[Path]:
    """Every place a data root may be, in the order they are tried (existing or not)."""
    candidates = []
    if os.environ.get(DATA_ROOT_ENV):
        candidates.append(Path(os.environ[DATA_ROOT_ENV]).expanduser())
    candidates.append(Path.cwd() / ".." / "shared" / "datasets")
    candidates.append(Path(__file__).resolve().parents[3] / ".." / "shared" / "datasets")
    return candidates


def default_data_root() -> Path | None:
    """``$MBREC_DATA_ROOT`` when set, else the first existing ``shared/datasets`` folder, else None."""
    if os.environ.get(DATA_ROOT_ENV):
        return Path(os.environ[DATA_ROOT_ENV]).expanduser()
    for candidate in candidate_data_roots():
        if candidate.is_dir():
            return candidate.resolve()
    return None


def _load_folder(folder: Path, name: str | None) -> MultiBehaviorDataset:
    """A directory-format folder (with ``meta.json``) or a GHCF/MBSSL list folder (with ``train.txt``)."""
    if not (folder / "meta.json").is_file() and find_data_file(folder, "train") is not None:
        return load_adjacency_lists(folder, name=name)
    return load_directory(folder, name=name)


def _load_synthetic(spec: str, overrides: dict) -> MultiBehaviorDataset:
    preset_name = spec.partition(":")[2] or "small"
    if preset_name not in SYNTHETIC_PRESETS:
        known = ", ".join(f"{SYNTHETIC_PREFIX}:{p}" for p in SYNTHETIC_PRESETS)
        raise DataError(spec, f"unknown synthetic preset {preset_name!r} (known: {known})")
    params = {**SYNTHETIC_PRESETS[preset_name], **overrides}
    params.setdefault("name", f"{SYNTHETIC_PREFIX}-{preset_name}")
    return make_synthetic(**params)


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or spec.startswith((".", "~")) or (os.altsep is not None and os.altsep in spec)


def load_dataset(spec: str, data_root: str | os.PathLike | None = None,
                 **synthetic_kwargs) -> MultiBehaviorDataset:
    """Load a dataset from a spec.

    Args:
        spec: ``synthetic`` / ``synthetic:<preset>`` (presets in ``SYNTHETIC_PRESETS``), a dataset name
            looked up under the data root (e.g. ``taobao``), or a path to a dataset directory (directory
            format, or a GHCF/MBSSL folder with ``train.txt``).
        data_root: folder holding dataset directories; default :func:`default_data_root`.
        synthetic_kwargs: passed to :func:`make_synthetic` (e.g. ``seed``, ``valid``) for synthetic specs.
    """
    if spec == SYNTHETIC_PREFIX or spec.startswith(SYNTHETIC_PREFIX + ":"):
        return _load_synthetic(spec, synthetic_kwargs)
    direct = Path(spec).expanduser()
    if direct.is_dir() and (_looks_like_path(spec) or (direct / "meta.json").is_file()):
        return _load_folder(direct, None)
    if _looks_like_path(spec):
        raise DataError(direct, "no such dataset directory")
    roots = [Path(data_root).expanduser()] if data_root is not None else candidate_data_roots()
    searched: list[Path] = []
    for root in roots:
        folder = (root / spec).resolve()
        if folder in searched:
            continue
        searched.append(folder)
        if folder.is_dir():
            return _load_folder(folder, spec)
        if data_root is None and os.environ.get(DATA_ROOT_ENV):
            break
    raise DatasetNotFound(spec, searched)


def add_validation_split(ds: MultiBehaviorDataset, seed: int = 0) -> MultiBehaviorDataset:
    """A copy of ``ds`` where every user with at least two target training items has one random one
    (seeded) moved from the target training matrix to ``valid``; auxiliary behaviors are unchanged.

    A dataset that already has a validation split is returned as it is (its own split wins).
    """
    if ds.valid is not None:
        return ds
    target = ds.target_train.tocoo()
    users, items = target.row.astype(np.int64), target.col.astype(np.int64)
    rng = np.random.default_rng(seed)
    held = latest_per_user(users, (rng.random(len(users)),), min_count=2)
    shape = (ds.n_users, ds.n_items)
    train = dict(ds.train)
    train[ds.target] = binary_csr(users[~held], items[~held], shape)
    return MultiBehaviorDataset(
        name=ds.name, n_users=ds.n_users, n_items=ds.n_items, behaviors=list(ds.behaviors), train=train,
        test=ds.test, valid=binary_csr(users[held], items[held], shape), user_ids=ds.user_ids,
        item_ids=ds.item_ids, meta={**ds.meta, "valid_split": f"random target item per user (seed {seed})"},
    )
