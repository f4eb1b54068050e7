"""``mbrec train``, ``mbrec evaluate``, ``mbrec recommend`` and ``mbrec models``."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from mbrec.config import ConfigError, load_run_config


def add_run_parsers(sub) -> None:
    p = sub.add_parser("train", help="train a model (YAML config + --set overrides)")
    p.add_argument("--config", help="YAML run config (see configs/)")
    p.add_argument("--model", help="model name (see `mbrec models`)")
    p.add_argument("--dataset", help="dataset name under the data root, a dataset folder, or synthetic[:tiny|:medium]")
    p.add_argument("--data-root", help="folder holding datasets (default: $MBREC_DATA_ROOT or ../shared/datasets)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=10 --set params.tau=0.2")
    p.add_argument("--output-dir", help="where run folders go (default runs/)")
    p.add_argument("--results-dir", help="also write the result record here (e.g. benchmarks/results)")
    p.add_argument("--name", help="run name (default <model>-<dataset>-s<seed>)")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a checkpoint on the test (or valid) split")
    p.add_argument("--checkpoint", required=True, help="best.pt or last.pt of a run")
    p.add_argument("--split", default="test", choices=["test", "valid"])
    p.add_argument("--ks", default="10,20,50", help="cut-offs, comma separated")
    p.add_argument("--data-root")
    p.add_argument("--device", default="auto")
    p.add_argument("--per-user", help="write per-user metrics to this CSV file")
    p.add_argument("--groups", action="store_true",
                   help="also print metrics per user group of target-training size (<9, 9-12, 13-16, 17-19, >=20)")
    p.add_argument("--groups-plot", metavar="PNG", help="plot the group metrics into this file")
    p.add_argument("--seen", action="store_true",
                   help="also print where the held-out items sit against the users' auxiliary histories "
                        "(share seen per behavior, hit rates, top-k slots; at the first cut-off of --ks)")
    p.set_defaults(handler=cmd_evaluate)

    p = sub.add_parser("recommend", help="top-k items for users, in the original ids")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--users", help="comma-separated user ids (original ids when the data has them)")
    p.add_argument("--users-file", help="file with one user id per line")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--format", default="csv", choices=["csv", "json"])
    p.add_argument("--out", help="output file (default: stdout)")
    p.add_argument("--exclude-behaviors", default="",
                   help="also exclude items of these behaviors (target items are always excluded)")
    p.add_argument("--data-root")
    p.add_argument("--device", default="auto")
    p.set_defaults(handler=cmd_recommend)

    p = sub.add_parser("models", help="list the registered models")
    p.set_defaults(handler=cmd_models)


def cmd_train(args: argparse.Namespace) -> int:
    from mbrec.train.runner import run_training

    base = {"model": args.model, "dataset": args.dataset, "output_dir": args.output_dir,
            "results_dir": args.results_dir, "name": args.name}
    overrides = list(args.set)
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    if args.no_progress or not sys.stderr.isatty():
        overrides.append("train.progress=false")
    cfg = load_run_config(args.config, overrides=overrides, base=base)
    command = " ".join(shlex.quote(a) for a in ["mbrec", *sys.argv[1:]])
    record = run_training(cfg, resume=args.resume, command=command)
    print(json.dumps({"run": cfg.run_name(), "selected_epoch": record["selected_epoch"],
                      "protocol": record["protocol"], "metrics": record["metrics"],
                      "wall_seconds": record["wall_seconds"]}, indent=2))
    return 0


def _parse_ks(text: str) -> list[int]:
    try:
        ks = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise ConfigError(f"--ks {text!r}: expected comma-separated integers") from None
    if not ks or min(ks) < 1:
        raise ConfigError(f"--ks {text!r}: expected positive integers")
    return ks


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mbrec.eval.evaluator import evaluate
    from mbrec.train.runner import load_trained

    if not Path(args.checkpoint).exists():
        raise FileNotFoundError(2, "not found", args.checkpoint)
    model, dataset, cfg = load_trained(args.checkpoint, device=args.device, data_root=args.data_root)
    res = evaluate(model, dataset, split=args.split, ks=_parse_ks(args.ks),
                   batch_size=cfg.train.eval_batch_size, mask_behaviors=cfg.data.mask_behaviors)
    print(json.dumps({"checkpoint": args.checkpoint, "dataset": dataset.name, "split": args.split,
                      "users": int(len(res.users)), "metrics": res.metrics}, indent=2))
    if args.per_user:
        from mbrec.serve.export import write_per_user_csv

        write_per_user_csv(args.per_user, res, dataset)
    if args.groups or args.groups_plot:
        from mbrec.eval.groups import group_metrics, plot_groups

        rows = group_metrics(res, dataset)
        print(json.dumps({"groups": rows}, indent=2))
        if args.groups_plot:
            plot_groups(rows, args.groups_plot)
    if args.seen:
        from mbrec.eval.seen import seen_breakdown

        breakdown = seen_breakdown(model, dataset, k=_parse_ks(args.ks)[0], split=args.split,
                                   batch_size=cfg.train.eval_batch_size, mask_behaviors=cfg.data.mask_behaviors)
        print(json.dumps({"seen": breakdown}, indent=2))
    return 0


def _read_users(args: argparse.Namespace) -> list[str]:
    users: list[str] = []
    if args.users:
        users += [u.strip() for u in args.users.split(",") if u.strip()]
    if args.users_file:
        with open(args.users_file, encoding="utf-8") as fh:
            users += [line.strip() for line in fh if line.strip()]
    if not users:
        raise ConfigError("recommend: give --users or --users-file")
    return users


def cmd_recommend(args: argparse.Namespace) -> int:
    from mbrec.serve.recommend import Recommendations, recommend, write_recommendations
    from mbrec.train.runner import load_trained

    if not Path(args.checkpoint).exists():
        raise FileNotFoundError(2, "not found", args.checkpoint)
    if args.k < 1:
        raise ConfigError("--k must be >= 1")
    model, dataset, _ = load_trained(args.checkpoint, device=args.device, data_root=args.data_root)
    exclude = [b for b in args.exclude_behaviors.split(",") if b]
    recs: Recommendations = recommend(model, dataset, _read_users(args), k=args.k, exclude_behaviors=exclude)
    write_recommendations(recs, args.format, args.out)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from mbrec.models.base import available_models, model_class

    for name in available_models():
        doc = (model_class(name).__doc__ or "").strip().splitlines()
        print(f"{name:18s} {doc[0] if doc else ''}")
    return 0
