"""Importing an event log (CSV, gzip CSV or Parquet) into a :class:`MultiBehaviorDataset`.

The log has one row per event with columns ``user, item, behavior[, timestamp]``; ids are arbitrary strings.
The import:

1. drops rows whose behavior is not one of ``behaviors`` (their number is kept in ``ds.meta``);
2. drops repeated ``(user, item, behavior)`` rows, keeping the earliest timestamp (the first row on ties);
3. maps ids to contiguous ints in sorted order (numerically when every id is a plain integer), keeping the
   original ids in ``ds.user_ids`` / ``ds.item_ids``;
4. splits the target behavior leave-one-out per user: the latest target event (ties: the later row) becomes
   the test pair; without a timestamp column a seeded random one does. Users with a single target
   interaction keep it in training and get no test pair. With ``valid=True`` the latest remaining target
   event of users that still have at least two becomes the validation pair.

Test and validation pairs are removed from the *target* training matrix only: the same user-item pair stays
in the auxiliary behaviors (a bought item usually was viewed), as in the public benchmark splits.
"""

from __future__ import annotations

import csv
import gc
import gzip
import io
import os
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from mbrec.data.dataset import MultiBehaviorDataset, binary_csr
from mbrec.data.errors import DataError

PARQUET_SUFFIXES = (".parquet", ".pq")
PROGRESS_MIN_BYTES = 8 << 20


@dataclass
class EventColumns:
    """Raw string columns of an event log and how to find the source line of a data row."""

    path: Path
    users: Sequence[str]
    items: Sequence[str]
    behaviors: Sequence[str]
    times: Sequence | np.ndarray | None
    line_of: Callable[[int], int] | None = None

    def error(self, problem: str, row: int) -> DataError:
        """DataError for data row ``row`` (0-based): its line for CSV, ``row k`` for Parquet."""
        if self.line_of is not None:
            return DataError(self.path, problem, self.line_of(row))
        return DataError(self.path, f"row {row + 1}: {problem}")


# ---------------------------------------------------------------------------------------------- reading
def _read_text(path: Path) -> str:
    """The whole (decompressed) text of a CSV file, decoded as UTF-8."""
    try:
        data = path.read_bytes()
        return (gzip.decompress(data) if path.name.endswith(".gz") else data).decode("utf-8-sig")
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataError(path, f"truncated or corrupt gzip file ({err})") from None
    except UnicodeDecodeError as err:
        raise DataError(path, f"not UTF-8 text ({err.reason} at byte {err.start})") from None


def _column_indices(header: list[str], wanted: list[str], path: Path) -> list[int]:
    names = [name.strip() for name in header]
    missing = [name for name in wanted if name not in names]
    if missing:
        raise DataError(path, f"missing columns: {', '.join(missing)} (found: {', '.join(names)})", 1)
    return [names.index(name) for name in wanted]


def _record_line_finder(content: str, reader_args: dict, simple: bool) -> Callable[[int], int]:
    """Maps a CSV record index (0 = header) to its first line; re-parses only when fields span lines."""
    def line_of(record: int) -> int:
        if simple:
            return record + 1
        reader = csv.reader(io.StringIO(content, newline=""), **reader_args)
        line = 1
        for index, _ in enumerate(reader):
            if index == record:
                return line
            line = reader.line_num + 1
        return line
    return line_of


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: building a million small lists otherwise triggers it constantly."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _read_csv(path: Path, columns: list[str], time_col: str) -> EventColumns:
    content = _read_text(path)
    header_line = content.partition("\n")[0]
    if not header_line.strip():
        raise DataError(path, "empty file (expected a header line)", 1)
    reader_args = {"delimiter": "\t" if header_line.count("\t") > header_line.count(",") else ",",
                   "skipinitialspace": True}
    reader = csv.reader(io.StringIO(content, newline=""), **reader_args)
    try:
        with _gc_paused():
            records = list(reader)
    except csv.Error as err:
        raise DataError(path, f"malformed CSV ({err})", reader.line_num) from None
    line_of_record = _record_line_finder(content, reader_args, simple=reader.line_num == len(records))
    header = records[0]
    has_time = time_col in [name.strip() for name in header]
    indices = _column_indices(header, columns + ([time_col] if has_time else []), path)
    width = max(indices) + 1
    lengths = np.fromiter(map(len, records), dtype=np.int64, count=len(records))
    keep = lengths >= width
    keep[0] = False
    for short in np.flatnonzero(~keep)[1:].tolist():
        if any(field.strip() for field in records[short]):
            problem = f"expected {len(header)} columns, found {lengths[short]}"
            raise DataError(path, problem, line_of_record(short))
    record_index = np.flatnonzero(keep)
    if len(record_index) == 0:
        raise DataError(path, "no data rows after the header")
    data = records[1:] if len(record_index) == len(records) - 1 else [records[k] for k in record_index]
    with _gc_paused():
        fields = [[record[k] for record in data] for k in indices]
    return EventColumns(path, fields[0], fields[1], fields[2], fields[3] if has_time else None,
                        lambda row: line_of_record(int(record_index[row])))


def _read_parquet(path: Path, columns: list[str], time_col: str) -> EventColumns:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(path, "reading Parquet needs pyarrow (pip install 'mbrec[parquet]')") from None
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(path, f"cannot read Parquet file ({err})") from None
    missing = [name for name in columns if name not in table.column_names]
    if missing:
        found = ", ".join(table.column_names)
        raise DataError(path, f"missing columns: {', '.join(missing)} (found: {found})")
    if table.num_rows == 0:
        raise DataError(path, "no data rows")

    def strings(name: str) -> list[str]:
        return table.column(name).cast(pa.string()).fill_null("").to_pylist()

    times = None
    if time_col in table.column_names:
        column = table.column(time_col)
        if pa.types.is_timestamp(column.type) or pa.types.is_date(column.type):
            column = column.cast(pa.timestamp("us")).cast(pa.int64())
            times = column.to_numpy(zero_copy_only=False).astype(np.float64) / 1e6
        else:
            times = column.cast(pa.string()).fill_null("").to_pylist()
    return EventColumns(path, strings(columns[0]), strings(columns[1]), strings(columns[2]), times)


def read_event_columns(path: Path, columns: list[str], time_col: str) -> EventColumns:
    """Read the user, item, behavior (and, when present, time) columns of a CSV or Parquet log."""
    if not path.is_file():
        raise DataError(path, "file not found")
    if path.name.lower().endswith(PARQUET_SUFFIXES):
        return _read_parquet(path, columns, time_col)
    return _read_csv(path, columns, time_col)


# ---------------------------------------------------------------------------------------------- parsing
def _iso_seconds(text: str) -> float:
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_timestamps(events: EventColumns, rows: np.ndarray) -> np.ndarray:
    """Timestamps of ``rows`` as float seconds: numbers as given, ISO-8601 strings as Unix time (naive
    date-times are taken as UTC). Python's ISO parser is used because numpy reads digit strings as years."""
    if isinstance(events.times, np.ndarray):
        numbers, values = events.times[rows], events.times[rows].tolist()
    else:
        values = [events.times[k] for k in rows.tolist()]
        try:
            numbers = np.array(values, dtype=np.float64)
        except ValueError:
            numbers = None
    if numbers is not None:
        bad = np.flatnonzero(~np.isfinite(numbers))
        if len(bad):
            raise events.error(f"bad timestamp {values[bad[0]]!r}", int(rows[bad[0]]))
        return numbers
    return _iso_or_numbers(events, rows, values)


def _iso_or_numbers(events: EventColumns, rows: np.ndarray, values: list) -> np.ndarray:
    """Row-by-row parse; every value must be a finite number or an ISO date/time, all of the same kind."""
    seconds = np.empty(len(values), dtype=np.float64)
    is_iso = np.zeros(len(values), dtype=bool)
    for position, value in enumerate(values):
        try:
            seconds[position] = float(value)
        except (ValueError, TypeError):
            try:
                seconds[position] = _iso_seconds(value)
                is_iso[position] = True
            except (ValueError, TypeError):
                problem = f"bad timestamp {value!r} (expected a number or an ISO-8601 date/time)"
                raise events.error(problem, int(rows[position])) from None
        if not np.isfinite(seconds[position]):
            raise events.error(f"bad timestamp {value!r}", int(rows[position]))
    odd = np.flatnonzero(is_iso != is_iso[0])
    if len(odd):
        problem = f"timestamp {values[odd[0]]!r} mixes numbers and ISO-8601 date/times in one column"
        raise events.error(problem, int(rows[odd[0]]))
    return seconds


def code_strings(values: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Code of every value (order of first appearance) and the distinct values in that order."""
    distinct = list(dict.fromkeys(values))
    lookup = {value: code for code, value in enumerate(distinct)}
    codes = np.fromiter(map(lookup.__getitem__, values), dtype=np.int64, count=len(values))
    return codes, distinct


def sorted_ids(distinct: list[str], codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ids used by ``codes``, sorted, and ``codes`` renumbered contiguously in that order.

    Ids that are all canonical integers (``"7"``, not ``"007"``) are ordered numerically, others as strings.
    """
    used, compact = np.unique(codes, return_inverse=True)
    ids = np.array(distinct, dtype=str)[used]
    try:
        numbers = ids.astype(np.int64)
        numeric = np.array_equal(numbers.astype(str), ids)
    except (ValueError, OverflowError):
        numeric = False
    order = np.argsort(numbers if numeric else ids, kind="stable")
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return ids[order], rank[compact.ravel()]


def latest_per_user(users: np.ndarray, keys: tuple[np.ndarray, ...], min_count: int = 2) -> np.ndarray:
    """Mask of the one entry per user with the largest ``keys`` (``np.lexsort`` order: last key most
    significant), for users with at least ``min_count`` entries."""
    n = len(users)
    mask = np.zeros(n, dtype=bool)
    if n == 0:
        return mask
    order = np.lexsort((*keys, users))
    sorted_users = users[order]
    is_last = np.ones(n, dtype=bool)
    is_last[:-1] = sorted_users[1:] != sorted_users[:-1]
    counts = np.bincount(users)
    mask[order[is_last & (counts[sorted_users] >= min_count)]] = True
    return mask


# ---------------------------------------------------------------------------------------------- import
def _behavior_codes(events: EventColumns, behaviors: list[str]) -> tuple[np.ndarray, dict[str, int]]:
    """Code (index in ``behaviors``) of every row, -1 for unknown ones, and the dropped value counts."""
    raw_codes, values = code_strings(events.behaviors)
    lookup = np.array([behaviors.index(v) if v in behaviors else -1 for v in values], dtype=np.int64)
    codes = lookup[raw_codes]
    counts = np.bincount(raw_codes, minlength=len(values))
    dropped = {v: int(c) for v, c, code in zip(values, counts, lookup, strict=True) if code < 0}
    if np.all(codes < 0):
        shown = ", ".join(sorted(dropped)[:5])
        expected = ", ".join(behaviors)
        raise events.error(f"no row has a known behavior (found: {shown}; expected: {expected})", 0)
    return codes, dropped


def _id_codes(events: EventColumns, label: str, values: Sequence[str],
              rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ids and contiguous codes of ``values[rows]``; an empty id is an error on its line."""
    codes, distinct = code_strings(values)
    codes = codes[rows]
    if "" in distinct:
        empty = np.flatnonzero(codes == distinct.index(""))
        if len(empty):
            raise events.error(f"empty {label} id", int(rows[empty[0]]))
    return sorted_ids(distinct, codes)


def _order_behaviors(behaviors: list[str], target: str | None, path: Path) -> list[str]:
    names = [b.strip() for b in behaviors if b.strip()]
    if not names:
        raise DataError(path, "no behaviors given")
    if len(set(names)) != len(names):
        raise DataError(path, f"behaviors listed twice: {', '.join(names)}")
    target = names[-1] if target is None else target
    if target not in names:
        raise DataError(path, f"target {target!r} is not one of the behaviors ({', '.join(names)})")
    return [b for b in names if b != target] + [target]


def _stem(path: Path) -> str:
    """File name without ``.gz`` and the table suffix: ``events.csv.gz`` -> ``events``."""
    stem = path.name.removesuffix(".gz")
    for suffix in (".csv", ".tsv", ".txt", *PARQUET_SUFFIXES):
        stem = stem.removesuffix(suffix)
    return stem or path.name


def _first_events(pair_key: np.ndarray, times: np.ndarray | None) -> np.ndarray:
    """Positions (ascending) of the earliest row of every distinct key; ties go to the first row."""
    tie_break = np.arange(len(pair_key))
    by_key = np.lexsort((tie_break, times, pair_key) if times is not None else (tie_break, pair_key))
    first = np.ones(len(by_key), dtype=bool)
    first[1:] = pair_key[by_key][1:] != pair_key[by_key][:-1]
    return np.sort(by_key[first])


def _held_out_masks(users: np.ndarray, recency: tuple[np.ndarray, ...],
                    valid: bool) -> tuple[np.ndarray, np.ndarray]:
    """Test mask (latest per user with >= 2) and validation mask (latest of the rest with >= 2)."""
    test = latest_per_user(users, recency)
    held = np.zeros_like(test)
    if valid:
        rest = np.flatnonzero(~test)
        held[rest[latest_per_user(users[rest], tuple(key[rest] for key in recency))]] = True
    return test, held


def import_event_log(path: str | os.PathLike, behaviors: list[str], target: str | None = None,
                     name: str | None = None, seed: int = 0, valid: bool = False, user_col: str = "user",
                     item_col: str = "item", behavior_col: str = "behavior", time_col: str = "timestamp",
                     progress: bool = False) -> MultiBehaviorDataset:
    """Build a dataset from an event log (see the module docstring for the rules); errors are DataError.

    ``progress`` shows a bar over the import steps for files larger than 8 MiB.
    """
    from tqdm.auto import tqdm

    path = Path(path)
    order = _order_behaviors(behaviors.split(",") if isinstance(behaviors, str) else list(behaviors),
                             target, path)
    large = path.is_file() and path.stat().st_size >= PROGRESS_MIN_BYTES
    with tqdm(total=4, desc=f"importing {path.name}", unit="step", disable=not (progress and large)) as bar:
        events = read_event_columns(path, [user_col, item_col, behavior_col], time_col)
        bar.update()
        codes, dropped = _behavior_codes(events, order)
        rows = np.flatnonzero(codes >= 0)
        user_ids, users = _id_codes(events, "user", events.users, rows)
        item_ids, items = _id_codes(events, "item", events.items, rows)
        bar.update()
        times = parse_timestamps(events, rows) if events.times is not None else None
        bar.update()
        kinds = codes[rows]
        missing = [b for k, b in enumerate(order) if not np.any(kinds == k)]
        if missing:
            raise DataError(path, f"no rows for behavior(s): {', '.join(missing)}")
        kept = _first_events((users * len(item_ids) + items) * len(order) + kinds, times)
        users, items, kinds = users[kept], items[kept], kinds[kept]
        is_target = kinds == len(order) - 1
        rng = np.random.default_rng(seed)
        recency = ((kept[is_target], times[kept][is_target]) if times is not None
                   else (rng.random(int(is_target.sum())),))
        test, held = _held_out_masks(users[is_target], recency, valid)
        bar.update()
    shape = (len(user_ids), len(item_ids))
    train = {b: binary_csr(users[kinds == k], items[kinds == k], shape) for k, b in enumerate(order[:-1])}
    t_users, t_items = users[is_target], items[is_target]
    keep = ~(test | held)
    train[order[-1]] = binary_csr(t_users[keep], t_items[keep], shape)
    meta = {
        "source": str(path), "rows": int(len(codes)),
        "dropped_unknown_behavior_rows": int(len(codes) - len(rows)), "dropped_behaviors": dropped,
        "dropped_duplicate_rows": int(len(rows) - len(kept)),
        "split": "latest timestamp per user" if times is not None else f"random per user (seed {seed})",
        "users_without_test": int(len(np.unique(t_users)) - test.sum()),
    }
    return MultiBehaviorDataset(
        name=name or _stem(path), n_users=shape[0], n_items=shape[1], behaviors=order, train=train,
        test=binary_csr(t_users[test], t_items[test], shape),
        valid=binary_csr(t_users[held], t_items[held], shape) if valid else None,
        user_ids=user_ids, item_ids=item_ids, meta=meta,
    )
