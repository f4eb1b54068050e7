r"""MKL's vendor check on an AMD CPU (``scripts/mkl_amd_shim.sh``): a COPF Taobao step with and without the shim.

MKL, linked into PyTorch's CPU wheel, runs generic kernels on non-Intel CPUs. ``build/libmkl_amd_shim.so``
(``scripts/mkl_amd_shim.c``, preloaded with ``LD_PRELOAD``) answers that check with "Intel", so MKL takes its
AVX2 path. This script runs ``bench_copf_step.py`` (one COPF training step on Taobao: sample, forward,
backward, Adam, then the step's sparse and contrastive kernels alone) in fresh processes, alternately without
and with the shim, ``--rounds`` times each, and reports the medians of the step and of the kernels for each
setting and their ratios (without / with: > 1 means the shim is faster), and one full-ranking evaluation's time.
That results agree with and without the shim (to float32 rounding) is a test (``tests/test_mkl_shim.py``).

    bash scripts/mkl_amd_shim.sh && python benchmarks/bench_mkl_shim.py --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from benchlib import REPO, command_record, copf_step_in_subprocess, load_average, machine_record

from mbrec.train.checkpoint import atomic_write_json

ROOT = Path(__file__).resolve().parent
SHIM = REPO / "build" / "libmkl_amd_shim.so"


def one_run(with_shim: bool, threads: int, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    if with_shim:
        env["LD_PRELOAD"] = str(SHIM)
    record, _ = copf_step_in_subprocess(env, threads, steps)
    loaded = "MKL vendor-check shim" in record["machine"]["description"]
    if loaded != with_shim:
        raise SystemExit(f"the step benchmark ran with the shim {'loaded' if loaded else 'not loaded'}")
    medians = record["medians"]
    return {"step_wall_s": medians["step"]["wall_s"], "sparse_wall_s": medians["sparse"]["wall_s"],
            "contrastive_wall_s": medians["contrastive"]["wall_s"],
            "evaluation_wall_s": record["evaluation"]["wall_s"], "machine": record["machine"]["description"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="processes per setting, alternating")
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_mkl_shim.json"))
    args = parser.parse_args(argv)
    if not SHIM.is_file():
        raise SystemExit(f"{SHIM} not found: run `bash scripts/mkl_amd_shim.sh` first")
    load_before = load_average()
    runs: dict[str, list[dict]] = {"without": [], "with": []}
    for r in range(args.rounds):
        for name in ("without", "with"):
            runs[name].append(one_run(name == "with", args.threads, args.steps))
            last = runs[name][-1]
            print(f"round {r + 1} {name} shim: step {last['step_wall_s']:.3f} s, sparse {last['sparse_wall_s']:.3f} s, "
                  f"contrastive {last['contrastive_wall_s']:.3f} s", flush=True)
    keys = ("step_wall_s", "sparse_wall_s", "contrastive_wall_s", "evaluation_wall_s")
    median = {name: {k: statistics.median(x[k] for x in values) for k in keys} for name, values in runs.items()}
    ratio = {k: median["without"][k] / median["with"][k] for k in keys}
    print("without / with the shim: " + ", ".join(f"{k.removesuffix('_wall_s')} {v:.2f}x" for k, v in ratio.items()))
    atomic_write_json(args.out, {
        "benchmark": "COPF Taobao step: MKL with and without the vendor-check shim (scripts/mkl_amd_shim.sh)",
        "command": command_record(), "machine": machine_record(load_before), "threads": args.threads,
        "steps": args.steps, "rounds": args.rounds, "runs": runs, "medians": median,
        "ratio_without_over_with": ratio})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
