"""GHCF/MBSSL adjacency-list folders."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from mbrec.data.errors import DataError
from mbrec.data.ghcf import load_adjacency_lists

TRAIN = "0 1 2\n1 3\n2 0 4\n"
TEST = "0 3\n1 4\n2 1\n"
PV = "0 1 2 3\n2 0 1 4 5\n"      # user 1 has no line
CART = "0 2 3\n1 3 4\n"


def write_folder(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


def pair_set(matrix) -> set[tuple[int, int]]:
    coo = matrix.tocoo()
    return set(zip(coo.row.tolist(), coo.col.tolist(), strict=True))


def test_default_mapping_sizes_and_pairs(tmp_path):
    folder = write_folder(tmp_path / "Beibei", {"train.txt": TRAIN, "test.txt": TEST, "pv.txt": PV,
                                                "cart.txt": CART})
    ds = load_adjacency_lists(folder)
    assert ds.name == "Beibei" and ds.behaviors == ["view", "cart", "buy"]
    assert (ds.n_users, ds.n_items) == (3, 6)       # item 5 appears only in pv.txt
    assert pair_set(ds.train["buy"]) == {(0, 1), (0, 2), (1, 3), (2, 0), (2, 4)}
    assert pair_set(ds.test) == {(0, 3), (1, 4), (2, 1)}
    assert pair_set(ds.train["view"]) == {(0, 1), (0, 2), (0, 3), (2, 0), (2, 1), (2, 4), (2, 5)}
    assert ds.train["cart"].nnz == 4 and ds.meta["files"]["view"] == "pv.txt"


def test_explicit_mapping_fav_file_and_gzip(tmp_path):
    folder = write_folder(tmp_path / "t", {"test.txt": TEST, "fav.txt": "0 4\n"})
    (folder / "train.txt.gz").write_bytes(gzip.compress(TRAIN.encode()))
    assert load_adjacency_lists(folder).behaviors == ["collect", "buy"]
    ds = load_adjacency_lists(folder, behaviors={"fav": "fav.txt", "purchase": "train.txt.gz"}, name="x")
    assert ds.behaviors == ["fav", "purchase"] and ds.target == "purchase" and ds.name == "x"


def test_user_line_without_items_counts_for_the_size(tmp_path):
    folder = write_folder(tmp_path / "t", {"train.txt": TRAIN + "7\n", "test.txt": TEST})
    assert load_adjacency_lists(folder).n_users == 8


@pytest.mark.parametrize(("files", "where", "problem"), [
    ({"train.txt": "0 1 2\n1 x\n"}, "train.txt:2:", "not an integer id: 'x'"),
    ({"cart.txt": "0 1\n\n1 2 -3\n"}, "cart.txt:3:", "negative id: '-3'"),
    ({"test.txt": "0 3\n0 2\n"}, "test.txt:2:", "test pair (0, 2) is also in the target training set"),
    ({"test.txt": "0 3.5\n"}, "test.txt:1:", "not an integer id: '3.5'"),
])
def test_bad_tokens_name_file_and_line(tmp_path, files, where, problem):
    folder = write_folder(tmp_path / "t", {"train.txt": TRAIN, "test.txt": TEST, **files})
    with pytest.raises(DataError) as info:
        load_adjacency_lists(folder)
    assert where in str(info.value) and problem in str(info.value)


def test_missing_files(tmp_path):
    folder = write_folder(tmp_path / "t", {"train.txt": TRAIN})
    with pytest.raises(DataError, match="test.txt: file not found"):
        load_adjacency_lists(folder)
    with pytest.raises(DataError, match="pv.txt: file not found"):
        load_adjacency_lists(folder, behaviors={"view": "pv.txt", "buy": "train.txt"})


def test_registry_recognises_a_list_folder(tmp_path):
    from mbrec.data.registry import load_dataset

    folder = write_folder(tmp_path / "Lists", {"train.txt": TRAIN, "test.txt": TEST, "cart.txt": CART})
    ds = load_dataset(str(folder))
    assert ds.behaviors == ["cart", "buy"] and ds.name == "Lists"
