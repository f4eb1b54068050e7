"""The directory format: round trips, atomic writes, and one DataError per kind of bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from mbrec.data import directory
from mbrec.data.directory import load_directory, save_directory
from mbrec.data.errors import DataError
from mbrec.data.registry import default_data_root
from mbrec.data.synthetic import make_synthetic

GOOD_META = {"n_users": 5, "n_items": 6, "behaviors": ["view", "buy"], "target": "buy"}
GOOD_FILES = {
    "view.txt.gz": "0 0\n0 1\n1 2\n2 3\n3 4\n4 5\n",
    "buy.txt.gz": "0 1\n1 2\n2 3\n",
    "test.txt.gz": "0 5\n1 4\n",
}


def write_dataset(folder: Path, files: dict[str, str | bytes | None] | None = None,
                  meta: dict | None = None) -> Path:
    """A small dataset directory; ``files`` entries replace (or, with value None, remove) the good ones."""
    folder.mkdir(parents=True, exist_ok=True)
    contents = {**GOOD_FILES, **(files or {})}
    for name, text in contents.items():
        if text is None:
            continue
        payload = text if isinstance(text, bytes) else text.encode()
        (folder / name).write_bytes(gzip.compress(payload) if name.endswith(".gz") else payload)
    (folder / "meta.json").write_text(json.dumps(GOOD_META if meta is None else meta))
    return folder


def same_matrix(a, b) -> bool:
    return a.shape == b.shape and (a != b).nnz == 0


def error_of(folder: Path) -> DataError:
    with pytest.raises(DataError) as info:
        load_directory(folder)
    return info.value


# ------------------------------------------------------------------------------------------ round trips
def test_round_trip_keeps_matrices_ids_and_splits(tmp_path):
    ds = make_synthetic(n_users=40, n_items=30, mean_views=10, seed=3, valid=True)
    ds.user_ids = np.array([f"user-{k}" for k in range(ds.n_users)])
    ds.item_ids = np.array([f"ítem {k}" for k in range(ds.n_items)])
    save_directory(ds, tmp_path / "syn")
    back = load_directory(tmp_path / "syn")
    assert back.behaviors == ds.behaviors and (back.n_users, back.n_items) == (ds.n_users, ds.n_items)
    for behavior in ds.behaviors:
        assert same_matrix(back.train[behavior], ds.train[behavior])
    assert same_matrix(back.test, ds.test) and same_matrix(back.valid, ds.valid)
    assert list(back.user_ids) == list(ds.user_ids) and list(back.item_ids) == list(ds.item_ids)
    assert back.fingerprint() == ds.fingerprint()
    meta = json.loads((tmp_path / "syn" / "meta.json").read_text())
    assert meta["counts"] == {b: ds.train[b].nnz for b in ds.behaviors}
    assert meta["test_count"] == ds.test.nnz and meta["valid_count"] == ds.valid.nnz


def test_files_are_sorted_pairs_and_ids_absent_without_originals(tmp_path):
    ds = make_synthetic(n_users=20, n_items=15, mean_views=6, seed=1)
    save_directory(ds, tmp_path / "d")
    names = sorted(p.name for p in (tmp_path / "d").iterdir())
    assert names == ["buy.txt.gz", "cart.txt.gz", "meta.json", "test.txt.gz", "view.txt.gz"]
    pairs = np.loadtxt(gzip.open(tmp_path / "d" / "view.txt.gz"), dtype=np.int64)
    assert len(pairs) == ds.train["view"].nnz
    assert np.all(np.diff(pairs[:, 0] * ds.n_items + pairs[:, 1]) > 0)
    assert load_directory(tmp_path / "d").user_ids is None


def test_uncompressed_txt_files_are_accepted(tmp_path):
    files = {name: None for name in GOOD_FILES} | {n.removesuffix(".gz"): t for n, t in GOOD_FILES.items()}
    ds = load_directory(write_dataset(tmp_path / "plain", files), name="plain")
    assert ds.name == "plain" and ds.train["view"].nnz == 6 and ds.test.nnz == 2


def test_save_replaces_an_existing_dataset_and_leaves_no_temporary_files(tmp_path):
    save_directory(make_synthetic(n_users=20, n_items=15, mean_views=6, seed=1), tmp_path / "d")
    second = make_synthetic(n_users=25, n_items=15, mean_views=6, seed=2)
    save_directory(second, tmp_path / "d")
    assert load_directory(tmp_path / "d").n_users == 25
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_save_refuses_to_replace_a_folder_that_is_not_a_dataset(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        save_directory(make_synthetic(n_users=20, n_items=15, mean_views=6), tmp_path / "notes")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


def test_failed_save_keeps_the_old_dataset_intact(tmp_path, monkeypatch):
    old = make_synthetic(n_users=20, n_items=15, mean_views=6, seed=1)
    save_directory(old, tmp_path / "d")
    written = []

    def failing_write(path, payload):
        if written:
            raise OSError("disk full")
        written.append(path)
        return "0" * 64

    monkeypatch.setattr(directory, "_write_gzip", failing_write)
    with pytest.raises(OSError, match="disk full"):
        save_directory(make_synthetic(n_users=30, n_items=15, mean_views=6, seed=2), tmp_path / "d")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    assert load_directory(tmp_path / "d").fingerprint() == old.fingerprint()


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(("files", "where", "problem"), [
    ({"buy.txt.gz": "0 1\n1 2\n2 x\n"}, "buy.txt.gz:3:", "not an integer id: 'x'"),
    ({"buy.txt.gz": "0 1\n1 2 3\n"}, "buy.txt.gz:2:", "expected 2 columns"),
    ({"view.txt.gz": "0 1\n1.5 2\n"}, "view.txt.gz:2:", "not an integer id: '1.5'"),
    ({"view.txt.gz": "0 1\n1 2\n2 3\n9 0\n"}, "view.txt.gz:4:",
     "user id 9 out of range (must be < n_users = 5)"),
    ({"view.txt.gz": "0 1\n1 -2\n"}, "view.txt.gz:2:", "item id -2 out of range (negative)"),
    ({"view.txt.gz": "\n0 1\n\n1 6\n"}, "view.txt.gz:4:", "item id 6 out of range"),
    ({"test.txt.gz": "0 5\n2 3\n"}, "test.txt.gz:2:", "test pair (2, 3) is also in the target training set"),
    ({"valid.txt.gz": "3 0\n0 5\n"}, "valid.txt.gz:2:", "valid pair (0, 5) is also in the test set"),
    ({"buy.txt.gz": ""}, "buy.txt.gz:", "behavior 'buy' has no pairs"),
    ({"view.txt.gz": None}, "view.txt.gz:", "behavior file missing for 'view'"),
    ({"test.txt.gz": None}, "test.txt.gz:", "test file missing"),
])
def test_bad_pair_files_name_the_file_line_and_problem(tmp_path, files, where, problem):
    err = error_of(write_dataset(tmp_path / "bad", files))
    message = str(err)
    assert where in message and problem in message
    assert "\n" not in message


def test_truncated_gzip_is_a_data_error_on_that_file(tmp_path):
    folder = write_dataset(tmp_path / "bad")
    blob = gzip.compress(("0 1\n" * 2000).encode())
    (folder / "view.txt.gz").write_bytes(blob[: len(blob) // 2])
    err = error_of(folder)
    assert err.path.endswith("view.txt.gz") and "truncated or corrupt gzip" in str(err)


def test_not_gzip_at_all_is_a_data_error(tmp_path):
    folder = write_dataset(tmp_path / "bad")
    (folder / "buy.txt.gz").write_bytes(b"0 1\n")
    assert "buy.txt.gz: truncated or corrupt gzip" in str(error_of(folder))


@pytest.mark.parametrize(("meta", "problem"), [
    ({"n_users": 5, "behaviors": ["view", "buy"], "target": "buy"}, "missing keys: n_items"),
    ({**GOOD_META, "target": "cart"}, "target 'cart' is not listed in behaviors"),
    ({**GOOD_META, "behaviors": ["buy", "view"]}, "target 'buy' must be the last behavior"),
    ({**GOOD_META, "n_users": -1}, "n_users must be a positive integer"),
    ({**GOOD_META, "counts": {"view": 7}}, "counts.view is 7 in meta.json but view.txt.gz has 6"),
])
def test_bad_meta_json(tmp_path, meta, problem):
    err = error_of(write_dataset(tmp_path / "bad", meta=meta))
    assert err.path.endswith("meta.json") and problem in str(err)


def test_missing_meta_and_invalid_json(tmp_path):
    folder = write_dataset(tmp_path / "bad")
    (folder / "meta.json").write_text('{"n_users": 5,\n "n_items": }')
    assert "meta.json:2: invalid JSON" in str(error_of(folder))
    (folder / "meta.json").unlink()
    assert "meta.json missing" in str(error_of(folder))


def test_id_file_with_wrong_length(tmp_path):
    folder = write_dataset(tmp_path / "ids", {"user_ids.txt.gz": "a\nb\nc\n"})
    assert "user_ids.txt.gz: has 3 ids, expected 5" in str(error_of(folder))


# ------------------------------------------------------------------------------------------ real data
@pytest.mark.slow
def test_taobao_counts_match_meta_json():
    root = default_data_root()
    if root is None or not (root / "taobao" / "meta.json").is_file():
        pytest.skip("shared/datasets/taobao is not available")
    ds = load_directory(root / "taobao")
    assert (ds.n_users, ds.n_items) == (15_449, 11_953)
    assert ds.behaviors == ["view", "cart", "buy"]
    assert {b: ds.train[b].nnz for b in ds.behaviors} == {"view": 873_954, "cart": 195_476, "buy": 92_180}
    assert ds.test.nnz == 15_449 and len(ds.eval_users()) == 15_449
    assert ds.summary()["test_pairs_in_behavior"] == {"view": 12_650, "cart": 3_381}


@pytest.mark.slow
def test_beibei_counts():
    root = default_data_root()
    if root is None or not (root / "beibei" / "meta.json").is_file():
        pytest.skip("shared/datasets/beibei is not available")
    ds = load_directory(root / "beibei")
    assert sum(m.nnz for m in ds.matrices()) + ds.test.nnz == 3_359_784
