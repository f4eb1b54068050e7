r"""Our results against the numbers the papers report (the "within 10 %" check of the benchmark).

A paper-numbers file (YAML; ``benchmarks/paper_numbers.yaml`` is the shipped one) lists, per dataset and
grid label, the metrics a paper reports, where they come from and optionally a note::

    tolerance: 0.10                # |gap| <= tolerance counts as reproduced
    taobao:
      LightGCN: {source: "COPF Table 2", HR@10: 0.0411, NDCG@10: 0.0240}
      COPF: {source: "COPF Table 2", HR@10: 0.1552, NDCG@10: 0.0838, note: "..."}

Labels match a summary row's label ignoring case and any character that is not a letter, a digit or ``+``
(``lightgcn_m`` = ``LightGCN-M``, which differs from ``LightGCN-M+DFME``). For every matching row of the
**paper protocol** (best test evaluation, what the papers report) and every listed metric the comparison
gives our mean ± std over seeds,
the paper's value, the relative gap :math:`(\bar x - x_{paper}) / x_{paper}` and whether
:math:`|gap| \le` tolerance. Rows without a paper number are not listed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from mbrec.config import ConfigError, read_yaml_mapping

DEFAULT_TOLERANCE = 0.10


@dataclass(frozen=True)
class PaperNumber:
    """What one paper reports for one (dataset, label)."""

    dataset: str
    label: str
    source: str
    metrics: dict[str, float]
    note: str | None = None


@dataclass
class PaperNumbers:
    """All paper numbers of a file and the tolerance of the check."""

    entries: list[PaperNumber] = field(default_factory=list)
    tolerance: float = DEFAULT_TOLERANCE
    path: str | None = None  # the file they were read from

    def find(self, dataset: str, label: str) -> PaperNumber | None:
        key = _normalise(label)
        for entry in self.entries:
            if entry.dataset == dataset and _normalise(entry.label) == key:
                return entry
        return None


def _normalise(label: str) -> str:
    return re.sub(r"[^a-z0-9+]", "", label.lower())


def load_paper_numbers(path: str | Path) -> PaperNumbers:
    """Read a paper-numbers file; problems are one-line :class:`ConfigError` s naming the file and key."""
    data = read_yaml_mapping(Path(path))
    tolerance = data.pop("tolerance", DEFAULT_TOLERANCE)
    if not isinstance(tolerance, int | float) or tolerance <= 0:
        raise ConfigError(f"{path}: tolerance must be a positive number, got {tolerance!r}")
    entries = []
    for dataset, rows in data.items():
        if not isinstance(rows, dict):
            raise ConfigError(f"{path}: {dataset}: expected a mapping of labels")
        for label, spec in rows.items():
            where = f"{path}: {dataset}.{label}"
            if not isinstance(spec, dict) or not isinstance(spec.get("source"), str):
                raise ConfigError(f"{where}: needs a 'source' string and metric values")
            metrics = {k: v for k, v in spec.items() if k not in ("source", "note")}
            bad = [k for k, v in metrics.items() if not isinstance(v, int | float) or isinstance(v, bool)]
            if bad or not metrics:
                raise ConfigError(f"{where}: metric values must be numbers (got {bad[0]!r})" if bad
                                  else f"{where}: no metric values")
            entries.append(PaperNumber(str(dataset), str(label), spec["source"],
                                       {k: float(v) for k, v in metrics.items()}, spec.get("note")))
    return PaperNumbers(entries, float(tolerance), str(path))


def compare_with_papers(summary: dict, numbers: PaperNumbers) -> list[dict]:
    """One row per (dataset, label, metric) that has both our paper-protocol result and a paper number."""
    out = []
    for dataset, ds in summary["datasets"].items():
        section = ds["protocols"].get("paper")
        if section is None:
            continue
        for row in section["rows"]:
            paper = numbers.find(dataset, row["label"])
            if paper is None:
                continue
            for metric, value in paper.metrics.items():
                stat = row["metrics"].get(metric) or row.get("other_metrics", {}).get(metric)
                if stat is None:
                    continue
                gap = (stat["mean"] - value) / value
                out.append({"dataset": dataset, "label": row["label"], "metric": metric, "seeds": row["seeds"],
                            "ours": stat, "paper": value, "gap": gap,
                            "within": abs(gap) <= numbers.tolerance, "source": paper.source,
                            "note": paper.note})
    return out


def render_comparison(rows: list[dict], tolerance: float) -> list[str]:
    """Markdown: a table of the comparison rows and the notes of their paper numbers."""
    from mbrec.bench.summary import _markdown_table, format_stat

    if not rows:
        return []
    body = [[r["dataset"], r["label"], r["metric"], str(len(r["seeds"])), format_stat(r["ours"]),
             f"{r['paper']:.4f}", f"{r['gap'] * 100:+.1f}%", "yes" if r["within"] else "**no**", r["source"]]
            for r in rows]
    lines = [f"Paper protocol on both sides; reproduced = |gap| <= {tolerance * 100:.0f}%.", ""]
    lines += _markdown_table(["dataset", "model", "metric", "seeds", "ours", "paper", "gap", "reproduced",
                              "source"], body)
    notes = sorted({(r["dataset"], r["label"], r["note"]) for r in rows if r["note"]})
    if notes:
        lines += [""] + [f"- {dataset} {label}: {note}" for dataset, label, note in notes]
    return lines
