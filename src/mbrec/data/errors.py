"""Errors for bad input data: one line that names the file, the line and the problem."""

from __future__ import annotations


class DataError(ValueError):
    """A problem with an input file.

    ``str(err)`` is a single line ``"<file>:<line>: <problem>"`` (the line part is left out when the
    problem concerns the whole file). The CLI prints exactly that line and exits with status 2.
    """

    def __init__(self, path: object, problem: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {problem}")
