/* MKL (statically linked into PyTorch's CPU wheels) picks its code path from a CPU vendor check and takes a
 * generic, slower path on non-Intel CPUs such as AMD EPYC even when they support AVX2 and FMA. Preloading
 * this definition of that check (LD_PRELOAD) makes MKL take its AVX2 path. Same operations, same IEEE
 * arithmetic; only the kernels (and so the rounding order of sums) change. See scripts/mkl_amd_shim.sh. */
int mkl_serv_intel_cpu_true(void) { return 1; }
