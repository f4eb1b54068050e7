"""Vectorised training samplers: per-behavior BPR triples and user batches.

A model declares the batches it trains on with a *spec* (:class:`BPRSpec` or :class:`UserSpec`);
the trainer turns the spec into a sampler with :func:`make_sampler`. All randomness comes from one
``numpy.random.Generator`` whose state the trainer checkpoints, so a resumed run draws the same batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch

from mbrec.data.dataset import MultiBehaviorDataset


@dataclass(frozen=True)
class BPRSpec:
    """BPR triples per behavior.

    Attributes:
        behaviors: behaviors that get triples (names; default all).
        positives: S. Each batch user gets ``min(S, deg)`` positives of a behavior drawn uniformly with
            replacement (``cap_by_degree``) or exactly S (with replacement); users of degree 0 get none.
        cap_by_degree: see ``positives``.
        negatives_against: a negative is redrawn while it is a training item of ``same`` behavior, of the
            ``union`` of all behaviors, or of the ``target`` behavior.
        epoch: ``users`` = every user once per epoch, shuffled, in batches of users;
            ``interactions`` = every target training pair once per epoch, shuffled, in batches of pairs
            (one triple each; only ``behaviors=(target,)`` makes sense).
    """

    behaviors: tuple[str, ...] | None = None
    positives: int = 1
    cap_by_degree: bool = True
    negatives_against: Literal["same", "union", "target"] = "same"
    epoch: Literal["users", "interactions"] = "users"


@dataclass(frozen=True)
class UserSpec:
    """Batches of users only (whole-data / non-sampling losses).

    Attributes:
        users: ``all`` users or only users with at least one ``target`` training item.
        drop_last: drop the last partial batch (as the EHCF/GHCF/MBSSL releases do).
    """

    users: Literal["all", "target"] = "target"
    drop_last: bool = False


@dataclass
class Triples:
    """Parallel index tensors of one behavior's BPR triples, each ``[n]``."""

    users: torch.Tensor
    positives: torch.Tensor
    negatives: torch.Tensor

    def to(self, device: torch.device | str) -> Triples:
        return Triples(self.users.to(device), self.positives.to(device), self.negatives.to(device))

    def __len__(self) -> int:
        return int(self.users.shape[0])


@dataclass
class Batch:
    """One training batch: its users ``[B]`` and, for BPR specs, triples per behavior name."""

    users: torch.Tensor
    triples: dict[str, Triples] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.users.to(device), {b: t.to(device) for b, t in self.triples.items()})


class _Membership:
    """Fast ``(user, item) in matrix`` test on sorted int64 keys ``user * N + item``."""

    def __init__(self, mat: sp.csr_matrix) -> None:
        mat = sp.csr_matrix(mat)
        mat.sort_indices()
        rows = np.repeat(np.arange(mat.shape[0], dtype=np.int64), np.diff(mat.indptr))
        self.n_items = mat.shape[1]
        self.keys = rows * self.n_items + mat.indices.astype(np.int64)  # sorted (CSR with sorted indices)

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        if len(self.keys) == 0:
            return np.zeros(len(users), dtype=bool)
        q = users.astype(np.int64) * self.n_items + items.astype(np.int64)
        pos = np.searchsorted(self.keys, q)
        pos[pos == len(self.keys)] = len(self.keys) - 1
        return self.keys[pos] == q


def draw_negatives(users: np.ndarray, n_items: int, membership: _Membership,
                   rng: np.random.Generator, max_rounds: int = 1000) -> np.ndarray:
    """Uniform items rejected (and redrawn) while ``(user, item)`` is in ``membership``."""
    neg = rng.integers(0, n_items, size=len(users))
    bad = np.flatnonzero(membership.contains(users, neg))
    rounds = 0
    while len(bad) and rounds < max_rounds:
        neg[bad] = rng.integers(0, n_items, size=len(bad))
        bad = bad[membership.contains(users[bad], neg[bad])]
        rounds += 1
    if len(bad):
        raise ValueError(f"no negative item found for user {int(users[bad[0]])} after {max_rounds} draws "
                         "(the user has interacted with (almost) every item)")
    return neg


def draw_positives(users: np.ndarray, mat: sp.csr_matrix, per_user: int, cap_by_degree: bool,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """For each user, ``min(S, deg)`` (or S) items of its CSR row drawn with replacement.

    Returns the repeated users and the drawn items (users of degree 0 are skipped).
    """
    deg = np.diff(mat.indptr)[users]
    count = np.minimum(per_user, deg) if cap_by_degree else np.where(deg > 0, per_user, 0)
    rep = np.repeat(users, count)
    rep_deg = np.repeat(deg, count)
    offsets = (rng.random(len(rep)) * rep_deg).astype(np.int64)
    items = mat.indices[mat.indptr[rep] + offsets]
    return rep.astype(np.int64), items.astype(np.int64)


class BPRSampler:
    """Iterates one epoch of :class:`Batch` es with BPR triples (see :class:`BPRSpec`)."""

    def __init__(self, spec: BPRSpec, dataset: MultiBehaviorDataset, batch_size: int) -> None:
        self.spec = spec
        self.dataset = dataset
        self.batch_size = batch_size
        self.behaviors = list(spec.behaviors or dataset.behaviors)
        self.n_items = dataset.n_items
        if spec.negatives_against == "same":
            self.membership = {b: _Membership(dataset.train[b]) for b in self.behaviors}
        else:
            from mbrec.graph.adjacency import union
            ref = union(dataset.matrices()) if spec.negatives_against == "union" else dataset.target_train
            shared = _Membership(ref)
            self.membership = {b: shared for b in self.behaviors}

    def __len__(self) -> int:
        n = self.dataset.target_train.nnz if self.spec.epoch == "interactions" else self.dataset.n_users
        return -(-n // self.batch_size)

    def epoch(self, rng: np.random.Generator) -> Iterator[Batch]:
        if self.spec.epoch == "interactions":
            yield from self._interaction_epoch(rng)
            return
        order = rng.permutation(self.dataset.n_users)
        for start in range(0, len(order), self.batch_size):
            users = order[start:start + self.batch_size]
            triples = {}
            for b in self.behaviors:
                u, pos = draw_positives(users, self.dataset.train[b], self.spec.positives,
                                        self.spec.cap_by_degree, rng)
                neg = draw_negatives(u, self.n_items, self.membership[b], rng)
                triples[b] = Triples(torch.from_numpy(u), torch.from_numpy(pos), torch.from_numpy(neg))
            yield Batch(torch.from_numpy(users.astype(np.int64)), triples)

    def _interaction_epoch(self, rng: np.random.Generator) -> Iterator[Batch]:
        mat = self.dataset.target_train.tocoo()
        order = rng.permutation(mat.nnz)
        b = self.dataset.target
        for start in range(0, len(order), self.batch_size):
            idx = order[start:start + self.batch_size]
            u = mat.row[idx].astype(np.int64)
            pos = mat.col[idx].astype(np.int64)
            neg = draw_negatives(u, self.n_items, self.membership[b], rng)
            triples = {b: Triples(torch.from_numpy(u), torch.from_numpy(pos), torch.from_numpy(neg))}
            yield Batch(torch.from_numpy(np.unique(u)), triples)


class UserSampler:
    """Iterates one epoch of user-only :class:`Batch` es (see :class:`UserSpec`)."""

    def __init__(self, spec: UserSpec, dataset: MultiBehaviorDataset, batch_size: int) -> None:
        self.spec = spec
        self.batch_size = batch_size
        if spec.users == "all":
            self.users = np.arange(dataset.n_users, dtype=np.int64)
        else:
            self.users = np.flatnonzero(np.diff(dataset.target_train.indptr) > 0).astype(np.int64)

    def __len__(self) -> int:
        n = len(self.users)
        return n // self.batch_size if self.spec.drop_last else -(-n // self.batch_size)

    def epoch(self, rng: np.random.Generator) -> Iterator[Batch]:
        order = self.users[rng.permutation(len(self.users))]
        stop = len(self) * self.batch_size
        for start in range(0, min(stop, len(order)), self.batch_size):
            yield Batch(torch.from_numpy(order[start:start + self.batch_size]))


def make_sampler(spec: BPRSpec | UserSpec, dataset: MultiBehaviorDataset,
                 batch_size: int) -> BPRSampler | UserSampler:
    """The sampler for a model's batch spec."""
    if isinstance(spec, BPRSpec):
        return BPRSampler(spec, dataset, batch_size)
    if isinstance(spec, UserSpec):
        return UserSampler(spec, dataset, batch_size)
    raise TypeError(f"unknown batch spec {spec!r}")
