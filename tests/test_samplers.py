"""Samplers: BPR triples per behavior, the interactions epoch, user batches, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from mbrec.data.dataset import MultiBehaviorDataset, binary_csr
from mbrec.data.samplers import BPRSampler, BPRSpec, UserSampler, UserSpec, make_sampler
from mbrec.graph import union

M, N = 60, 40


@pytest.fixture(scope="module")
def ds() -> MultiBehaviorDataset:
    """view ⊇ cart ⊇ buy-ish random data; a few users without buys, one user without anything."""
    rng = np.random.default_rng(0)
    view = rng.random((M, N)) < 0.25
    cart = view & (rng.random((M, N)) < 0.5)
    buy = (rng.random((M, N)) < 0.06) | (cart & (rng.random((M, N)) < 0.2))
    buy[:5] = False                      # users 0..4 never buy
    view[7], cart[7], buy[7] = False, False, False
    buy[10, :] = False
    buy[10, :25] = True                  # one heavy buyer (degree 25 > S)
    test = np.zeros((M, N), dtype=bool)
    test[np.arange(M), rng.integers(0, N, M)] = True
    test &= ~buy
    shape = (M, N)
    mats = {"view": binary_csr(*np.nonzero(view), shape), "cart": binary_csr(*np.nonzero(cart), shape),
            "buy": binary_csr(*np.nonzero(buy), shape)}
    return MultiBehaviorDataset("toy", M, N, ["view", "cart", "buy"], mats,
                                binary_csr(*np.nonzero(test), shape))


def dense(mat: sp.csr_matrix) -> np.ndarray:
    return mat.toarray() > 0


def collect(sampler, seed: int) -> list:
    return list(sampler.epoch(np.random.default_rng(seed)))


@pytest.mark.parametrize("against", ["same", "union", "target"])
def test_bpr_triples_follow_the_spec(ds, against):
    S = 4
    sampler = BPRSampler(BPRSpec(positives=S, negatives_against=against), ds, batch_size=16)
    batches = collect(sampler, 1)
    assert len(batches) == len(sampler) == -(-M // 16)
    rejection = {"same": None, "union": dense(union(ds.matrices())),
                 "target": dense(ds.target_train)}[against]
    for b in ds.behaviors:
        train = dense(ds.train[b])
        deg = train.sum(1)
        reject = train if rejection is None else rejection
        seen = np.zeros(M, dtype=np.int64)
        for batch in batches:
            t = batch.triples[b]
            u, p, n = t.users.numpy(), t.positives.numpy(), t.negatives.numpy()
            assert u.dtype == np.int64 and len(u) == len(p) == len(n) == len(t)
            assert set(u) <= set(batch.users.numpy())
            assert train[u, p].all(), "every positive is a training item of its behavior"
            assert not reject[u, n].any(), "no negative is an item of the rejection matrix"
            np.add.at(seen, u, 1)
        np.testing.assert_array_equal(seen, np.minimum(S, deg))
    assert 7 not in np.concatenate([b.triples["view"].users.numpy() for b in batches])


def test_one_epoch_visits_every_user_once(ds):
    batches = collect(BPRSampler(BPRSpec(), ds, batch_size=16), 2)
    users = np.concatenate([b.users.numpy() for b in batches])
    np.testing.assert_array_equal(np.sort(users), np.arange(M))
    assert not np.array_equal(users, np.arange(M))  # shuffled


def test_exactly_s_positives_without_cap(ds):
    S = 30
    batches = collect(BPRSampler(BPRSpec(behaviors=("buy",), positives=S, cap_by_degree=False), ds, 64), 3)
    counts = np.bincount(batches[0].triples["buy"].users.numpy(), minlength=M)
    deg = np.diff(ds.target_train.indptr)
    np.testing.assert_array_equal(counts, np.where(deg > 0, S, 0))
    assert set(batches[0].triples) == {"buy"}


def test_positives_are_uniform_over_the_row(ds):
    # the heavy buyer has 25 items: 25,000 draws give each ~1,000 (sd ~31)
    rng = np.random.default_rng(4)
    sampler = BPRSampler(BPRSpec(behaviors=("buy",), positives=25_000, cap_by_degree=False), ds, M)
    heavy = next(sampler.epoch(rng)).triples["buy"]
    items = heavy.positives.numpy()[heavy.users.numpy() == 10]
    counts = np.bincount(items, minlength=N)
    assert counts[25:].sum() == 0
    assert counts[:25].min() > 850 and counts[:25].max() < 1150


def test_interactions_epoch_visits_every_target_pair_once(ds):
    spec = BPRSpec(behaviors=("buy",), epoch="interactions", negatives_against="target")
    sampler = make_sampler(spec, ds, 32)
    batches = collect(sampler, 5)
    assert len(batches) == len(sampler) == -(-ds.target_train.nnz // 32)
    u = np.concatenate([b.triples["buy"].users.numpy() for b in batches])
    p = np.concatenate([b.triples["buy"].positives.numpy() for b in batches])
    n = np.concatenate([b.triples["buy"].negatives.numpy() for b in batches])
    coo = ds.target_train.tocoo()
    np.testing.assert_array_equal(np.sort(u * N + p), np.sort(coo.row.astype(np.int64) * N + coo.col))
    assert not dense(ds.target_train)[u, n].any()
    for b in batches:
        np.testing.assert_array_equal(b.users.numpy(), np.unique(b.triples["buy"].users.numpy()))


@pytest.mark.parametrize("users", ["all", "target"])
@pytest.mark.parametrize("drop_last", [False, True])
def test_user_sampler(ds, users, drop_last):
    sampler = make_sampler(UserSpec(users=users, drop_last=drop_last), ds, 16)
    assert isinstance(sampler, UserSampler)
    batches = [b.users.numpy() for b in collect(sampler, 6)]
    pool = np.arange(M) if users == "all" else np.flatnonzero(np.diff(ds.target_train.indptr) > 0)
    assert len(batches) == len(sampler)
    seen = np.concatenate(batches)
    assert len(np.unique(seen)) == len(seen)
    assert set(seen) <= set(pool)
    if drop_last:
        assert len(batches) == len(pool) // 16
        assert all(len(b) == 16 for b in batches)
    else:
        assert len(batches) == -(-len(pool) // 16)
        np.testing.assert_array_equal(np.sort(seen), pool)


def test_same_seed_same_batches_other_seed_other_batches(ds):
    sampler = BPRSampler(BPRSpec(positives=3, negatives_against="union"), ds, 16)

    def flat(seed):
        out = []
        for b in collect(sampler, seed):
            out.append(b.users)
            for name in ds.behaviors:
                t = b.triples[name]
                out += [t.users, t.positives, t.negatives]
        return torch.cat(out)

    assert torch.equal(flat(7), flat(7))
    assert not torch.equal(flat(7), flat(8))


def test_unknown_spec_is_rejected(ds):
    with pytest.raises(TypeError, match="unknown batch spec"):
        make_sampler(object(), ds, 16)
