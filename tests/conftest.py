"""Shared test setup."""

from __future__ import annotations

import pytest
import torch
from bench_helpers import make_grid, quiet_run


@pytest.fixture(autouse=True, scope="session")
def single_torch_thread():
    """Unit tests use tiny tensors: one torch thread avoids OpenMP overhead (and stalls on a busy machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One straight run of the 2 models × 2 seeds grid: (grid, report, progress lines)."""
    tmp = tmp_path_factory.mktemp("grid")
    grid = make_grid(tmp)
    lines: list[str] = []
    report = quiet_run(grid, lines)
    return grid, report, lines
