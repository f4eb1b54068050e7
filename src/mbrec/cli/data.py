"""``mbrec data info | import | validate``: inspect, import and check datasets.

Every handler returns an exit status. Bad input (:class:`DataError`, unreadable files) prints one line
``error: <file>:<line>: <problem>`` to stderr and returns 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path

from mbrec.data.errors import DataError

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_BAD_INPUT = 2


def _reports_errors(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn expected input errors into one ``error:`` line on stderr and exit status 2."""
    @wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except DataError as err:
            message = str(err)
        except FileExistsError as err:
            message = str(err)
        except OSError as err:
            message = f"{err.filename}: {err.strerror}" if err.filename else str(err)
        print(f"error: {' '.join(message.split())}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return run


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``data`` and its subcommands on the top-level subparsers."""
    data = subparsers.add_parser("data", help="inspect, import and validate datasets")
    commands = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(handler=lambda args: _print_usage(data))

    info = commands.add_parser("info", help="sizes, behavior counts and splits of a dataset")
    info.add_argument("dataset", metavar="PATH_OR_NAME",
                      help="dataset directory, name under the data root, or synthetic[:tiny|:medium]")
    info.add_argument("--data-root", help="folder holding datasets (default: $MBREC_DATA_ROOT or "
                                          "../shared/datasets)")
    info.set_defaults(handler=cmd_info)

    imp = commands.add_parser("import", help="build a dataset from an event log (CSV, CSV.gz or Parquet)")
    imp.add_argument("log", metavar="LOG", help="event log with columns user,item,behavior[,timestamp]")
    imp.add_argument("--behaviors", required=True,
                     help="behaviors to keep, upstream first, e.g. view,cart,buy")
    imp.add_argument("--target", help="target behavior (default: the last of --behaviors)")
    imp.add_argument("--out", help="write the dataset directory here (default: only print the summary)")
    imp.add_argument("--valid", action="store_true", help="also hold out a validation pair per user")
    imp.add_argument("--seed", type=int, default=0, help="seed for the split when there are no timestamps")
    imp.add_argument("--name", help="dataset name (default: the log's file name)")
    imp.add_argument("--user-col", default="user")
    imp.add_argument("--item-col", default="item")
    imp.add_argument("--behavior-col", default="behavior")
    imp.add_argument("--time-col", default="timestamp")
    imp.set_defaults(handler=cmd_import)

    check = commands.add_parser("validate", help="check a dataset; exit 1 when problems are found")
    check.add_argument("dataset", metavar="PATH_OR_NAME")
    check.add_argument("--data-root")
    check.set_defaults(handler=cmd_validate)
    return data


def _print_usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_INVALID


@_reports_errors
def cmd_info(args: argparse.Namespace) -> int:
    from mbrec.data.registry import load_dataset
    from mbrec.data.validate import info_lines

    started = time.perf_counter()
    ds = load_dataset(args.dataset, data_root=args.data_root)
    for line in info_lines(ds):
        print(line)
    print(f"\nloaded in {time.perf_counter() - started:.2f} s")
    return EXIT_OK


@_reports_errors
def cmd_validate(args: argparse.Namespace) -> int:
    from mbrec.data.registry import load_dataset
    from mbrec.data.validate import is_warning, validate_dataset

    ds = load_dataset(args.dataset, data_root=args.data_root)
    problems = validate_dataset(ds)
    for line in problems:
        print(line)
    errors = [line for line in problems if not is_warning(line)]
    if errors:
        print(f"{ds.name}: {len(errors)} problem(s)", file=sys.stderr)
        return EXIT_INVALID
    print(f"{ds.name}: ok ({ds.n_users:,} users, {ds.n_items:,} items, {', '.join(ds.behaviors)})")
    return EXIT_OK


@_reports_errors
def cmd_import(args: argparse.Namespace) -> int:
    from mbrec.data.directory import save_directory
    from mbrec.data.eventlog import import_event_log
    from mbrec.data.validate import info_lines

    behaviors = [b.strip() for b in args.behaviors.split(",") if b.strip()]
    started = time.perf_counter()
    ds = import_event_log(args.log, behaviors, target=args.target, name=args.name, seed=args.seed,
                          valid=args.valid, user_col=args.user_col, item_col=args.item_col,
                          behavior_col=args.behavior_col, time_col=args.time_col, progress=True)
    print(f"imported {ds.meta['rows']:,} rows from {args.log} in {time.perf_counter() - started:.1f} s")
    dropped = ds.meta.get("dropped_behaviors") or {}
    if dropped:
        shown = ", ".join(f"{name or '(empty)'}: {count:,}" for name, count in sorted(dropped.items()))
        print(f"dropped {ds.meta['dropped_unknown_behavior_rows']:,} rows of other behaviors ({shown})")
    print(f"dropped {ds.meta['dropped_duplicate_rows']:,} repeated (user, item, behavior) rows")
    print(f"split: {ds.meta['split']}; {ds.meta['users_without_test']:,} users with a single "
          f"{ds.target!r} interaction keep it in training (no test pair)")
    print()
    for line in info_lines(ds):
        print(line)
    if args.out:
        out = save_directory(ds, Path(args.out))
        print(f"\nwrote {out}")
    else:
        print("\nnot saved (pass --out DIR to write the dataset directory)")
    return EXIT_OK
