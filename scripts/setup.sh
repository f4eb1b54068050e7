#!/usr/bin/env bash
# Create .venv (if missing) and install mbrec with its test/plot extras.
# Torch is installed first, pinned to a CPU-capable release (override with TORCH_SPEC), so that
# resolving the project's range never pulls a different build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/python -m pip install -q -e ".[dev]"
