"""Reading and writing the directory format of ``shared/datasets``.

A dataset directory holds:

- ``<behavior>.txt.gz`` for every behavior: training pairs, one ``user item`` line each (0-based ints);
- ``test.txt.gz`` (held-out target pairs) and optionally ``valid.txt.gz``;
- ``meta.json`` with at least ``n_users``, ``n_items``, ``behaviors`` (upstream -> target) and ``target``;
- optionally ``user_ids.txt.gz`` / ``item_ids.txt.gz``: original ids; line ``k`` holds the id of internal
  id ``k``.

Uncompressed ``.txt`` files are accepted wherever ``.txt.gz`` is. Parsing uses numpy's C reader; when it
rejects a file, a slow line-by-line scan finds the first offending line so the :class:`DataError` can name it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import warnings
import zlib
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from mbrec.data.dataset import MultiBehaviorDataset, binary_csr
from mbrec.data.errors import DataError

REQUIRED_META_KEYS = ("n_users", "n_items", "behaviors", "target")
STRUCTURAL_META_KEYS = (*REQUIRED_META_KEYS, "counts", "test_count", "test_users", "valid_count",
                        "files_sha256")
PAIR_FORMAT = ("gzip text, one 'user_id item_id' pair per line, 0-based int ids, sorted by (user, item); "
               "<behavior>.txt.gz = training interactions of that behavior; "
               "test.txt.gz = held-out target pairs")
_INT_TOKEN = re.compile(rb"[+-]?[0-9]+")


# ---------------------------------------------------------------------------------------------- reading
def read_file_bytes(path: Path) -> bytes:
    """The (decompressed, for ``.gz``) bytes of ``path``; a truncated or corrupt gzip raises DataError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except OSError as err:
        raise DataError(path, f"cannot read file ({err.strerror or err})") from None
    if path.name.endswith(".gz"):
        try:
            return gzip.decompress(raw)
        except (EOFError, gzip.BadGzipFile, zlib.error) as err:
            raise DataError(path, f"truncated or corrupt gzip file ({err})") from None
    return raw


def find_data_file(folder: Path, stem: str) -> Path | None:
    """``<stem>.txt.gz`` or ``<stem>.txt`` inside ``folder`` (gzip preferred), or None."""
    for suffix in (".txt.gz", ".txt"):
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _first_bad_token_line(data: bytes, path: Path, n_columns: int | None) -> DataError | None:
    """Scan lines (slowly) for the first non-integer token or wrong column count."""
    for number, line in enumerate(data.split(b"\n"), start=1):
        tokens = line.split()
        if not tokens:
            continue
        if n_columns is not None and len(tokens) != n_columns:
            return DataError(path, f"expected {n_columns} columns ('user item'), found {len(tokens)}", number)
        for token in tokens:
            if not _INT_TOKEN.fullmatch(token) or len(token.lstrip(b"+-")) > 18:
                shown = token.decode("utf-8", "replace")
                return DataError(path, f"not an integer id: {shown!r}", number)
    return None


def nonblank_line_number(data: bytes, index: int) -> int:
    """1-based line number of the ``index``-th (0-based) non-blank line of ``data``."""
    seen = -1
    for number, line in enumerate(data.split(b"\n"), start=1):
        if line.strip():
            seen += 1
            if seen == index:
                return number
    raise IndexError(index)


def parse_pair_bytes(data: bytes, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse ``user item`` lines into two int64 arrays (file order); blank lines are skipped."""
    if not data.strip():
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pairs = np.loadtxt(io.BytesIO(data), dtype=np.int64, ndmin=2, comments=None)
    except (ValueError, OverflowError) as err:
        located = _first_bad_token_line(data, path, n_columns=2)
        raise (located or DataError(path, f"cannot parse pairs ({err})")) from None
    if pairs.shape[1] != 2:
        located = _first_bad_token_line(data, path, n_columns=2)
        raise located or DataError(path, f"expected 2 columns, found {pairs.shape[1]}")
    return np.ascontiguousarray(pairs[:, 0]), np.ascontiguousarray(pairs[:, 1])


def check_id_range(ids: np.ndarray, limit: int, what: str, data: bytes, path: Path) -> None:
    """Raise DataError on the first id that is negative or ``>= limit`` (``what`` is 'user' or 'item')."""
    bad = np.flatnonzero((ids < 0) | (ids >= limit))
    if len(bad):
        first = int(bad[0])
        value = int(ids[first])
        reason = "negative" if value < 0 else f"must be < n_{what}s = {limit}"
        raise DataError(path, f"{what} id {value} out of range ({reason})", nonblank_line_number(data, first))


def read_pairs(path: Path, n_users: int, n_items: int) -> tuple[np.ndarray, np.ndarray, bytes]:
    """Read a pair file, check the id ranges; returns users, items and the raw text (for line lookups)."""
    data = read_file_bytes(path)
    users, items = parse_pair_bytes(data, path)
    check_id_range(users, n_users, "user", data, path)
    check_id_range(items, n_items, "item", data, path)
    return users, items, data


def first_pair_inside(users: np.ndarray, items: np.ndarray, matrix: sp.csr_matrix) -> int | None:
    """Index of the first pair ``(users[k], items[k])`` that is a stored entry of ``matrix``, else None."""
    if len(users) == 0 or matrix.nnz == 0:
        return None
    coo = matrix.tocoo()
    n_items = matrix.shape[1]
    stored = np.sort(coo.row.astype(np.int64) * n_items + coo.col.astype(np.int64))
    keys = users.astype(np.int64) * n_items + items.astype(np.int64)
    pos = np.minimum(np.searchsorted(stored, keys), len(stored) - 1)
    hits = np.flatnonzero(stored[pos] == keys)
    return int(hits[0]) if len(hits) else None


def _load_meta(folder: Path) -> dict:
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise DataError(meta_path, "meta.json missing (not a dataset directory)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(meta_path, f"invalid JSON ({err.msg})", err.lineno) from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(meta_path, f"cannot read meta.json ({err})") from None
    if not isinstance(meta, dict):
        raise DataError(meta_path, "meta.json must hold a JSON object")
    missing = [key for key in REQUIRED_META_KEYS if key not in meta]
    if missing:
        raise DataError(meta_path, f"missing keys: {', '.join(missing)}")
    for key in ("n_users", "n_items"):
        if not isinstance(meta[key], int) or isinstance(meta[key], bool) or meta[key] <= 0:
            raise DataError(meta_path, f"{key} must be a positive integer, got {meta[key]!r}")
    behaviors = meta["behaviors"]
    if not isinstance(behaviors, list) or not behaviors or not all(isinstance(b, str) for b in behaviors):
        raise DataError(meta_path, "behaviors must be a non-empty list of names")
    if len(set(behaviors)) != len(behaviors):
        raise DataError(meta_path, f"behaviors listed twice: {behaviors}")
    if meta["target"] not in behaviors:
        raise DataError(meta_path, f"target {meta['target']!r} is not listed in behaviors {behaviors}")
    if behaviors[-1] != meta["target"]:
        raise DataError(meta_path, f"target {meta['target']!r} must be the last behavior in {behaviors}")
    return meta


def _check_count(folder: Path, label: str, expected: object, found: int, file: Path) -> None:
    if expected is not None and expected != found:
        raise DataError(folder / "meta.json",
                        f"{label} is {expected} in meta.json but {file.name} has {found} distinct pairs")


def _load_ids(folder: Path, stem: str, expected: int) -> np.ndarray | None:
    path = find_data_file(folder, stem)
    if path is None:
        return None
    try:
        lines = read_file_bytes(path).decode("utf-8").split("\n")
    except UnicodeDecodeError as err:
        raise DataError(path, f"not UTF-8 text ({err.reason} at byte {err.start})") from None
    if lines and lines[-1] == "":
        lines.pop()
    ids = [line.rstrip("\r") for line in lines]
    if len(ids) != expected:
        raise DataError(path, f"has {len(ids)} ids, expected {expected} (one per line)")
    empty = [k for k, value in enumerate(ids) if not value]
    if empty:
        raise DataError(path, "empty id", empty[0] + 1)
    return np.array(ids, dtype=str)


def load_directory(path: str | os.PathLike, name: str | None = None) -> MultiBehaviorDataset:
    """Load a dataset directory; ``name`` defaults to the directory's name. Bad input raises DataError."""
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(folder, "not a directory")
    meta = _load_meta(folder)
    n_users, n_items = meta["n_users"], meta["n_items"]
    shape = (n_users, n_items)
    counts = meta.get("counts") if isinstance(meta.get("counts"), dict) else {}
    train: dict[str, sp.csr_matrix] = {}
    for behavior in meta["behaviors"]:
        file = find_data_file(folder, behavior)
        if file is None:
            raise DataError(folder / f"{behavior}.txt.gz", f"behavior file missing for {behavior!r}")
        users, items, _ = read_pairs(file, n_users, n_items)
        if len(users) == 0:
            raise DataError(file, f"behavior {behavior!r} has no pairs")
        train[behavior] = binary_csr(users, items, shape)
        _check_count(folder, f"counts.{behavior}", counts.get(behavior), train[behavior].nnz, file)
    target_train = train[meta["target"]]
    test = _load_held_out(folder, "test", shape, [target_train])
    _check_count(folder, "test_count", meta.get("test_count"), test.nnz, folder / "test.txt.gz")
    valid = None
    if find_data_file(folder, "valid") is not None:
        valid = _load_held_out(folder, "valid", shape, [target_train, test])
    return MultiBehaviorDataset(
        name=name or folder.resolve().name, n_users=n_users, n_items=n_items,
        behaviors=list(meta["behaviors"]), train=train, test=test, valid=valid,
        user_ids=_load_ids(folder, "user_ids", n_users), item_ids=_load_ids(folder, "item_ids", n_items),
        meta=meta,
    )


def _load_held_out(folder: Path, stem: str, shape: tuple[int, int],
                   disjoint_from: list[sp.csr_matrix]) -> sp.csr_matrix:
    """Read ``test``/``valid`` pairs; a pair inside any of ``disjoint_from`` (target train, test) is an
    error on that pair's line."""
    file = find_data_file(folder, stem)
    if file is None:
        raise DataError(folder / f"{stem}.txt.gz", f"{stem} file missing")
    users, items, data = read_pairs(file, *shape)
    labels = ["the target training set", "the test set"]
    for label, matrix in zip(labels, disjoint_from, strict=False):
        inside = first_pair_inside(users, items, matrix)
        if inside is not None:
            pair = f"({int(users[inside])}, {int(items[inside])})"
            line = nonblank_line_number(data, inside)
            raise DataError(file, f"{stem} pair {pair} is also in {label}", line)
    return binary_csr(users, items, shape)


# ---------------------------------------------------------------------------------------------- writing
def pair_text(matrix: sp.csr_matrix) -> bytes:
    """``user item`` lines of a CSR matrix, sorted by (user, item)."""
    coo = matrix.tocsr().sorted_indices().tocoo()
    if coo.nnz == 0:
        return b""
    return ("\n".join(map("{} {}".format, coo.row.tolist(), coo.col.tolist())) + "\n").encode()


def _id_text(ids: np.ndarray, what: str) -> bytes:
    values = [str(value) for value in ids.tolist()]
    bad = [value for value in values if not value or "\n" in value or "\r" in value or value != value.strip()]
    if bad:
        raise ValueError(f"{what} id {bad[0]!r} cannot be saved one per line (empty, newline or edge spaces)")
    return ("\n".join(values) + "\n").encode("utf-8")


def _write_gzip(path: Path, payload: bytes) -> str:
    """Write ``payload`` gzip-compressed (reproducible: no timestamp); returns the file's sha256."""
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=6, mtime=0) as stream:
        stream.write(payload)
    blob = buffer.getvalue()
    path.write_bytes(blob)
    return hashlib.sha256(blob).hexdigest()


def _dataset_meta(ds: MultiBehaviorDataset) -> dict:
    meta = {key: value for key, value in ds.meta.items() if key not in STRUCTURAL_META_KEYS}
    meta.setdefault("name", ds.name)
    meta.update({
        "n_users": ds.n_users, "n_items": ds.n_items, "behaviors": list(ds.behaviors), "target": ds.target,
        "counts": {b: int(ds.train[b].nnz) for b in ds.behaviors},
        "test_count": int(ds.test.nnz), "test_users": int(len(ds.eval_users("test"))),
    })
    if ds.valid is not None:
        meta["valid_count"] = int(ds.valid.nnz)
    meta.setdefault("format", PAIR_FORMAT)
    return meta


def _json_value(value: object) -> object:
    """JSON form of numpy scalars/arrays and paths found in ``ds.meta``."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _write_all(ds: MultiBehaviorDataset, folder: Path) -> None:
    files = {f"{b}.txt.gz": pair_text(ds.train[b]) for b in ds.behaviors}
    files["test.txt.gz"] = pair_text(ds.test)
    if ds.valid is not None:
        files["valid.txt.gz"] = pair_text(ds.valid)
    if ds.user_ids is not None:
        files["user_ids.txt.gz"] = _id_text(ds.user_ids, "user")
    if ds.item_ids is not None:
        files["item_ids.txt.gz"] = _id_text(ds.item_ids, "item")
    meta = _dataset_meta(ds)
    meta["files_sha256"] = {file: _write_gzip(folder / file, payload) for file, payload in files.items()}
    text = json.dumps(meta, indent=2, default=_json_value)
    (folder / "meta.json").write_text(text + "\n", encoding="utf-8")


def save_directory(ds: MultiBehaviorDataset, path: str | os.PathLike) -> Path:
    """Write ``ds`` as a dataset directory at ``path``, atomically; returns the path.

    Everything is written into a temporary sibling directory which then replaces ``path`` by rename, so a
    crash never leaves a half-written dataset. An existing dataset directory (one with ``meta.json``) or an
    empty directory is replaced; any other existing path raises ``FileExistsError``.
    """
    target = Path(path)
    if target.exists() and not (target.is_dir() and (not any(target.iterdir())
                                                     or (target / "meta.json").is_file())):
        raise FileExistsError(f"{target} exists and is not a dataset directory; refusing to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        _write_all(ds, staging)
        os.chmod(staging, 0o755)
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, retired / target.name)
            os.replace(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
