"""Benchmark summaries of hand-written result records: protocols, relative gain and paired t-test, imported
rows, the comparison with the papers' numbers, the README table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bench_helpers import REPO
from scipy import stats

from mbrec.bench.summary import (
    build_summary,
    protocol_metrics,
    readme_table,
    replace_readme_section,
    write_summary,
)
from mbrec.config import ConfigError


def hand_record(label: str, seed: int, history: list[dict], dataset: str = "taobao") -> dict:
    return {"model": label.lower(), "dataset": dataset, "device": "cpu: test", "metrics": history[-1]["test"],
            "config": {"name": f"{label}-{dataset}-s{seed}", "dataset": dataset,
                       "train": {"seed": seed, "select_metric": "NDCG@10"}},
            "history": history}


def write_hand_results(folder: Path, values: dict[str, list[float]], meta: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for label, per_seed in values.items():
        for seed, v in enumerate(per_seed, 1):
            # epoch 2 is best on test, epoch 1 best on valid; NDCG@10 selects, HR@10 is reported
            history = [{"epoch": 1, "test": {"HR@10": v - 0.1, "NDCG@10": 0.2}, "valid": {"NDCG@10": 0.9}},
                       {"epoch": 2, "test": {"HR@10": v, "NDCG@10": 0.3}, "valid": {"NDCG@10": 0.1}}]
            record = hand_record(label, seed, history)
            (folder / f"{label}-taobao-s{seed}.json").write_text(json.dumps(record))
    (folder / "grid.json").write_text(json.dumps(meta))


def test_protocols_relative_gain_and_paired_ttest(tmp_path):
    values = {"MF": [0.30, 0.32, 0.31], "GHCF": [0.40, 0.43, 0.41], "COPF": [0.45, 0.44, 0.47],
              "MBSSL": [0.42, 0.40, 0.41]}
    write_hand_results(tmp_path, values, {"name": "hand", "labels": ["MF", "GHCF", "MBSSL", "COPF"],
                                          "baseline_labels": ["MF", "GHCF"],
                                          "proposed_labels": ["COPF", "MBSSL"]})
    rec = json.loads((tmp_path / "COPF-taobao-s1.json").read_text())
    assert protocol_metrics(rec, "paper") == {"HR@10": 0.45, "NDCG@10": 0.3}
    assert protocol_metrics(rec, "validation") == {"HR@10": pytest.approx(0.35), "NDCG@10": 0.2}
    summary = build_summary(tmp_path)
    paper = summary["datasets"]["taobao"]["protocols"]["paper"]
    assert [r["label"] for r in paper["rows"]] == ["MF", "GHCF", "MBSSL", "COPF"]
    hr = paper["comparison"]["HR@10"]
    assert (hr["proposed"], hr["baseline"], hr["common_seeds"]) == ("COPF", "GHCF", [1, 2, 3])
    assert hr["relative_gain"] == pytest.approx((np.mean([0.45, 0.44, 0.47]) - np.mean([0.40, 0.43, 0.41]))
                                                / np.mean([0.40, 0.43, 0.41]))
    assert hr["p_value"] == pytest.approx(stats.ttest_rel([0.45, 0.44, 0.47], [0.40, 0.43, 0.41]).pvalue,
                                          rel=1e-12)
    # NDCG@10 is identical for every run: no gain, and the t-test is undefined (equal differences)
    assert paper["comparison"]["NDCG@10"]["relative_gain"] == 0.0
    assert paper["comparison"]["NDCG@10"]["p_value"] is None
    validation = summary["datasets"]["taobao"]["protocols"]["validation"]
    assert validation["rows"][3]["metrics"]["HR@10"]["mean"] == pytest.approx(np.mean(values["COPF"]) - 0.1)

    # one common seed only: the p-value is n/a
    (tmp_path / "GHCF-taobao-s2.json").unlink()
    (tmp_path / "GHCF-taobao-s3.json").unlink()
    (tmp_path / "MF-taobao-s1.json").unlink()
    one = build_summary(tmp_path)["datasets"]["taobao"]["protocols"]["paper"]["comparison"]["HR@10"]
    assert one["baseline"] == "GHCF" and one["common_seeds"] == [1] and one["p_value"] is None
    write_summary(tmp_path)
    text = (tmp_path / "summary.md").read_text()
    assert "| p-value | n/a | n/a |" in text
    assert "| GHCF | 1 | 0.4000 | 0.3000 |" in text  # a single seed shows the mean only


def test_imported_rows_join_the_summary_and_its_comparison(tmp_path):
    own, other = tmp_path / "own", tmp_path / "other"
    write_hand_results(other, {"COPF": [0.45, 0.44, 0.47], "COPF-old": [0.9, 0.9, 0.9]}, {"name": "other"})
    write_hand_results(own, {"MF": [0.30, 0.32, 0.31], "GHCF": [0.40, 0.43, 0.41]},
                       {"name": "own", "labels": ["MF", "GHCF", "COPF"], "imports": {"COPF": str(other)},
                        "baseline_labels": ["MF", "GHCF"], "proposed_labels": ["COPF"]})
    summary = build_summary(own)
    paper = summary["datasets"]["taobao"]["protocols"]["paper"]
    assert [r["label"] for r in paper["rows"]] == ["MF", "GHCF", "COPF"]  # COPF-old stays in its folder
    assert summary["runs"] == 9
    hr = paper["comparison"]["HR@10"]
    assert (hr["proposed"], hr["baseline"], hr["common_seeds"]) == ("COPF", "GHCF", [1, 2, 3])
    assert hr["p_value"] == pytest.approx(stats.ttest_rel([0.45, 0.44, 0.47], [0.40, 0.43, 0.41]).pvalue,
                                          rel=1e-12)
    write_summary(own)
    assert f"- row COPF: records in `{other}` (trained by another grid)" in (own / "summary.md").read_text()
    assert f"COPF's in `{other}`" in readme_table(own)
    meta = json.loads((own / "grid.json").read_text())
    meta["imports"] = {"COPF": str(own)}  # a folder without the row's records
    (own / "grid.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match=r"grid\.json: imports: no records of 'COPF' in .*own"):
        build_summary(own)


def test_comparison_with_paper_numbers(tmp_path):
    from mbrec.bench.papers import load_paper_numbers

    write_hand_results(tmp_path / "res", {"MF-BPR": [0.30, 0.32, 0.31], "COPF": [0.45, 0.44, 0.47]},
                       {"name": "hand", "labels": ["MF-BPR", "COPF"]})
    for seed in (1, 2, 3):      # a metric that is not a table column (MBSSL Table 2 reports Recall@10)
        path = tmp_path / "res" / f"MF-BPR-taobao-s{seed}.json"
        record = json.loads(path.read_text())
        for entry in record["history"]:
            entry["test"]["Recall@10"] = entry["test"]["HR@10"]
        path.write_text(json.dumps(record))
    numbers = tmp_path / "papers.yaml"
    numbers.write_text("tolerance: 0.05\ntaobao:\n  mf_bpr: {source: T2, HR@10: 0.30, Recall@10: 0.32}\n"
                       "  COPF: {source: T2, HR@10: 0.50, NDCG@10: 0.3, note: released code differs}\n"
                       "beibei:\n  COPF: {source: T2, HR@10: 0.1}\n")
    papers = load_paper_numbers(numbers)
    summary = build_summary(tmp_path / "res", papers)
    rows = {(r["label"], r["metric"]): r for r in summary["papers"]["rows"]}
    assert set(rows) == {("MF-BPR", "HR@10"), ("MF-BPR", "Recall@10"), ("COPF", "HR@10"),
                         ("COPF", "NDCG@10")}                                           # label match ignores case/_
    assert rows[("MF-BPR", "Recall@10")]["gap"] == pytest.approx((0.31 - 0.32) / 0.32)
    mf = rows[("MF-BPR", "HR@10")]
    assert mf["gap"] == pytest.approx((0.31 - 0.30) / 0.30) and mf["within"]             # +3.3 % <= 5 %
    copf = rows[("COPF", "HR@10")]
    assert copf["gap"] == pytest.approx((np.mean([0.45, 0.44, 0.47]) - 0.5) / 0.5) and not copf["within"]
    assert rows[("COPF", "NDCG@10")]["gap"] == pytest.approx(0.0)  # the paper protocol picks epoch 2 (0.3)
    md, _ = write_summary(tmp_path / "res", papers)
    text = md.read_text()
    assert "| taobao | COPF | HR@10 | 3 | 0.4533 ± 0.0153 | 0.5000 | -9.3% | **no** | T2 |" in text
    assert "- taobao COPF: released code differs" in text
    assert "| taobao | COPF | HR@10 | 3 |" in readme_table(tmp_path / "res", papers=papers)

    bad = tmp_path / "bad.yaml"
    bad.write_text("taobao:\n  COPF: {HR@10: 0.5}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: taobao.COPF: needs a 'source'"):
        load_paper_numbers(bad)
    bad.write_text("taobao:\n  COPF: {source: x, HR@10: high}\n")
    with pytest.raises(ConfigError, match="metric values must be numbers"):
        load_paper_numbers(bad)
    shipped = load_paper_numbers(REPO / "benchmarks" / "paper_numbers.yaml")
    assert shipped.find("taobao", "COPF").metrics == {"HR@10": 0.1552, "NDCG@10": 0.0838}
    assert shipped.find("beibei", "MBSSL").metrics["Recall@10"] == 0.2229


def test_readme_table_replaces_only_the_marked_section(tmp_path):
    results = tmp_path / "results"
    write_hand_results(results, {"MF": [0.3, 0.5], "COPF": [0.4, 0.6]},
                       {"name": "hand", "labels": ["MF", "COPF"], "baseline_labels": ["MF"],
                        "proposed_labels": ["COPF"]})
    comparison = build_summary(results)["datasets"]["taobao"]["protocols"]["paper"]["comparison"]
    assert comparison["HR@10"]["p_value"] is None  # differences 0.1 and 0.1: no spread, no t statistic
    write_hand_results(results, {"MF": [0.3, 0.5], "COPF": [0.4, 0.6], "PKEF": [0.7]},
                       {"name": "hand", "labels": ["MF", "COPF", "PKEF"], "baseline_labels": ["MF", "PKEF"],
                        "proposed_labels": ["COPF"]})
    table = readme_table(results)
    assert table.splitlines()[0] == "| model | taobao seeds | taobao HR@10 | taobao NDCG@10 |"
    assert f"| COPF | 2 | 0.5000 ± {np.std([0.4, 0.6], ddof=1):.4f} | 0.3000 ± 0.0000 |" in table
    assert "| PKEF | 1 | 0.7000 | 0.3000 |" in table  # a single seed: the value alone, and its count says so
    readme = tmp_path / "README.md"
    readme.write_text("# mbrec\nintro\n<!-- results:start -->\nold table\n<!-- results:end -->\nafter\n")
    replace_readme_section(readme, table)
    text = readme.read_text()
    assert text.startswith("# mbrec\nintro\n<!-- results:start -->\n| model |")
    assert text.endswith("<!-- results:end -->\nafter\n") and "old table" not in text
    readme.write_text("no markers\n")
    with pytest.raises(ConfigError, match="needs the markers"):
        replace_readme_section(readme, table)
