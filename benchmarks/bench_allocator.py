r"""The allocator settings (:mod:`mbrec.train.allocator`): COPF Taobao step with and without them.

Runs ``bench_copf_step.py`` (one COPF training step on Taobao: sample, forward, backward, Adam; medians
over ``--steps``) in fresh processes, in turn (``--rounds`` times each) with

* ``default``: ``MBREC_MALLOC_TUNING=0`` (glibc's defaults, no huge pages);
* ``tuned``: the glibc tuning, mmap kept for blocks above 32 MiB, no huge pages (``THP_MEM_ALLOC_ENABLE=0``);
* ``tuned_nommap``: the tuning with mmap off (``MBREC_MALLOC_MMAP=0``), no huge pages;
* ``tuned_thp``: the tuning plus PyTorch's transparent huge pages for blocks of 2 MB and more
  (``THP_MEM_ALLOC_ENABLE=1``, what ``import mbrec`` asks for by default);

and reports the median step time of each setting, the ratio of each setting's median to ``tuned``'s
(``tuned / X`` > 1: X is faster) and the minor page faults of each process.

    python benchmarks/bench_allocator.py --threads 2 --steps 5 --rounds 2 [--settings tuned tuned_thp]
"""

from __future__ import annotations

import argparse
import os
import statistics
from pathlib import Path

from benchlib import command_record, copf_step_in_subprocess, load_average, machine_record

from mbrec.train.checkpoint import atomic_write_json

ROOT = Path(__file__).resolve().parent


SETTINGS = {"default": {"MBREC_MALLOC_TUNING": "0", "THP_MEM_ALLOC_ENABLE": "0"},
            "tuned": {"MBREC_MALLOC_TUNING": "1", "MBREC_MALLOC_MMAP": "1", "THP_MEM_ALLOC_ENABLE": "0"},
            "tuned_nommap": {"MBREC_MALLOC_TUNING": "1", "MBREC_MALLOC_MMAP": "0", "THP_MEM_ALLOC_ENABLE": "0"},
            "tuned_thp": {"MBREC_MALLOC_TUNING": "1", "MBREC_MALLOC_MMAP": "1", "THP_MEM_ALLOC_ENABLE": "1"}}


def one_run(setting: str, threads: int, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.update(SETTINGS[setting])
    record, faults = copf_step_in_subprocess(env, threads, steps)
    tuned = setting != "default"
    if record["machine"]["malloc_tuning"] != tuned:
        raise SystemExit(f"the step benchmark ran with malloc_tuning={record['machine']['malloc_tuning']}")
    if record["machine"]["huge_pages"] != (SETTINGS[setting]["THP_MEM_ALLOC_ENABLE"] == "1"):
        raise SystemExit(f"the step benchmark ran with huge_pages={record['machine']['huge_pages']}")
    return {"step_wall_s": record["medians"]["step"]["wall_s"], "kernels_wall_s":
            record["medians"]["sparse"]["wall_s"] + record["medians"]["contrastive"]["wall_s"],
            "minor_page_faults": faults}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="processes per setting, alternating")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS),
                        help="settings to compare (tuned is always included: the ratios refer to it)")
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_allocator.json"))
    args = parser.parse_args(argv)
    settings = ["tuned", *(name for name in args.settings if name != "tuned")]
    load_before = load_average()
    runs: dict[str, list[dict]] = {name: [] for name in settings}
    for r in range(args.rounds):
        for name in settings:
            runs[name].append(one_run(name, args.threads, args.steps))
            print(f"round {r + 1} {name}: step {runs[name][-1]['step_wall_s']:.3f} s, "
                  f"{runs[name][-1]['minor_page_faults']:,} minor page faults", flush=True)
    median = {name: statistics.median(x["step_wall_s"] for x in values) for name, values in runs.items()}
    over = {name: median["tuned"] / median[name] for name in settings if name != "tuned"}
    print("median step: " + ", ".join(f"{name} {median[name]:.3f} s" for name in settings) + " -> "
          + ", ".join(f"tuned / {name} {value:.3f}" for name, value in over.items()))
    atomic_write_json(args.out, {
        "benchmark": "COPF Taobao step: allocator defaults vs mbrec.train.allocator settings",
        "command": command_record(), "machine": machine_record(load_before), "threads": args.threads,
        "steps": args.steps, "rounds": args.rounds, "settings": {name: SETTINGS[name] for name in settings},
        "runs": runs, "median_step_wall_s": median, "ratio_tuned_over": over})


if __name__ == "__main__":
    main()
