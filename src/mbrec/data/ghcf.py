"""Loading the adjacency-list release format of GHCF / MBSSL.

A folder holds ``train.txt`` (target training lists: one line per user, ``uid i1 i2 ...``), ``test.txt``
(``uid item`` lines; several items per line are accepted too) and auxiliary files such as ``pv.txt`` or
``cart.txt`` in the same line format, where a user may be missing. Ids are 0-based and used as they are:
M = 1 + the largest user id and N = 1 + the largest item id over all files read. Files may be gzip-compressed
(``.txt.gz``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mbrec.data.dataset import MultiBehaviorDataset, binary_csr
from mbrec.data.directory import first_pair_inside, read_file_bytes
from mbrec.data.errors import DataError

# Default auxiliary behaviors, upstream first: (behavior name, candidate file stems).
DEFAULT_AUXILIARY_FILES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("view", ("pv", "view", "click")),
    ("collect", ("fav", "collect")),
    ("cart", ("cart",)),
)
TARGET_FILE = ("buy", "train")
TEST_FILE = "test"


@dataclass
class AdjacencyLists:
    """The pairs of one list file: ``users[k], items[k]`` came from line ``lines[k]``; ``max_user`` also
    counts users whose line lists no item."""

    path: Path
    users: np.ndarray
    items: np.ndarray
    lines: np.ndarray
    max_user: int


def _bad_token_error(path: Path, data: bytes) -> DataError:
    for number, line in enumerate(data.split(b"\n"), start=1):
        for token in line.split():
            if not token.isdigit() or len(token) > 18:
                shown = token.decode("utf-8", "replace")
                negative = token.startswith(b"-") and token[1:].isdigit()
                what = "negative id" if negative else "not an integer id"
                return DataError(path, f"{what}: {shown!r}", number)
    return DataError(path, "cannot parse the id lists")


def read_adjacency_lists(path: Path) -> AdjacencyLists:
    """Parse a ``uid i1 i2 ...`` file (blank lines skipped); bad tokens raise DataError with the line."""
    data = read_file_bytes(path)
    tokens: list[bytes] = []
    counts: list[int] = []
    numbers: list[int] = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        fields = line.split()
        if fields:
            tokens.extend(fields)
            counts.append(len(fields))
            numbers.append(number)
    try:
        values = np.array(tokens, dtype=np.int64)
    except (ValueError, OverflowError):
        raise _bad_token_error(path, data) from None
    if len(values) and values.min() < 0:
        raise _bad_token_error(path, data)
    per_line = np.array(counts, dtype=np.int64)
    starts = np.cumsum(per_line) - per_line
    is_user = np.zeros(len(values), dtype=bool)
    is_user[starts] = True
    users_per_line = values[starts]
    users = np.repeat(users_per_line, per_line - 1)
    lines = np.repeat(np.array(numbers, dtype=np.int64), per_line - 1)
    max_user = int(users_per_line.max()) if len(users_per_line) else -1
    return AdjacencyLists(path, users, values[~is_user], lines, max_user)


def _find_list_file(folder: Path, stem: str) -> Path | None:
    for suffix in (".txt", ".txt.gz"):
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def default_behavior_files(folder: Path) -> dict[str, str]:
    """Behavior name -> file name for the files present in ``folder`` (pv/view/click, fav/collect, cart,
    then ``train.txt`` as ``buy``)."""
    files: dict[str, str] = {}
    for behavior, stems in DEFAULT_AUXILIARY_FILES:
        for stem in stems:
            found = _find_list_file(folder, stem)
            if found is not None:
                files[behavior] = found.name
                break
    target_name, target_stem = TARGET_FILE
    target = _find_list_file(folder, target_stem)
    files[target_name] = target.name if target is not None else f"{target_stem}.txt"
    return files


def load_adjacency_lists(folder: str | os.PathLike, behaviors: dict[str, str] | None = None,
                         name: str | None = None) -> MultiBehaviorDataset:
    """Load a GHCF/MBSSL folder.

    Args:
        folder: the dataset folder.
        behaviors: behavior name -> list file (relative to ``folder``), upstream first, target last, e.g.
            ``{"view": "pv.txt", "cart": "cart.txt", "buy": "train.txt"}``. Default: the files found among
            ``pv``/``view``/``click`` (as ``view``), ``fav``/``collect`` (as ``collect``), ``cart``, then
            ``train.txt`` as ``buy``.
        name: dataset name; default the folder's name.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(root, "not a directory")
    files = dict(behaviors) if behaviors is not None else default_behavior_files(root)
    if not files:
        raise DataError(root, "no behaviors given")
    lists = {behavior: read_adjacency_lists(root / file) for behavior, file in files.items()}
    test_path = _find_list_file(root, TEST_FILE) or root / f"{TEST_FILE}.txt"
    test = read_adjacency_lists(test_path)
    for behavior, pairs in lists.items():
        if len(pairs.users) == 0:
            raise DataError(pairs.path, f"behavior {behavior!r} has no pairs")
    everything = [*lists.values(), test]
    n_users = 1 + max(max(p.max_user for p in everything), 0)
    n_items = 1 + max(int(p.items.max()) if len(p.items) else 0 for p in everything)
    shape = (n_users, n_items)
    train = {b: binary_csr(p.users, p.items, shape) for b, p in lists.items()}
    order = list(files)
    inside = first_pair_inside(test.users, test.items, train[order[-1]])
    if inside is not None:
        pair = f"({int(test.users[inside])}, {int(test.items[inside])})"
        raise DataError(test.path, f"test pair {pair} is also in the target training set",
                        int(test.lines[inside]))
    meta = {"source": str(root), "format": "GHCF/MBSSL adjacency lists", "files": files}
    return MultiBehaviorDataset(name=name or root.resolve().name, n_users=n_users, n_items=n_items,
                                behaviors=order, train=train, test=binary_csr(test.users, test.items, shape),
                                meta=meta)
