"""validate_dataset problems, info_lines, and the registry (specs, data root, validation split)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from mbrec.data.dataset import MultiBehaviorDataset, binary_csr
from mbrec.data.directory import save_directory
from mbrec.data.errors import DataError
from mbrec.data.registry import (
    DATA_ROOT_ENV,
    DatasetNotFound,
    add_validation_split,
    default_data_root,
    load_dataset,
)
from mbrec.data.synthetic import make_synthetic
from mbrec.data.validate import info_lines, is_warning, validate_dataset


def tiny_dataset(**changes) -> MultiBehaviorDataset:
    shape = (4, 5)
    fields = {
        "name": "t", "n_users": 4, "n_items": 5, "behaviors": ["view", "buy"],
        "train": {"view": binary_csr([0, 1, 2, 2], [0, 1, 2, 3], shape),
                  "buy": binary_csr([0, 1, 2], [1, 2, 3], shape)},
        "test": binary_csr([0, 1], [4, 0], shape),
    }
    fields.update(changes)
    return MultiBehaviorDataset(**fields)


def test_a_clean_dataset_has_only_the_idle_user_warning():
    problems = validate_dataset(tiny_dataset())
    assert problems == ["warning: 1 of 4 users have no training interaction"]
    assert all(is_warning(p) for p in problems)


def test_each_kind_of_problem_is_reported():
    shape = (4, 5)
    view = binary_csr([0, 1, 2, 3], [0, 1, 2, 3], shape)
    overlapping = tiny_dataset(train={"view": view, "buy": binary_csr([0, 2], [4, 1], shape)},
                               valid=binary_csr([2, 3], [1, 3], shape))
    problems = validate_dataset(overlapping)
    assert "test: 1 pairs are also in the 'buy' training set" in problems
    assert "valid: 1 pairs are also in the 'buy' training set" in problems
    assert "valid: 0 pairs" not in " ".join(problems)
    assert "warning: 1 test users have no 'buy' training interaction" in problems

    non_binary = sp.csr_matrix(np.array([[2, 0, 0, 0, 0]] + [[0] * 5] * 3, dtype=np.float32))
    assert "stored values are not 1" in validate_dataset(tiny_dataset(train={"view": non_binary,
                                                                             "buy": view}))[0]
    empty = tiny_dataset(train={"view": sp.csr_matrix(shape, dtype=np.float32), "buy": view})
    assert "train['view']: no interactions" in validate_dataset(empty)
    no_test = tiny_dataset(test=sp.csr_matrix(shape, dtype=np.float32))
    assert "test: no held-out pairs" in validate_dataset(no_test)
    valid_in_test = tiny_dataset(valid=binary_csr([1], [0], shape))
    assert "valid: 1 pairs are also in the test set" in validate_dataset(valid_in_test)
    ds = tiny_dataset(user_ids=np.array(["a", "b"]))
    assert "user_ids: 2 ids for 4 users" in validate_dataset(ds)
    ds = tiny_dataset()
    ds.valid = sp.csr_matrix((3, 5), dtype=np.float32)
    assert validate_dataset(ds) == ["valid: shape (3, 5), expected (4, 5)"]


def test_info_lines_are_an_aligned_table_with_the_counts():
    ds = make_synthetic(n_users=50, n_items=40, mean_views=10, valid=True)
    lines = info_lines(ds)
    text = "\n".join(lines)
    assert f"users     {ds.n_users}" in text and f"items     {ds.n_items}" in text
    header = next(line for line in lines if line.startswith("behavior"))
    rows = [line for line in lines if line.split()[:1] in (["view"], ["cart"], ["buy"])]
    assert len(rows) == 3 and all(len(row) == len(header) for row in rows)
    assert f"{ds.train['view'].nnz:,}" in rows[0]
    inside_view = ds.summary()["test_pairs_in_behavior"]["view"]
    assert rows[0].endswith(f"{inside_view:,}")
    test_row = next(line for line in lines if line.startswith("test "))
    assert test_row.split()[1:] == [f"{ds.test.nnz:,}", f"{len(ds.eval_users()):,}"]
    assert any(line.startswith("valid ") for line in lines)


# ------------------------------------------------------------------------------------------ registry
def test_synthetic_specs():
    assert load_dataset("synthetic:tiny").n_users == 60
    assert load_dataset("synthetic", n_users=70, n_items=50, mean_views=10).n_users == 70
    reseeded = load_dataset("synthetic:tiny", seed=3)
    assert reseeded.fingerprint() != load_dataset("synthetic:tiny").fingerprint()
    with pytest.raises(DataError, match="unknown synthetic preset 'huge'"):
        load_dataset("synthetic:huge")


def test_names_and_paths_under_a_data_root(tmp_path, monkeypatch):
    ds = make_synthetic(n_users=30, n_items=20, mean_views=8)
    save_directory(ds, tmp_path / "root" / "mini")
    loaded = load_dataset("mini", data_root=tmp_path / "root")
    assert loaded.name == "mini" and loaded.fingerprint() == ds.fingerprint()
    assert load_dataset(str(tmp_path / "root" / "mini")).fingerprint() == ds.fingerprint()
    monkeypatch.setenv(DATA_ROOT_ENV, str(tmp_path / "root"))
    assert default_data_root() == tmp_path / "root"
    assert load_dataset("mini").n_users == 30
    with pytest.raises(DatasetNotFound) as info:
        load_dataset("missing")
    message = str(info.value)
    assert str(tmp_path / "root" / "missing") in message and DATA_ROOT_ENV in message
    assert "\n" not in message


def test_default_data_root_without_env(monkeypatch):
    monkeypatch.delenv(DATA_ROOT_ENV, raising=False)
    root = default_data_root()
    assert root is None or root.is_dir()


def test_add_validation_split_moves_one_target_item_per_user():
    ds = make_synthetic(n_users=80, n_items=50, mean_views=12)
    split = add_validation_split(ds, seed=4)
    eligible = np.diff(ds.target_train.indptr) >= 2
    assert np.array_equal(np.diff(split.valid.indptr), eligible.astype(int))
    assert (split.target_train + split.valid != ds.target_train).nnz == 0
    assert split.valid.multiply(split.target_train).nnz == 0
    assert (split.test != ds.test).nnz == 0 and (split.train["view"] != ds.train["view"]).nnz == 0
    assert add_validation_split(ds, seed=4).fingerprint() == split.fingerprint()
    assert add_validation_split(ds, seed=5).fingerprint() != split.fingerprint()
    assert add_validation_split(split, seed=9) is split
