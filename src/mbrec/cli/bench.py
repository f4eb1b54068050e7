"""``mbrec bench``: run a benchmark grid, summarise its results, plot them.

* ``mbrec bench run GRID.yaml [--only LABEL ...] [--seeds N ...] [--set KEY=VALUE ...] [--dry-run]`` —
  run the grid's cells (finished cells are never rerun, interrupted ones resume, cells that another
  process runs are skipped; ``--set`` overrides every cell); ``--dry-run`` prints each cell's status only.
* ``mbrec bench park GRID.yaml [--only LABEL ...] [--seeds N ...] [--progress-only]`` — copy the checkpoints
  of unfinished cells into the grid's parked folder (to commit), from which the next ``run`` on any machine
  resumes; both write the cells' evaluations so far to ``progress-<cell>.jsonl`` in the results folder, and
  ``--progress-only`` (for runs given up) writes only that.
* ``mbrec bench groups GRID.yaml [--only LABEL ...] [--seeds N ...]`` — add the per-user-group metrics to
  finished cells' records that lack them, from their run folders' ``best.pt`` (new runs record them).
* ``mbrec bench summary RESULTS_DIR ... [--papers FILE] [--readme README.md]`` — write
  ``summary.md``/``summary.json`` per folder; ``--papers`` adds the comparison with the papers' numbers
  (``benchmarks/paper_numbers.yaml``); with ``--readme``, replace the README's generated results tables.
* ``mbrec bench plot RESULTS_DIR`` — bar charts and training curves under ``RESULTS_DIR/plots``.

Handlers return the exit code: 0 ok, 1 a cell failed or plots cannot be drawn, 2 a config problem
(one ``error: ...`` line on stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mbrec.config import ConfigError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``bench`` and its run, park, groups, summary and plot subcommands on a subparsers object."""
    bench = subparsers.add_parser("bench", help="benchmark grids: run, summary tables, plots",
                                  description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = bench.add_subparsers(dest="bench_command", required=True, metavar="{run,park,groups,summary,plot}")

    run = _cell_selection(sub.add_parser("run", help="run the cells of a grid file (resumable)"),
                          "override every cell, e.g. --set train.threads=1 (threads and progress do not "
                          "change a cell's identity)")
    run.add_argument("--dry-run", action="store_true", help="print each cell's status, run nothing")
    run.set_defaults(handler=run_command)

    park = _cell_selection(sub.add_parser("park", help="copy unfinished cells' checkpoints to the grid's "
                                                       "parked folder"), _SAME_SET)
    park.add_argument("--progress-only", action="store_true",
                      help="for runs given up: write only their progress logs, keep no checkpoint")
    park.set_defaults(handler=park_command)

    groups = _cell_selection(sub.add_parser("groups", help="add per-user-group metrics to finished cells' "
                                                           "records"), _SAME_SET)
    groups.set_defaults(handler=groups_command)

    summary = sub.add_parser("summary", help="write summary.md and summary.json of results folders")
    summary.add_argument("results_dirs", metavar="RESULTS_DIR", nargs="+")
    summary.add_argument("--readme", metavar="README.md",
                         help="also replace the README's results section with one table per folder")
    summary.add_argument("--papers", metavar="FILE",
                         help="compare with the papers' numbers, e.g. benchmarks/paper_numbers.yaml")
    summary.set_defaults(handler=summary_command)

    plot = sub.add_parser("plot", help="PNG bar charts and training curves of a results folder")
    plot.add_argument("results_dir", metavar="RESULTS_DIR")
    plot.set_defaults(handler=plot_command)
    return bench


_SAME_SET = "the same --set values the cells were run with (they are part of a cell's config)"


def _cell_selection(parser: argparse.ArgumentParser, set_help: str) -> argparse.ArgumentParser:
    """The grid file and the options that pick its cells: ``--only``, ``--seeds``, ``--set``."""
    parser.add_argument("grid", metavar="GRID.yaml", help="grid file, e.g. benchmarks/grids/smoke.yaml")
    parser.add_argument("--only", action="extend", nargs="+", metavar="LABEL", help="only these model labels")
    parser.add_argument("--seeds", action="extend", nargs="+", type=int, metavar="N",
                        help="only these seeds (e.g. one process per seed)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help=set_help)
    return parser


def _config_error(e: ConfigError) -> int:
    print(f"error: {e}", file=sys.stderr)
    return 2


def run_command(args: argparse.Namespace) -> int:
    from mbrec.bench.grid import run_grid
    from mbrec.bench.spec import load_grid

    try:
        grid = load_grid(args.grid)
        report = run_grid(grid, only=args.only, dry_run=args.dry_run, grid_file=args.grid,
                          extra_set=args.overrides, seeds=args.seeds)
    except ConfigError as e:
        return _config_error(e)
    return report.exit_code


def park_command(args: argparse.Namespace) -> int:
    from mbrec.bench.grid import park_grid
    from mbrec.bench.spec import load_grid

    try:
        park_grid(load_grid(args.grid), only=args.only, seeds=args.seeds, extra_set=args.overrides,
                  grid_file=args.grid, progress_only=args.progress_only)
    except ConfigError as e:
        return _config_error(e)
    return 0


def groups_command(args: argparse.Namespace) -> int:
    from mbrec.bench.analysis import backfill_groups
    from mbrec.bench.spec import load_grid

    try:
        backfill_groups(load_grid(args.grid), only=args.only, seeds=args.seeds, extra_set=args.overrides)
    except ConfigError as e:
        return _config_error(e)
    return 0


def summary_command(args: argparse.Namespace) -> int:
    from mbrec.bench.papers import load_paper_numbers
    from mbrec.bench.summary import readme_table, replace_readme_section, write_summary

    tables = []
    try:
        papers = load_paper_numbers(args.papers) if args.papers else None
        for results_dir in args.results_dirs:
            md, js = write_summary(results_dir, papers)
            print(md.read_text(encoding="utf-8"), end="")
            print(f"wrote {md} and {js}", file=sys.stderr)
            tables.append(f"**{Path(results_dir).name}**\n\n{readme_table(results_dir, papers=papers)}")
        if args.readme:
            command = " ".join(["mbrec bench summary", *args.results_dirs,
                                *(["--papers", args.papers] if args.papers else []), "--readme", args.readme])
            tables.append(f"Generated by `{command}` (do not edit by hand).")
            replace_readme_section(args.readme, "\n\n".join(tables))
            print(f"updated {args.readme}", file=sys.stderr)
    except ConfigError as e:
        return _config_error(e)
    return 0


def plot_command(args: argparse.Namespace) -> int:
    from mbrec.bench.plots import PlotError, plot_results

    try:
        paths = plot_results(args.results_dir)
    except ConfigError as e:
        return _config_error(e)
    except PlotError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    return 0
