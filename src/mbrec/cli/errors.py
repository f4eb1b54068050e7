"""Expected errors and how the CLI reports them (one line, exit status 2)."""

from __future__ import annotations

import sys

from mbrec.config import ConfigError
from mbrec.data.errors import DataError

EXPECTED_ERRORS = (ConfigError, DataError, FileNotFoundError, ValueError)


def report_error(err: BaseException) -> int:
    message = str(err).splitlines()[0] if str(err) else type(err).__name__
    if isinstance(err, FileNotFoundError) and err.filename:
        message = f"{err.filename}: file not found"
    print(f"error: {message}", file=sys.stderr)
    return 2
