"""Evaluation: full-ranking evaluator and metrics."""

from mbrec.eval.evaluator import EvalResult, ScoredBatch, evaluate, exact_ranks, scored_batches
from mbrec.eval.groups import group_metrics
from mbrec.eval.metrics import METRICS, ranking_metrics
from mbrec.eval.noise import inject_noise, relative_drop
from mbrec.eval.seen import seen_breakdown

__all__ = ["METRICS", "EvalResult", "ScoredBatch", "evaluate", "exact_ranks", "group_metrics", "inject_noise",
           "ranking_metrics", "relative_drop", "scored_batches", "seen_breakdown"]
