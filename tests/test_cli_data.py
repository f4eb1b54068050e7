"""``mbrec data info | import | validate`` through their argparse handlers."""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import pytest

from mbrec.cli.data import add_parser
from mbrec.data.directory import load_directory, save_directory
from mbrec.data.synthetic import make_synthetic


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="mbrec")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.handler(args)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


def test_info_prints_the_counts(tmp_path, capsys):
    ds = make_synthetic(n_users=50, n_items=40, mean_views=10)
    save_directory(ds, tmp_path / "mini")
    assert run_cli("data", "info", str(tmp_path / "mini")) == 0
    out = capsys.readouterr().out
    assert "users     50" in out and "items     40" in out
    for behavior in ds.behaviors:
        assert f"{ds.train[behavior].nnz:,}" in out
    test_row = next(line for line in out.splitlines() if line.startswith("test "))
    assert test_row.split()[1:] == [f"{ds.test.nnz:,}", f"{len(ds.eval_users()):,}"]


def test_info_by_name_with_data_root_and_synthetic(tmp_path, capsys):
    save_directory(make_synthetic(n_users=30, n_items=20, mean_views=8), tmp_path / "mini")
    assert run_cli("data", "info", "mini", "--data-root", str(tmp_path)) == 0
    assert "dataset   mini" in capsys.readouterr().out
    assert run_cli("data", "info", "synthetic:tiny") == 0
    assert "users     60" in capsys.readouterr().out


def test_info_on_bad_data_prints_one_line_and_exits_2(tmp_path, capsys):
    save_directory(make_synthetic(n_users=30, n_items=20, mean_views=8), tmp_path / "mini")
    (tmp_path / "mini" / "cart.txt.gz").write_bytes(gzip.compress(b"0 1\n0 banana\n"))
    assert run_cli("data", "info", str(tmp_path / "mini")) == 2
    line = one_error_line(capsys)
    assert "cart.txt.gz:2: not an integer id: 'banana'" in line


def test_unknown_dataset_exits_2_with_a_hint(tmp_path, capsys):
    assert run_cli("data", "info", "no-such-set", "--data-root", str(tmp_path)) == 2
    line = one_error_line(capsys)
    assert "dataset not found" in line and "MBREC_DATA_ROOT" in line


def test_validate_ok_and_with_problems(tmp_path, capsys):
    save_directory(make_synthetic(n_users=30, n_items=20, mean_views=8), tmp_path / "mini")
    assert run_cli("data", "validate", str(tmp_path / "mini")) == 0
    assert "ok" in capsys.readouterr().out
    meta_path = tmp_path / "mini" / "meta.json"
    meta = json.loads(meta_path.read_text())
    (tmp_path / "mini" / "test.txt.gz").write_bytes(gzip.compress(b""))
    meta.pop("test_count")
    meta_path.write_text(json.dumps(meta))
    assert run_cli("data", "validate", str(tmp_path / "mini")) == 1
    assert "test: no held-out pairs" in capsys.readouterr().out


def write_log(path: Path) -> Path:
    rows = ["user,item,behavior,timestamp"]
    for u in range(20):
        for k in range(6):
            item = (u * 3 + k) % 15
            rows.append(f"user{u},sku{item},view,{k}")
            if k % 2 == 0:
                rows.append(f"user{u},sku{item},buy,{k + 10}")
    rows.append("user0,sku1,wishlist,3")
    path.write_text("\n".join(rows) + "\n")
    return path


def test_import_writes_a_loadable_dataset_and_prints_a_summary(tmp_path, capsys):
    log = write_log(tmp_path / "log.csv")
    code = run_cli("data", "import", str(log), "--behaviors", "view,buy", "--out", str(tmp_path / "out"),
                   "--valid", "--name", "shop")
    assert code == 0
    out = capsys.readouterr().out
    assert "dropped 1 rows of other behaviors (wishlist: 1)" in out and "wrote" in out
    ds = load_directory(tmp_path / "out")
    assert ds.behaviors == ["view", "buy"] and ds.test.nnz == 20 and ds.valid.nnz == 20
    assert ds.user_ids[0] == "user0" and len(ds.item_ids) == 15
    assert "users     20" in out


def test_import_without_out_only_prints(tmp_path, capsys):
    log = write_log(tmp_path / "log.csv")
    assert run_cli("data", "import", str(log), "--behaviors", "view,buy") == 0
    assert "not saved" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.csv"]


@pytest.mark.parametrize(("body", "problem"), [
    ("user,item,behavior\nu,i,buy\nu,,buy\n", "log.csv:3: empty item id"),
    ("user,sku,behavior\nu,i,buy\n", "log.csv:1: missing columns: item"),
])
def test_import_errors_exit_2_with_one_line(tmp_path, capsys, body, problem):
    (tmp_path / "log.csv").write_text(body)
    assert run_cli("data", "import", str(tmp_path / "log.csv"), "--behaviors", "buy") == 2
    assert problem in one_error_line(capsys)


def test_import_missing_file_and_bad_target(tmp_path, capsys):
    assert run_cli("data", "import", str(tmp_path / "none.csv"), "--behaviors", "buy") == 2
    assert "none.csv: file not found" in one_error_line(capsys)
    log = write_log(tmp_path / "log.csv")
    assert run_cli("data", "import", str(log), "--behaviors", "view,buy", "--target", "cart") == 2
    assert "target 'cart' is not one of the behaviors" in one_error_line(capsys)


def test_import_refuses_to_overwrite_a_non_dataset_folder(tmp_path, capsys):
    log = write_log(tmp_path / "log.csv")
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "x.txt").write_text("x")
    out = str(tmp_path / "keep")
    assert run_cli("data", "import", str(log), "--behaviors", "view,buy", "--out", out) == 2
    assert "not a dataset directory" in one_error_line(capsys)
