r"""The glibc allocator settings (:mod:`mbrec.train.allocator`): COPF Taobao step with and without them.

Runs ``bench_copf_step.py`` (one COPF training step on Taobao: sample, forward, backward, Adam; medians
over ``--steps``) in fresh processes, in turn with ``MBREC_MALLOC_TUNING=0`` (glibc defaults, ``default``),
with the tuning and mmap kept for blocks above 32 MiB (``MBREC_MALLOC_MMAP=1``, ``tuned``) and with the
tuning and mmap off (``MBREC_MALLOC_MMAP=0``, ``tuned_nommap``), ``--rounds`` times each, and reports the
median step time of each setting, the ratios ``default / tuned`` and ``tuned / tuned_nommap`` (> 1: the
second is faster) and the minor page faults of each process.

    python benchmarks/bench_allocator.py --threads 2 --steps 5 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from benchlib import command_record, copf_step_in_subprocess, load_average, machine_record

from mbrec.train.checkpoint import atomic_write_json

ROOT = Path(__file__).resolve().parent


SETTINGS = {"default": {"MBREC_MALLOC_TUNING": "0"},
            "tuned": {"MBREC_MALLOC_TUNING": "1", "MBREC_MALLOC_MMAP": "1"},
            "tuned_nommap": {"MBREC_MALLOC_TUNING": "1", "MBREC_MALLOC_MMAP": "0"}}


def one_run(setting: str, threads: int, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(SETTINGS[setting])
    record, faults = copf_step_in_subprocess(env, threads, steps)
    tuned = setting != "default"
    if record["machine"]["malloc_tuning"] != tuned:
        raise SystemExit(f"the step benchmark ran with malloc_tuning={record['machine']['malloc_tuning']}")
    return {"step_wall_s": record["medians"]["step"]["wall_s"], "kernels_wall_s":
            record["medians"]["sparse"]["wall_s"] + record["medians"]["contrastive"]["wall_s"],
            "minor_page_faults": faults}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="processes per setting, alternating")
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_allocator.json"))
    args = parser.parse_args(argv)
    load_before = load_average()
    runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for r in range(args.rounds):
        for name in SETTINGS:
            runs[name].append(one_run(name, args.threads, args.steps))
            print(f"round {r + 1} {name}: step {runs[name][-1]['step_wall_s']:.3f} s, "
                  f"{runs[name][-1]['minor_page_faults']:,} minor page faults", flush=True)
    median = {name: statistics.median(x["step_wall_s"] for x in values) for name, values in runs.items()}
    ratio = median["default"] / median["tuned"]
    ratio_nommap = median["tuned"] / median["tuned_nommap"]
    print(f"median step: glibc defaults {median['default']:.3f} s, tuned {median['tuned']:.3f} s, tuned with mmap "
          f"off {median['tuned_nommap']:.3f} s -> default / tuned {ratio:.3f}, tuned / mmap off {ratio_nommap:.3f}")
    atomic_write_json(args.out, {
        "benchmark": "COPF Taobao step: glibc allocator defaults vs mbrec.train.allocator tuning",
        "command": command_record(), "machine": machine_record(load_before), "threads": args.threads,
        "steps": args.steps, "rounds": args.rounds, "runs": runs, "median_step_wall_s": median,
        "ratio_default_over_tuned": ratio, "ratio_tuned_over_tuned_nommap": ratio_nommap})


if __name__ == "__main__":
    main()
