#!/usr/bin/env bash
# Run grid cells on the lent GPU machine and bring the records back under $OUT (one tarball + the logs).
# From the session (after scripts/device/prepare.sh), e.g.:
#   run(command="JOBS=4 bash scripts/device/grid.sh benchmarks/grids/copf_taobao.yaml --only COPF COPF-L411",
#       carry=[".data"], timeout_s=590)
# The machine's own python3 holds a CUDA torch; mbrec runs from src/ (nothing is installed).
# JOBS (default 1) `bench run` workers share the grid: each takes the next cell that is neither finished nor
# locked by another worker (the cell lock), so JOBS cells train side by side on the one GPU, each with
# nproc / JOBS CPU threads (THREADS overrides). After GRID_SECONDS (default 540) the workers are stopped and
# the unfinished cells parked. The grid's results folder (records, progress-*.jsonl of unfinished cells) and
# the parked checkpoints come back as one tarball split into 15 MiB parts (the tool's per-file limit); when
# that would exceed PARK_MAX_MB (default 56; the tool brings back 64 MiB at most) the checkpoints are left
# out and only the results folder comes back. Back here:  cat <files_at>/results.tgz* | tar xz
# DEVICE=cpu PYTHON=.venv/bin/python OUT=/tmp/out runs the same thing on a CPU (to check this script).
set -uo pipefail
cd "$(dirname "$0")/../.."
grid=$1; shift
out=${OUT:?OUT is set by the device tool}
export PYTHONPATH=$PWD/src MBREC_DATA_ROOT=${MBREC_DATA_ROOT:-$PWD/.data} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
jobs=${JOBS:-1}
threads=${THREADS:-$(( $(nproc) / jobs ))}
[ "$threads" -ge 1 ] || threads=1
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee "$out/log.txt"
echo "$jobs worker(s), $threads thread(s) each" | tee -a "$out/log.txt"
pids=()
for j in $(seq 1 "$jobs"); do
    timeout "${GRID_SECONDS:-540}" "$py" -m mbrec bench run "$grid" --set "train.device=${DEVICE:-cuda}" \
        --set "train.threads=$threads" "$@" > "$out/worker-$j.txt" 2>&1 &
    pids+=($!)
    sleep 3   # lets each worker take its cell's lock before the next one looks
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
for j in $(seq 1 "$jobs"); do { echo "== worker $j"; cat "$out/worker-$j.txt"; } >> "$out/log.txt"; rm "$out/worker-$j.txt"; done
"$py" -m mbrec bench park "$grid" "$@" 2>&1 | tee -a "$out/log.txt"
paths=$("$py" -c "import sys; from mbrec.bench.grid import load_grid; g = load_grid(sys.argv[1]); \
print(g.results_path, g.parked_path)" "$grid")
read -r results_dir parked_dir <<< "$paths"
tar czf "$out/results.tgz" "$results_dir" $( [ -d "$parked_dir" ] && echo "$parked_dir" )
if [ "$(stat -c %s "$out/results.tgz")" -gt $(( ${PARK_MAX_MB:-56} * 1024 * 1024 )) ]; then
    echo "parked checkpoints left out: the tarball would exceed ${PARK_MAX_MB:-56} MiB" | tee -a "$out/log.txt"
    tar czf "$out/results.tgz" "$results_dir"
fi
count=$(tar tzf "$out/results.tgz" | wc -l)
if [ "$(stat -c %s "$out/results.tgz")" -gt $((15 * 1024 * 1024)) ]; then
    split -b 15M -d "$out/results.tgz" "$out/results.tgz." && rm "$out/results.tgz"
fi
echo "bench run exit $status; $count files in $(ls "$out" | grep -c results.tgz) tarball part(s)" | tee -a "$out/log.txt"
exit "$status"
