#!/usr/bin/env bash
# Build build/libmkl_amd_shim.so (scripts/mkl_amd_shim.c) and print how to use it. Opt-in, for AMD CPUs with
# AVX2: MKL inside PyTorch's wheel otherwise runs its generic kernels there (benchmarks/bench_mkl_shim.py
# measures the difference on a COPF step). Needs gcc. Usage afterwards:
#   LD_PRELOAD=$PWD/build/libmkl_amd_shim.so mbrec train ...
set -euo pipefail
cd "$(dirname "$0")/.."
if ! grep -qm1 avx2 /proc/cpuinfo; then
    echo "this CPU has no AVX2: the shim would make MKL run instructions it lacks; not built" >&2
    exit 1
fi
mkdir -p build
gcc -shared -fPIC -O2 -o build/libmkl_amd_shim.so.tmp scripts/mkl_amd_shim.c
mv build/libmkl_amd_shim.so.tmp build/libmkl_amd_shim.so
echo "built build/libmkl_amd_shim.so; use: export LD_PRELOAD=$PWD/build/libmkl_amd_shim.so"
