#!/usr/bin/env bash
# The GPU checks that grid runs do not give, on the lent GPU machine (after scripts/device/prepare.sh):
#   1. tests/test_cuda.py: every model on CUDA against the same weights on the CPU (scores, losses, gradients,
#      metrics), then two epochs of the trainer on CUDA;
#   2. COPF Taobao epochs on the GPU through `mbrec train` (benchmarks/bench_copf_epoch.py --device cuda, the
#      final configuration COPF-L411), written to $OUT/bench_copf_epoch_gpu.json (copy it to benchmarks/results/).
# Everything printed goes to $OUT/check.txt. One device call can run it before a grid, e.g.:
#   run(command="bash scripts/device/check.sh; GRID_SECONDS=400 bash scripts/device/grid.sh
#       benchmarks/grids/beibei.yaml --only MBSSL --seeds 1", carry=[".data"], timeout_s=600)
# DEVICE=cpu PYTHON=.venv/bin/python OUT=/tmp/out runs the same thing on a CPU (to check this script).
set -uo pipefail
cd "$(dirname "$0")/../.."
out=${OUT:?OUT is set by the device tool}
export PYTHONPATH=$PWD/src MBREC_DATA_ROOT=${MBREC_DATA_ROOT:-$PWD/.data} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
device=${DEVICE:-cuda}
log=$out/check.txt
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  "$py" -c "import torch, scipy, numpy; print('torch', torch.__version__, 'scipy', scipy.__version__, \
'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())"; } >> "$log" 2>&1
echo "== tests/test_cuda.py on $device" >> "$log"
MBREC_TEST_DEVICE=$device timeout "${TEST_SECONDS:-150}" "$py" -m pytest -q -p no:cacheprovider tests/test_cuda.py \
    >> "$log" 2>&1
tests=$?
echo "== COPF Taobao epochs on $device" >> "$log"
timeout "${BENCH_SECONDS:-180}" "$py" benchmarks/bench_copf_epoch.py --device "$device" --threads 4 --epochs 4 \
    --rounds 1 --set "params.cogcn_layers=[4,1,1]" --out "$out/bench_copf_epoch_gpu.json" >> "$log" 2>&1
bench=$?
echo "tests exit $tests, benchmark exit $bench" | tee -a "$log"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
