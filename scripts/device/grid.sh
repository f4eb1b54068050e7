#!/usr/bin/env bash
# Run grid cells on the lent GPU machine and bring the records back under $OUT (one tarball + the log).
# From the session (after scripts/device/prepare.sh), e.g.:
#   run(command="bash scripts/device/grid.sh benchmarks/grids/copf_taobao.yaml --only COPF",
#       carry=[".data"], timeout_s=590)
# The machine's own python3 holds a CUDA torch; mbrec runs from src/ (nothing is installed). The grid's results
# folder and its parked checkpoints (cells that did not finish inside GRID_SECONDS) come back as one tarball,
# split into 15 MiB parts (the tool's per-file limit). Back here:  cat <files_at>/results.tgz* | tar xz
# DEVICE=cpu runs the same thing on a CPU (to check this script).
set -uo pipefail
cd "$(dirname "$0")/../.."
grid=$1; shift
out=${OUT:?OUT is set by the device tool}
export PYTHONPATH=$PWD/src MBREC_DATA_ROOT=${MBREC_DATA_ROOT:-$PWD/.data} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee "$out/log.txt"
timeout "${GRID_SECONDS:-540}" "$py" -m mbrec bench run "$grid" --set "train.device=${DEVICE:-cuda}" "$@" 2>&1 \
    | tee -a "$out/log.txt"
status=${PIPESTATUS[0]}
"$py" -m mbrec bench park "$grid" "$@" 2>&1 | tee -a "$out/log.txt"
results=$("$py" -c "import sys; from mbrec.bench.grid import load_grid; g = load_grid(sys.argv[1]); \
print(g.results_path, g.parked_path)" "$grid")
read -r results_dir parked_dir <<< "$results"
tar czf "$out/results.tgz" "$results_dir" $( [ -d "$parked_dir" ] && echo "$parked_dir" )
count=$(tar tzf "$out/results.tgz" | wc -l)
if [ "$(stat -c %s "$out/results.tgz")" -gt $((15 * 1024 * 1024)) ]; then
    split -b 15M -d "$out/results.tgz" "$out/results.tgz." && rm "$out/results.tgz"
fi
echo "bench run exit $status; $count files in $(ls "$out" | grep -c results.tgz) tarball part(s)" | tee -a "$out/log.txt"
exit "$status"
