"""The ``mbrec`` command line: a thin layer that parses, builds a config and calls the library.

Subcommands: ``train``, ``evaluate``, ``recommend``, ``models``, ``data ...``, ``bench ...``.
Every expected failure (bad config, bad data, missing checkpoint) prints one line ``error: ...`` to
stderr and exits with status 2; no tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from mbrec import __version__
from mbrec.cli.errors import EXPECTED_ERRORS, report_error
from mbrec.cli.run import add_run_parsers


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mbrec", description="Multi-behavior recommendation.")
    parser.add_argument("--version", action="version", version=f"mbrec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_run_parsers(sub)
    for name in ("data", "bench"):
        module = importlib.import_module(f"mbrec.cli.{name}")
        module.add_parser(sub)
    return parser


def show_library_progress() -> None:
    """Send the library's INFO messages (the ``mbrec`` logger: warm starts, long precomputations) to
    stderr as plain lines, once; a host program that configured ``mbrec`` logging itself keeps its own."""
    logger = logging.getLogger("mbrec")
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(argv: list[str] | None = None) -> int:
    show_library_progress()
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 1
    try:
        return int(handler(args) or 0)
    except EXPECTED_ERRORS as err:
        return report_error(err)
    except KeyboardInterrupt:
        print("interrupted: finished epochs are checkpointed (train: --resume; bench run: run the grid again)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
