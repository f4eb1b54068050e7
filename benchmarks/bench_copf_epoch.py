r"""COPF Taobao training epochs through the real trainer, and the whole-run time they imply.

``bench_copf_step.py`` times single steps; this one runs what a user runs, ``mbrec train --config
configs/copf_taobao.yaml`` (plus ``--set`` overrides, e.g. ``params.cogcn_layers=[4,1,1]``) for ``--epochs``
epochs in a fresh process, ``--rounds`` times. With ``--compare NAME=VALUE`` every round runs twice, as is
(``base``) and with that environment variable set (``compare``), alternating: an A/B of a process-wide
setting through the whole trainer. The trainer's own clock gives the training seconds
(``history[].seconds``, evaluations excluded); the epoch time is ``(seconds after the last epoch - seconds
after the first) / (epochs - 1)``, so the first epoch's warm-up is left out. Each process's minor page
faults are recorded. ``--device`` (default ``auto``: CUDA when available) is passed on as ``train.device``, and
the record names it (``device``: the GPU, or the CPU model).

Whole-run estimate for the config's ``train.epochs`` (200): ``epochs x median epoch time + evaluations x one
evaluation``, with the evaluation count of the config's schedule (COPF: after epoch 1, every 3rd epoch from
94 on, and the last: 38) and one full-ranking evaluation timed in this process (median of 2).

    LD_PRELOAD=$PWD/build/libmkl_amd_shim.so python benchmarks/bench_copf_epoch.py --threads 2 --epochs 4 --rounds 2
    python benchmarks/bench_copf_epoch.py --device cuda --threads 4 --epochs 4 --rounds 1   # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from benchlib import REPO, command_record, load_average, load_or_skip, machine_record

from mbrec.config import RunConfig, load_run_config
from mbrec.data.dataset import MultiBehaviorDataset
from mbrec.eval import evaluate
from mbrec.models import build_model
from mbrec.train.checkpoint import atomic_write_json
from mbrec.train.runner import describe_device
from mbrec.train.schedule import is_eval_epoch
from mbrec.train.seeding import resolve_device

ROOT = Path(__file__).resolve().parent
CONFIG = REPO / "configs" / "copf_taobao.yaml"


def train_run(setting: str, extra_env: dict[str, str], threads: int, epochs: int, overrides: list[str],
              out_dir: Path, device: torch.device) -> dict:
    """One ``mbrec train`` process (environment plus ``extra_env``): its epoch time, training seconds, faults."""
    env = dict(os.environ, **extra_env)
    name = f"{setting}-{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "mbrec", "train", "--config", str(CONFIG),
           "--set", f"train.epochs={epochs}", "--set", f"train.threads={threads}", "--set", "train.progress=false",
           "--set", f"train.device={device}",
           "--output-dir", str(out_dir), "--name", name]
    for item in overrides:
        cmd += ["--set", item]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    faults = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before
    history = json.loads((out_dir / name / "result.json").read_text())["history"]
    first, last = history[0], history[-1]
    if first["epoch"] != 1 or last["epoch"] != epochs:
        raise SystemExit(f"expected evaluations after epochs 1 and {epochs}, got {[h['epoch'] for h in history]}")
    epoch_s = (last["seconds"] - first["seconds"]) / (epochs - 1)
    print(f"{setting}: {epoch_s:.2f} s/epoch ({faults} page faults in the process)", flush=True)
    return {"setting": setting, "epoch_s": epoch_s, "training_s": last["seconds"], "page_faults": faults}


def evaluation_seconds(cfg: RunConfig, ds: MultiBehaviorDataset, threads: int, device: torch.device) -> float:
    """Median wall time of two full-ranking evaluations of the (untrained) model on ``device``."""
    torch.set_num_threads(threads)
    model = build_model("copf", ds, cfg.params, device=device).eval()
    times = []
    for _ in range(2):
        start = time.perf_counter()
        evaluate(model, ds, ks=cfg.train.ks, device=device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (>= 2)")
    parser.add_argument("--rounds", type=int, default=2, help="runs per setting, alternating")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every run (repeatable)")
    parser.add_argument("--compare", metavar="NAME=VALUE", help="environment setting of a second arm")
    parser.add_argument("--device", default="auto", help="train.device of the runs: auto, cpu, cuda")
    parser.add_argument("--out", default=str(ROOT / "results" / "bench_copf_epoch.json"))
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2")
    device = resolve_device(args.device)
    settings = {"base": {}}
    if args.compare:
        name, sep, value = args.compare.partition("=")
        if not sep or not name:
            parser.error(f"--compare expects NAME=VALUE, got {args.compare!r}")
        settings["compare"] = {name: value}
    ds = load_or_skip("taobao")
    cfg = load_run_config(CONFIG, args.overrides)
    load_before = load_average()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for setting, extra_env in settings.items():
                runs.append(train_run(setting, extra_env, args.threads, args.epochs, args.overrides, Path(tmp),
                                      device))
    eval_s = evaluation_seconds(cfg, ds, args.threads, device)
    n_evals = sum(is_eval_epoch(cfg.train, e) for e in range(cfg.train.epochs))
    summary = {}
    for setting in settings:
        epoch_s = statistics.median(r["epoch_s"] for r in runs if r["setting"] == setting)
        total_h = (epoch_s * cfg.train.epochs + n_evals * eval_s) / 3600
        summary[setting] = {"epoch_s": epoch_s, "run_estimate_h": total_h,
                            "page_faults": statistics.median(r["page_faults"] for r in runs if r["setting"] == setting)}
        print(f"{setting}: {epoch_s:.2f} s/epoch; {cfg.train.epochs} epochs + {n_evals} evaluations x "
              f"{eval_s:.1f} s ~ {total_h:.2f} h")
    ratio = None
    if "compare" in summary:
        ratio = summary["base"]["epoch_s"] / summary["compare"]["epoch_s"]
        print(f"base / compare ({args.compare}) epoch time: {ratio:.3f}x (> 1: the setting is faster)")
    record = {
        "benchmark": "COPF Taobao epochs through mbrec train and the whole-run estimate",
        "command": command_record(), "machine": machine_record(load_before), "device": describe_device(device),
        "config": "configs/copf_taobao.yaml", "overrides": args.overrides, "epochs_per_run": args.epochs,
        "compare": args.compare, "runs": runs, "evaluation_s": eval_s, "evaluations_per_run": n_evals,
        "summary": summary, "ratio_base_over_compare": ratio,
    }
    atomic_write_json(args.out, record)
    print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
