"""Evaluation: full-ranking evaluator and metrics."""

from mbrec.eval.evaluator import EvalResult, evaluate, exact_ranks
from mbrec.eval.metrics import METRICS, ranking_metrics

__all__ = ["METRICS", "EvalResult", "evaluate", "exact_ranks", "ranking_metrics"]
