"""Event-log import: id mapping, filtering, de-duplication, leave-one-out and the error lines."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from mbrec.data.errors import DataError
from mbrec.data.eventlog import import_event_log, latest_per_user

HEADER = "user,item,behavior,timestamp\n"


def write_log(tmp_path: Path, body: str, name: str = "events.csv", header: str = HEADER) -> Path:
    path = tmp_path / name
    text = header + body
    if name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


def pairs(matrix, ds) -> set[tuple[str, str]]:
    """Pairs of a matrix in the original ids."""
    coo = matrix.tocoo()
    return {(str(ds.user_ids[u]), str(ds.item_ids[i])) for u, i in zip(coo.row, coo.col, strict=True)}


LOG = (
    "alice,apple,view,1\n"
    "alice,apple,buy,5\n"
    "alice,pear,view,2\n"
    "alice,pear,buy,9\n"     # alice's latest buy -> test
    "alice,plum,buy,3\n"
    "bob,pear,buy,4\n"       # bob's only buy stays in train
    "bob,plum,click,4\n"     # unknown behavior, dropped
    "carol,apple,buy,7\n"
    "carol,plum,buy,7\n"     # tie on time: the later row is the test pair
    "carol,apple,view,1\n"
)


def test_leave_one_out_takes_the_latest_buy_and_keeps_single_buys(tmp_path):
    ds = import_event_log(write_log(tmp_path, LOG), ["view", "buy"])
    assert ds.behaviors == ["view", "buy"]
    assert list(ds.user_ids) == ["alice", "bob", "carol"] and list(ds.item_ids) == ["apple", "pear", "plum"]
    assert pairs(ds.test, ds) == {("alice", "pear"), ("carol", "plum")}
    assert pairs(ds.train["buy"], ds) == {("alice", "apple"), ("alice", "plum"), ("bob", "pear"),
                                          ("carol", "apple")}
    # held-out pairs stay in the auxiliary behavior
    assert ("alice", "pear") in pairs(ds.train["view"], ds)
    assert ds.meta["dropped_unknown_behavior_rows"] == 1 and ds.meta["dropped_behaviors"] == {"click": 1}
    assert ds.meta["users_without_test"] == 1 and ds.valid is None


def test_duplicates_keep_the_earliest_timestamp(tmp_path):
    body = ("u1,a,buy,10\n"
            "u1,b,buy,5\n"
            "u1,b,buy,20\n"    # repeat of (u1, b, buy): the earliest time (5) is kept, so a (10) is latest
            "u1,a,buy,8\n")
    ds = import_event_log(write_log(tmp_path, body), ["buy"])
    assert pairs(ds.test, ds) == {("u1", "a")} and pairs(ds.train["buy"], ds) == {("u1", "b")}
    assert ds.meta["dropped_duplicate_rows"] == 2


def test_iso_timestamps_and_validation_split(tmp_path):
    body = ("u,i1,buy,2024-01-03T10:00:00\n"
            "u,i2,buy,2024-01-01\n"
            "u,i3,buy,2024-01-02T00:00:00+00:00\n"
            "u,i4,buy,2024-01-05 08:30\n"
            "v,i1,buy,2024-02-01\n"
            "v,i2,buy,2024-02-02\n")
    ds = import_event_log(write_log(tmp_path, body), ["buy"], valid=True)
    assert pairs(ds.test, ds) == {("u", "i4"), ("v", "i2")}
    assert pairs(ds.valid, ds) == {("u", "i1")}          # v has only one left: no valid pair
    assert pairs(ds.train["buy"], ds) == {("u", "i2"), ("u", "i3"), ("v", "i1")}


def test_target_is_moved_last_and_numeric_ids_sort_numerically(tmp_path):
    body = "10,5,buy,1\n9,5,view,1\n10,40,buy,2\n10,40,view,0\n9,7,buy,1\n"
    ds = import_event_log(write_log(tmp_path, body), ["buy", "view"], target="buy")
    assert ds.behaviors == ["view", "buy"] and ds.target == "buy"
    assert list(ds.user_ids) == ["9", "10"] and list(ds.item_ids) == ["5", "7", "40"]


def test_no_timestamp_column_splits_randomly_but_deterministically(tmp_path):
    rows = "".join(f"u{u},i{i},buy\n" for u in range(30) for i in range(5) if (u + i) % 3)
    path = write_log(tmp_path, rows, header="user,item,behavior\n")
    first = import_event_log(path, ["buy"], seed=1)
    again = import_event_log(path, ["buy"], seed=1)
    other = import_event_log(path, ["buy"], seed=2)
    assert first.fingerprint() == again.fingerprint() and first.fingerprint() != other.fingerprint()
    assert first.test.nnz == 30 and first.meta["split"].startswith("random")


def test_gzip_tab_separated_and_custom_columns(tmp_path):
    header = "uid\tsku\tevent\n"
    body = "a\tx\tpv\na\ty\tbuy\na\tx\tbuy\nb\ty\tbuy\nb\tx\tbuy\n"
    path = write_log(tmp_path, body, name="log.tsv.gz", header=header)
    ds = import_event_log(path, ["pv", "buy"], user_col="uid", item_col="sku", behavior_col="event")
    assert ds.name == "log" and ds.test.nnz == 2 and ds.train["pv"].nnz == 1


def test_parquet_input(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"user": [1, 1, 2, 2], "item": ["a", "b", "a", "b"], "behavior": ["buy"] * 4,
                      "timestamp": pa.array([1, 2, 4, 3], type=pa.timestamp("s"))})
    pq.write_table(table, tmp_path / "log.parquet")
    ds = import_event_log(tmp_path / "log.parquet", ["buy"])
    assert pairs(ds.test, ds) == {("1", "b"), ("2", "a")}


def test_parquet_missing_column(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"user": [1], "item": [2]}), tmp_path / "log.parquet")
    with pytest.raises(DataError, match="log.parquet: missing columns: behavior"):
        import_event_log(tmp_path / "log.parquet", ["buy"])


@pytest.mark.parametrize(("body", "header", "where", "problem"), [
    ("a,b,buy,1\n", "user,product,behavior,timestamp\n", "events.csv:1:", "missing columns: item"),
    ("a,b,buy,1\n,c,buy,2\n", HEADER, "events.csv:3:", "empty user id"),
    ("a,b,buy,1\n\na,,buy,2\n", HEADER, "events.csv:4:", "empty item id"),
    ("a,b,buy,1\na,c,buy,yesterday\n", HEADER, "events.csv:3:", "bad timestamp 'yesterday'"),
    ("a,b,buy,1\na,c,buy,nan\n", HEADER, "events.csv:3:", "bad timestamp 'nan'"),
    ("a,b,buy,2024-01-01\na,c,buy,17\n", HEADER, "events.csv:3:", "mixes numbers and ISO-8601"),
    ("a,b,buy,1\na,c\n", HEADER, "events.csv:3:", "expected 4 columns, found 2"),
    ("a,b,click,1\na,c,like,1\n", HEADER, "events.csv:2:", "no row has a known behavior (found: click, like"),
    ("a,b,view,1\n", HEADER, "events.csv:", "no rows for behavior(s): buy"),
    ("", HEADER, "events.csv:", "no data rows"),
])
def test_bad_logs_name_the_file_line_and_problem(tmp_path, body, header, where, problem):
    with pytest.raises(DataError) as info:
        import_event_log(write_log(tmp_path, body, header=header), ["view", "buy"])
    assert where in str(info.value) and problem in str(info.value)


def test_quoted_multiline_field_keeps_line_numbers_right(tmp_path):
    body = 'a,"long\nname",buy,1\nb,c,buy,2\n,d,buy,3\n'
    with pytest.raises(DataError, match=r"events.csv:5: empty user id"):
        import_event_log(write_log(tmp_path, body), ["buy"])


def test_target_must_be_a_listed_behavior(tmp_path):
    with pytest.raises(DataError, match="target 'buy' is not one of the behaviors"):
        import_event_log(write_log(tmp_path, LOG), ["view", "cart"], target="buy")


def test_truncated_gzip_log(tmp_path):
    body = "".join(f"u{k},i{k * 7919 % 10007},buy,{k}\n" for k in range(5000))
    path = write_log(tmp_path, body, name="events.csv.gz")
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(DataError, match="events.csv.gz: truncated or corrupt gzip"):
        import_event_log(path, ["buy"])


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.csv: file not found"):
        import_event_log(tmp_path / "nope.csv", ["buy"])


def test_latest_per_user_needs_min_count_and_breaks_ties_by_position():
    users = np.array([0, 0, 1, 2, 2, 2])
    times = np.array([5, 5, 9, 1, 3, 2])
    chosen = latest_per_user(users, (np.arange(6), times))
    assert np.flatnonzero(chosen).tolist() == [1, 4]
