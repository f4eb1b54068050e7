"""The seen-item breakdown (mbrec.eval.seen) on a hand-computed example, and its agreement with evaluate()."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mbrec.data.dataset import MultiBehaviorDataset, binary_csr
from mbrec.data.synthetic import make_synthetic
from mbrec.eval import evaluate
from mbrec.eval.seen import seen_breakdown
from mbrec.models import build_model
from mbrec.models.base import Recommender

SCORES = torch.tensor([[9.0, 8, 1, 7, 6, 5],
                       [0.0, 9, 2, 3, 1, 8],
                       [1.0, 2, 3, 4, 5, 6]])


class FixedScores(Recommender):
    def __init__(self, dataset) -> None:
        super().__init__(dataset)
        self.anchor = nn.Parameter(torch.zeros(1))         # the evaluator reads the device from a parameter

    def score_users(self, users: torch.Tensor) -> torch.Tensor:
        return SCORES[users]


def tiny() -> MultiBehaviorDataset:
    shape = (3, 6)

    def pairs(*uv):
        return binary_csr(np.array([u for u, _ in uv]), np.array([v for _, v in uv]), shape)

    train = {"view": pairs((0, 2), (0, 3), (1, 0), (1, 5), (2, 4), (2, 5)),
             "cart": pairs((0, 3), (2, 4)),
             "buy": pairs((0, 0), (1, 1))}
    return MultiBehaviorDataset("tiny", 3, 6, ["view", "cart", "buy"], train, pairs((0, 2), (1, 3), (2, 4)))


def test_breakdown_matches_the_hand_computed_example():
    """k = 2. User 0 (item 0 masked): top 1, 3; test item 2 (viewed) at rank 4, but 2nd of its viewed items
    {2, 3}. User 1 (item 1 masked): top 5, 3; test item 3 (never seen) at rank 1. User 2: top 5, 4; test item
    4 (viewed and carted) at rank 1, first of its viewed {4, 5} and of its carted {4}."""
    out = seen_breakdown(FixedScores(tiny()), tiny(), k=2)
    assert (out["pairs"], out["users"]) == (3, 3)
    assert out["hit"] == pytest.approx(2 / 3)
    assert out["behaviors"]["view"] == pytest.approx({"share": 2 / 3, "hit": 1 / 2, "top_slots": 4 / 3,
                                                      "hit_within": 1.0})
    assert out["behaviors"]["cart"] == pytest.approx({"share": 1 / 3, "hit": 1.0, "top_slots": 2 / 3,
                                                      "hit_within": 1.0})
    assert out["unseen"] == pytest.approx({"share": 1 / 3, "hit": 1.0, "top_slots": 2 / 3})


def test_overall_hit_rate_equals_the_evaluators_and_shares_add_up():
    ds = make_synthetic(80, 60, seed=2, mean_views=10.0)
    ds.train["cart"] = ds.train["cart"].multiply(ds.train["view"]).tocsr()    # cart ⊂ view: unseen = not viewed
    torch.manual_seed(0)
    model = build_model("lightgcn_m", ds, {"dim": 8})
    out = seen_breakdown(model, ds, k=10, batch_size=32)
    assert out["hit"] == pytest.approx(evaluate(model, ds, ks=[10]).metrics["HR@10"])
    view = out["behaviors"]["view"]
    assert out["unseen"]["share"] == pytest.approx(1 - view["share"])
    assert view["share"] * view["hit"] + out["unseen"]["share"] * out["unseen"]["hit"] == pytest.approx(out["hit"])
    assert view["top_slots"] + out["unseen"]["top_slots"] == pytest.approx(10.0)
    assert view["hit_within"] >= view["hit"]                  # fewer competitors among the viewed items
