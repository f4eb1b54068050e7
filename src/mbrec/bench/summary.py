r"""Benchmark summaries from the per-cell result records of a results folder.

For every record (``<label>-<dataset>-s<seed>.json``, written by :func:`mbrec.train.runner.run_training`)
and every protocol, one set of test metrics is selected from the record's ``history`` (one entry per
evaluation, with ``test`` and, when the run had a validation split, ``valid`` metrics), using the run's
``train.select_metric`` :math:`m`:

* ``paper`` — the test metrics of the evaluation with the best **test** value of :math:`m` (what the
  papers report);
* ``validation`` (validation-selected) — the test metrics of the evaluation with the best **valid** value
  of :math:`m`; only for records whose history has validation metrics.

Ties go to the later evaluation, as in the trainer. Per dataset, protocol, row (grid label) and metric
the table shows :math:`\bar x \pm s` over seeds, :math:`s` the sample standard deviation (``ddof=1``;
a single seed shows the mean only). With ``baseline_labels`` / ``proposed_labels`` from the grid's
``grid.json``, each metric also gets the relative gain :math:`(\bar x_P - \bar x_B) / \bar x_B` of the
best proposed row :math:`P` over the best baseline row :math:`B` (best = highest mean for that metric) and
the p-value of a paired t-test (``scipy.stats.ttest_rel``) over their common seeds (needs >= 2 seeds and
paired differences that are not all equal, else the t statistic is undefined and the table says n/a).
Rows named in the grid's ``imports`` are read from the results folder of the grid that trained them.
Records with ``groups`` add a per-group table and rows with ``noise_of`` a noise-robustness table
(:mod:`mbrec.bench.analysis`).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import numpy as np
from scipy import stats

from mbrec.bench.analysis import group_section, mean_std, noise_section, render_groups, render_noise
from mbrec.bench.grid import GRID_META_FILE, dataset_slug
from mbrec.bench.papers import PaperNumbers, compare_with_papers, render_comparison
from mbrec.config import ConfigError
from mbrec.train.checkpoint import atomic_write_bytes, atomic_write_json

PROTOCOLS = {
    "paper": "paper (test metrics of the best test evaluation)",
    "validation": "validation-selected (test metrics of the best validation evaluation)",
}
TABLE_METRICS = ("HR@10", "NDCG@10", "Recall@50", "NDCG@50")
SUMMARY_FILES = ("summary.json", GRID_META_FILE)
README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"
_RECORD_KEYS = {"model", "dataset", "config", "history", "metrics"}


# ------------------------------------------------------------------------------------ records
def load_records(results_dir: str | Path) -> list[dict]:
    """Every result record (a JSON object with model, dataset, config, history, metrics) in the folder."""
    folder = Path(results_dir)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such results folder")
    records = []
    for path in sorted(folder.glob("*.json")):
        if path.name in SUMMARY_FILES:
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: invalid JSON (line {e.lineno})") from None
        if isinstance(data, dict) and _RECORD_KEYS <= set(data):
            records.append(data)
    return records


def load_grid_meta(results_dir: str | Path) -> dict:
    path = Path(results_dir) / GRID_META_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def load_summary_records(results_dir: str | Path, meta: dict) -> list[dict]:
    """The folder's records plus, for each of its grid's ``imports`` (label -> results folder), that row's
    records in the other folder (:mod:`mbrec.bench.grid`)."""
    records = load_records(results_dir)
    for label, folder in meta.get("imports", {}).items():
        found = [r for r in load_records(folder) if record_label(r) == label]
        if not found:
            raise ConfigError(f"{Path(results_dir) / GRID_META_FILE}: imports: no records of {label!r} in {folder}")
        records += found
    return records


def record_seed(record: dict) -> int:
    return int(record["config"]["train"]["seed"])


def record_dataset(record: dict) -> str:
    """The record's dataset name without the ``-noise<p>`` suffix of a noise-robustness run
    (:func:`mbrec.eval.noise.inject_noise`), so noisy rows share the table of their clean rows."""
    ratio = float(record["config"].get("data", {}).get("noise_ratio", 0.0) or 0.0)
    return record["dataset"].removesuffix(f"-noise{ratio:g}") if ratio > 0 else record["dataset"]


def record_label(record: dict) -> str:
    """The grid label, from the run name ``<label>-<dataset>-s<seed>``; the model name otherwise."""
    cfg = record["config"]
    name = cfg.get("name") or ""
    suffix = f"-{dataset_slug(cfg['dataset'])}-s{record_seed(record)}"
    return name[: -len(suffix)] if name.endswith(suffix) and len(name) > len(suffix) else record["model"]


def select_metric_of(record: dict) -> str:
    return record["config"]["train"].get("select_metric", "HR@10")


def protocol_metrics(record: dict, protocol: str) -> dict[str, float] | None:
    """Test metrics the protocol selects from the record's history (None when it cannot select)."""
    split = {"paper": "test", "validation": "valid"}[protocol]
    metric = select_metric_of(record)
    best = None
    for entry in record["history"]:
        value = entry.get(split, {}).get(metric)
        if value is not None and (best is None or value >= best[split][metric]):
            best = entry
    return None if best is None else best["test"]


# ------------------------------------------------------------------------------------ statistics
def table_metrics(selected: list[dict[str, float]]) -> list[str]:
    """The standard table metrics present in the records; their own metrics when none is."""
    present = {k for m in selected for k in m}
    chosen = [m for m in TABLE_METRICS if m in present]
    return chosen or sorted(present)


def aggregate_rows(records: list[dict], protocol: str, labels: list[str]) -> tuple[list[dict], list[str]]:
    """Rows ``{label, model, seeds, select_metric, metrics: {m: {mean, std, values}}}`` in label order."""
    by_label: dict[str, list[tuple[int, dict, dict]]] = {}
    for record in records:
        chosen = protocol_metrics(record, protocol)
        if chosen is not None:
            by_label.setdefault(record_label(record), []).append((record_seed(record), record, chosen))
    order = [lab for lab in labels if lab in by_label] + sorted(set(by_label) - set(labels))
    metrics = table_metrics([c for runs in by_label.values() for _, _, c in runs])
    rows = []
    for label in order:
        runs = sorted(by_label[label], key=lambda r: r[0])
        rows.append({
            "label": label, "model": runs[0][1]["model"], "seeds": [s for s, _, _ in runs],
            "select_metric": sorted({select_metric_of(r) for _, r, _ in runs}),
            "metrics": {m: mean_std([c[m] for _, _, c in runs]) for m in metrics
                        if all(m in c for _, _, c in runs)},
            # the rest of the records' metrics (e.g. MBSSL Table 2's Recall@10), for the paper comparison
            "other_metrics": {m: mean_std([c[m] for _, _, c in runs])
                              for m in sorted(set.intersection(*(set(c) for _, _, c in runs)) - set(metrics))},
        })
    return rows, metrics


def compare_best(rows: list[dict], metrics: list[str], baseline_labels: list[str],
                 proposed_labels: list[str]) -> dict[str, dict] | None:
    """Per metric: the best proposed vs the best baseline row, relative gain and paired t-test p-value."""
    proposed = [r for r in rows if r["label"] in proposed_labels]
    baselines = [r for r in rows if r["label"] in baseline_labels]
    if not proposed or not baselines:
        return None
    out = {}
    for m in metrics:
        cand_p = [r for r in proposed if m in r["metrics"]]
        cand_b = [r for r in baselines if m in r["metrics"]]
        if not cand_p or not cand_b:
            continue
        p = max(cand_p, key=lambda r: r["metrics"][m]["mean"])
        b = max(cand_b, key=lambda r: r["metrics"][m]["mean"])
        p_mean, b_mean = p["metrics"][m]["mean"], b["metrics"][m]["mean"]
        p_by_seed = dict(zip(p["seeds"], p["metrics"][m]["values"], strict=True))
        b_by_seed = dict(zip(b["seeds"], b["metrics"][m]["values"], strict=True))
        common = sorted(set(p_by_seed) & set(b_by_seed))
        p_value = None
        diffs = np.array([p_by_seed[s] - b_by_seed[s] for s in common])
        if len(common) >= 2 and np.ptp(diffs) > 1e-12 * max(1.0, float(np.abs(diffs).max())):
            test = stats.ttest_rel([p_by_seed[s] for s in common], [b_by_seed[s] for s in common])
            p_value = None if math.isnan(test.pvalue) else float(test.pvalue)
        out[m] = {"proposed": p["label"], "baseline": b["label"], "proposed_mean": p_mean,
                  "baseline_mean": b_mean, "relative_gain": (p_mean - b_mean) / b_mean if b_mean else None,
                  "p_value": p_value, "common_seeds": common}
    return out


def build_summary(results_dir: str | Path, papers: PaperNumbers | None = None) -> dict:
    """The summary of a results folder as plain data (what ``summary.json`` holds); with ``papers``, also
    the comparison with the papers' numbers (:mod:`mbrec.bench.papers`)."""
    meta = load_grid_meta(results_dir)
    records = load_summary_records(results_dir, meta)
    if not records:
        raise ConfigError(f"{results_dir}: no result records")
    labels = meta.get("labels", [])
    datasets = {}
    for name in sorted({record_dataset(r) for r in records}, key=_dataset_order(meta, records)):
        subset = [r for r in records if record_dataset(r) == name]
        protocols = {}
        for protocol in PROTOCOLS:
            rows, metrics = aggregate_rows(subset, protocol, labels)
            if rows:
                protocols[protocol] = {
                    "metrics": metrics, "rows": rows,
                    "comparison": compare_best(rows, metrics, meta.get("baseline_labels", []),
                                               meta.get("proposed_labels", [])),
                }
        datasets[name] = {"seeds": sorted({record_seed(r) for r in subset}), "protocols": protocols,
                          "groups": group_section(subset, labels, record_label, record_seed),
                          "noise": noise_section(protocols["paper"]["rows"], subset, meta.get("noise_of", {}),
                                                 record_label) if "paper" in protocols else []}
    summary = {
        "name": meta.get("name", Path(results_dir).name),
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "runs": len(records),
        "seeds": sorted({record_seed(r) for r in records}),
        "machines": sorted({r.get("device", "unknown") for r in records}),
        "std": "sample standard deviation over seeds (ddof=1)",
        "baseline_labels": meta.get("baseline_labels", []),
        "proposed_labels": meta.get("proposed_labels", []),
        "imports": meta.get("imports", {}),
        "datasets": datasets,
    }
    if papers is not None:
        summary["papers"] = {"tolerance": papers.tolerance, "rows": compare_with_papers(summary, papers)}
    return summary


def _dataset_order(meta: dict, records: list[dict]):
    """Datasets in the grid's order (by the spec each record was run on), the others after, by name."""
    specs = meta.get("datasets", [])
    first_spec = {}
    for r in records:
        spec = r["config"]["dataset"]
        first_spec.setdefault(record_dataset(r), specs.index(spec) if spec in specs else len(specs))
    return lambda name: (first_spec[name], name)


# ------------------------------------------------------------------------------------ rendering
def format_stat(stat: dict) -> str:
    """``mean ± std`` with 4 decimals (the mean alone for a single seed)."""
    if stat["std"] is None:
        return f"{stat['mean']:.4f}"
    return f"{stat['mean']:.4f} ± {stat['std']:.4f}"


def _format_gain(gain: float | None) -> str:
    return "n/a" if gain is None else f"{gain * 100:+.2f}%"


def _format_p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.3g}"


def _markdown_table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in body]


def render_protocol(section: dict) -> list[str]:
    metrics, rows = section["metrics"], section["rows"]
    uniform = len({tuple(r["select_metric"]) for r in rows}) == 1
    header = ["model", "seeds", *([] if uniform else ["selected by"]), *metrics]
    body = [[r["label"], str(len(r["seeds"])), *([] if uniform else [", ".join(r["select_metric"])]),
             *(format_stat(r["metrics"][m]) if m in r["metrics"] else "–" for m in metrics)] for r in rows]
    lines = []
    if uniform:
        lines.append(f"Selection metric: {', '.join(rows[0]['select_metric'])}.")
        lines.append("")
    lines += _markdown_table(header, body)
    comparison = section.get("comparison")
    if comparison:
        shown = [m for m in metrics if m in comparison]
        lines += ["", "Best proposed model vs best baseline (paired t-test over common seeds):", ""]
        lines += _markdown_table(["", *shown], [
            ["proposed", *(comparison[m]["proposed"] for m in shown)],
            ["baseline", *(comparison[m]["baseline"] for m in shown)],
            ["relative gain", *(_format_gain(comparison[m]["relative_gain"]) for m in shown)],
            ["p-value", *(_format_p(comparison[m]["p_value"]) for m in shown)],
        ])
    return lines


def render_markdown(summary: dict) -> str:
    lines = [
        f"# Benchmark results: {summary['name']}", "",
        f"- generated: {summary['generated_at']} from {summary['runs']} runs",
        f"- protocols: {'; '.join(PROTOCOLS.values())}",
        f"- seeds: {', '.join(map(str, summary['seeds']))}; values are mean ± {summary['std']}",
        f"- machine: {'; '.join(summary['machines'])}",
    ]
    lines += [f"- row {label}: records in `{folder}` (trained by another grid)"
              for label, folder in summary.get("imports", {}).items()]
    for name, ds in summary["datasets"].items():
        lines += ["", f"## {name}", "", f"Seeds: {', '.join(map(str, ds['seeds']))}."]
        for protocol, title in PROTOCOLS.items():
            lines += ["", f"### Protocol: {title}", ""]
            if protocol in ds["protocols"]:
                lines += render_protocol(ds["protocols"][protocol])
            else:
                lines.append("Not available: the runs have no validation metrics (data.validation: holdout).")
        if ds.get("groups"):
            lines += ["", "### Metrics by user group", "", *render_groups(ds["groups"], format_stat)]
        if ds.get("noise"):
            lines += ["", "### Noise robustness", "", *render_noise(ds["noise"])]
    if summary.get("papers", {}).get("rows"):
        lines += ["", "## Against the papers", "", *render_comparison(summary["papers"]["rows"],
                                                                    summary["papers"]["tolerance"])]
    return "\n".join(lines) + "\n"


def write_summary(results_dir: str | Path, papers: PaperNumbers | None = None) -> tuple[Path, Path]:
    """Write ``summary.md`` and ``summary.json`` atomically into the results folder."""
    summary = build_summary(results_dir, papers)
    md, js = Path(results_dir) / "summary.md", Path(results_dir) / "summary.json"
    text = render_markdown(summary)
    atomic_write_bytes(md, lambda fh: fh.write(text.encode("utf-8")))
    atomic_write_json(js, summary)
    return md, js


def readme_table(results_dir: str | Path, protocol: str = "paper", papers: PaperNumbers | None = None) -> str:
    """A compact table for the README: one row per model, per dataset the number of seeds and HR@10 / NDCG@10
    (mean ± std over those seeds); with ``papers``, followed by the comparison with the papers' numbers."""
    summary = build_summary(results_dir, papers)
    columns: list[tuple[str, str]] = []
    cells: dict[str, dict[tuple[str, str], str]] = {}
    for name, ds in summary["datasets"].items():
        section = ds["protocols"].get(protocol)
        if section is None:
            continue
        columns += [(name, "seeds"), *((name, m) for m in section["metrics"][:2])]
        for row in section["rows"]:
            row_cells = cells.setdefault(row["label"], {})
            row_cells[(name, "seeds")] = str(len(row["seeds"]))
            row_cells.update({(name, m): format_stat(stat) for m, stat in row["metrics"].items()})
    if not columns:
        raise ConfigError(f"{results_dir}: no runs can be selected under protocol {protocol!r}")
    body = [[label, *(values.get(c, "–") for c in columns)] for label, values in cells.items()]
    lines = _markdown_table(["model", *(f"{d} {m}" for d, m in columns)], body)
    seeds = ", ".join(map(str, summary["seeds"]))
    note = (f"Mean ± std over the seeds a row has (among {seeds}); protocol: {PROTOCOLS[protocol]}; "
            f"{summary['generated_at'][:10]}, {'; '.join(summary['machines'])}; records in `{results_dir}`"
            + "".join(f"; {label}'s in `{folder}`" for label, folder in summary["imports"].items()) + ".")
    comparison = render_comparison(summary.get("papers", {}).get("rows", []), papers.tolerance) if papers else []
    return "\n".join([*lines, "", note, *([""] + comparison if comparison else [])])


def replace_readme_section(readme: str | Path, text: str) -> None:
    """Replace what lies between the README's results markers with ``text`` (atomic write)."""
    path = Path(readme)
    try:
        content = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    start, end = content.find(README_START), content.find(README_END)
    if start < 0 or end < start:
        raise ConfigError(f"{path}: needs the markers {README_START} and {README_END} (in this order)")
    new = content[: start + len(README_START)] + "\n" + text.strip("\n") + "\n" + content[end:]
    atomic_write_bytes(path, lambda fh: fh.write(new.encode("utf-8")))
