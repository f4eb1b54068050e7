"""Evaluation: full-ranking evaluator and metrics."""

from mbrec.eval.evaluator import EvalResult, evaluate, exact_ranks
from mbrec.eval.groups import group_metrics
from mbrec.eval.metrics import METRICS, ranking_metrics
from mbrec.eval.noise import inject_noise, relative_drop

__all__ = ["METRICS", "EvalResult", "evaluate", "exact_ranks", "group_metrics", "inject_noise", "ranking_metrics",
           "relative_drop"]
