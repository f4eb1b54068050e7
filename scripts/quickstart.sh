#!/usr/bin/env bash
# Fresh machine -> trained COPF on the built-in synthetic dataset -> top-5 recommendations.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/mbrec train --config configs/copf_synthetic.yaml --name quickstart --no-progress
.venv/bin/mbrec recommend --checkpoint runs/quickstart/best.pt --users 0,1,2 --k 5
