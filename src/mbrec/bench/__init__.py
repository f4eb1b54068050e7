"""Benchmarks: grids of (model × dataset × seed) runs, summary tables with statistics, plots.

:mod:`mbrec.bench.spec` reads and validates a grid file, :mod:`mbrec.bench.grid` runs it resumably,
:mod:`mbrec.bench.summary` turns the per-run result records into markdown/JSON tables (both protocols,
mean ± std, relative gain, paired t-test) and
:mod:`mbrec.bench.plots` draws them (optional matplotlib).
"""

from mbrec.bench.grid import Cell, GridReport, expand_grid, run_grid
from mbrec.bench.spec import GridSpec, ModelEntry, load_grid
from mbrec.bench.summary import build_summary, readme_table, replace_readme_section, write_summary

__all__ = ["Cell", "GridReport", "GridSpec", "ModelEntry", "build_summary", "expand_grid", "load_grid",
           "readme_table", "replace_readme_section", "run_grid", "write_summary"]
