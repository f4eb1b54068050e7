"""The synthetic funnel: determinism, shape of the funnel, splits and learnability."""

from __future__ import annotations

import numpy as np
import pytest

from mbrec.data.synthetic import SYNTHETIC_PRESETS, make_synthetic
from mbrec.data.validate import is_warning, validate_dataset


def hit_rate_at_k(ds, scores: np.ndarray, k: int = 10) -> float:
    """HR@k over test users, with each user's target training items excluded."""
    scores = np.where(ds.target_train.toarray() > 0, -np.inf, scores.astype(np.float64))
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    test = ds.test.toarray() > 0
    users = ds.eval_users()
    return float(np.mean([test[u, top[u]].any() for u in users]))


def test_same_seed_same_data_and_different_seed_differs():
    a, b = make_synthetic(seed=5), make_synthetic(seed=5)
    assert a.fingerprint() == b.fingerprint()
    assert make_synthetic(seed=6).fingerprint() != a.fingerprint()


def test_funnel_density_and_activity():
    ds = make_synthetic()
    counts = {b: ds.train[b].nnz for b in ds.behaviors}
    assert counts["view"] > counts["cart"] > counts["buy"] > 0
    views_per_user = np.diff(ds.train["view"].indptr)
    assert 30 <= views_per_user.mean() <= 60
    assert views_per_user.max() > 3 * np.median(views_per_user)     # a heavy tail of active users
    cart_share = counts["cart"] / counts["view"]
    assert 0.15 < cart_share < 0.4
    # most carts were viewed first, and most buys (train + test) were carted
    assert ds.train["cart"].multiply(ds.train["view"]).nnz / counts["cart"] > 0.9
    buys = ds.train["buy"] + ds.test
    assert buys.multiply(ds.train["cart"]).nnz / buys.nnz > 0.9


def test_leave_one_out_split():
    ds = make_synthetic()
    assert validate_dataset(ds) == []
    assert np.all(np.diff(ds.test.indptr) == 1)                       # one test buy per user
    assert np.all(np.diff(ds.target_train.indptr) >= 1)               # at least one buy left in train
    assert ds.test.multiply(ds.target_train).nnz == 0
    assert ds.summary()["test_pairs_in_behavior"]["view"] > 0.9 * ds.n_users


def test_validation_hold_out():
    ds = make_synthetic(valid=True)
    assert not [p for p in validate_dataset(ds) if not is_warning(p)]
    assert ds.valid.nnz > 0.5 * ds.n_users
    assert ds.valid.multiply(ds.test).nnz == 0 and ds.valid.multiply(ds.target_train).nnz == 0


def test_popularity_and_co_purchase_beat_random():
    ds = make_synthetic()
    rng = np.random.default_rng(0)
    buys = ds.target_train.toarray()
    popularity = np.tile(buys.sum(axis=0), (ds.n_users, 1))
    co_purchase = buys @ (buys.T @ buys) + 1e-3 * popularity
    random_hr = hit_rate_at_k(ds, rng.random((ds.n_users, ds.n_items)))
    assert random_hr < 0.06
    assert hit_rate_at_k(ds, popularity) > 2 * random_hr + 0.05
    assert hit_rate_at_k(ds, co_purchase) > hit_rate_at_k(ds, popularity)
    cart_history = ds.train["cart"].toarray() + 1e-3 * popularity
    assert hit_rate_at_k(ds, cart_history) > 0.5


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_presets_are_valid(preset):
    ds = make_synthetic(**SYNTHETIC_PRESETS[preset])
    assert not [p for p in validate_dataset(ds) if not is_warning(p)]
    assert ds.n_users == SYNTHETIC_PRESETS[preset]["n_users"]


def test_default_dataset_is_the_small_preset():
    default, small = make_synthetic(), make_synthetic(**SYNTHETIC_PRESETS["small"])
    assert (default.n_users, default.n_items) == (600, 400)
    assert all((default.train[b] != small.train[b]).nnz == 0 for b in default.behaviors)
    sizes = {name: (p["n_users"], p["n_items"]) for name, p in SYNTHETIC_PRESETS.items()}
    assert sizes == {"tiny": (60, 50), "small": (600, 400), "medium": (3000, 2000)}


def test_other_behavior_lists():
    two = make_synthetic(n_users=50, n_items=40, mean_views=10, behaviors=("click", "buy"))
    assert two.behaviors == ["click", "buy"] and two.train["click"].nnz > two.train["buy"].nnz
    four = make_synthetic(n_users=50, n_items=40, mean_views=10, behaviors=("view", "fav", "cart", "buy"))
    assert four.target == "buy" and four.test.nnz == 50
    with pytest.raises(ValueError, match="funnel rates"):
        make_synthetic(behaviors=("view", "cart", "buy"), funnel_rates=[0.3])
