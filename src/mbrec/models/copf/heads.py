r"""Alternative prediction heads on K table pairs: COPF's Table 4 aggregations, Table 5 MTL modules and
the plain dot product of COPF-D (copf.md §8.3-8.4). Every head scores task k's pair (u, v) as
``mult · Σ_d o^k_d`` unless stated; ``x_j = EU[j]_u ∘ EV[j]_v`` is behavior j's plain expert.

Linear heads (exact, all-item scoring by matmuls; see :class:`TaskExperts`):

* :class:`OwnExpertHead` (``dot``, ``agg=none``): :math:`o^k = x_k`;
* :class:`SumHead` (``agg=sum``): :math:`o^k = \sum_j x_j` (every task gets the same score);
* :class:`LinearHead` (``agg=linear``): :math:`o^k = x_k + \sum_{j\ne k} x_j P_{k,j}`, ``P [d, d]``; since the
  tower sums over d, :math:`\sum_d (x P)_d = \langle x, P\mathbf 1\rangle` (computed that way);
* :class:`BilinearHead` (``bilinear``, GHCF-style): :math:`o^k = EU[k]_u \circ r_k \circ EV[k]_v`,
  ``r_k`` init 1.

Gated heads (K slots, softmax gate over ``[EU[k]_u ‖ EV[k]_v]``, as DFME's gate):

* :class:`ProjectionHead` (``agg=projection``): slot j ≠ k is
  ``0.01·p(EU[j]→EU[k])_u ∘ 0.01·p(EV[j]→EV[k])_v`` with the row-wise projection
  :math:`p(a\to b) = \frac{\langle a,b\rangle}{\lVert b\rVert^2 + 10^{-12}} b`; one shared ``W_g``, ``b_g``;
* :class:`PMEHead` (``pme``, PKEF): the same, plus PKEF's unique-part BPR: the residual
  ``0.01·(a − p(a→b))`` of behavior j is scored on pairs of "behavior k without behavior j", weight ``3λ_k``;
* :class:`MESIHead` (``mesi``, CIGF): plain experts ``x_j``, a separate gate ``W_g^k``, ``b_g^k`` per task.

Non-linear heads (all-item scoring by chunks of explicit pairs):

* :class:`VanillaFusionHead` (``agg=vanilla``):
  :math:`a = \mathrm{softmax}_j(\langle x_k W_Q, x_j W_K\rangle/\sqrt d)`, :math:`o^k = \sum_j a_j x_j`,
  one ``W_Q``, ``W_K`` shared by all tasks [D];
* :class:`SharedInputHead` (``sb``, ``mmoe``, ``ple``): input :math:`\bar e = \sum_k w_k E[k]` with
  ``w = softmax`` of K learnable scalars, ``z = ē_u ∘ ē_v``; experts ``f(z) = LeakyReLU_{0.1}(z W + b)``;
  tower ``t_k(h) = h·w_k + c_k`` (no ×mult). SB: one shared expert; MMoE: ``num_experts`` shared experts
  and a softmax gate ``z G_k`` per task; PLE (one CGC level): one shared + one task expert, gate ``z G_k``
  over the two.

Initialisation [D]: weight matrices Xavier-uniform, biases and mixing scalars zero; L2 covers the weight
matrices (``regularized``), never biases, ``r_k`` or mixing scalars.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from mbrec.data.samplers import Batch
from mbrec.losses import bpr_loss
from mbrec.models.copf.dfme import PredictionHead, TablePair, TaskExperts, gate_logits

PROJECTION_SCALE = 0.01
PAIR_ELEMENT_BUDGET = 1 << 24  # floats of one [P, K, d] evaluation chunk of a non-linear head


def project(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r"""Row-wise :math:`p(a\to b) = \frac{\langle a,b\rangle}{\lVert b\rVert^2+10^{-12}} b`, ``[R, d]``."""
    return (a * b).sum(-1, keepdim=True) / (b.pow(2).sum(-1, keepdim=True) + 1e-12) * b


def chunked_all_scores(score_pairs: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], users: torch.Tensor,
                       n_items: int, pair_cost: int) -> torch.Tensor:
    """``[B, N]`` scores from a per-pair function, evaluated on item chunks of explicit pairs."""
    chunk = max(1, PAIR_ELEMENT_BUDGET // max(len(users) * pair_cost, 1))
    parts = []
    for start in range(0, n_items, chunk):
        items = torch.arange(start, min(start + chunk, n_items), device=users.device)
        scores = score_pairs(users.repeat_interleave(len(items)), items.repeat(len(users)))
        parts.append(scores.view(len(users), len(items)))
    return torch.cat(parts, dim=1)


def _xavier_(*weights: torch.Tensor) -> None:
    """Xavier-uniform on every trailing ``[fan_in, fan_out]`` matrix of the given tensors."""
    with torch.no_grad():
        for weight in weights:
            for matrix in weight.view(-1, *weight.shape[-2:]):
                nn.init.xavier_uniform_(matrix)


class OwnExpertHead(PredictionHead):
    """:math:`\\hat y^k = \\mathrm{mult}\\,\\langle EU[k]_u, EV[k]_v\\rangle` (``dot``, ``agg=none``)."""

    def __init__(self, mult: float = 300.0) -> None:
        super().__init__()
        self.mult = mult

    def prepare(self, tables: Sequence[TablePair], tasks: Sequence[int]) -> dict[int, TaskExperts]:
        return {k: TaskExperts([tables[k]]) for k in tasks}


class SumHead(OwnExpertHead):
    """:math:`o^k = \\sum_j x_j` with unit weights (Table 4 "summation")."""

    def prepare(self, tables: Sequence[TablePair], tasks: Sequence[int]) -> dict[int, TaskExperts]:
        return {k: TaskExperts(list(tables)) for k in tasks}


class LinearHead(PredictionHead):
    """:math:`o^k = x_k + \\sum_{j \\ne k} x_j P_{k,j}` (Table 4 "linear transformation")."""

    def __init__(self, n_behaviors: int, dim: int = 64, mult: float = 300.0) -> None:
        super().__init__()
        self.mult = mult
        self.transfer = nn.Parameter(torch.empty(n_behaviors, max(n_behaviors - 1, 1), dim, dim))  # P_{k,j}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _xavier_(self.transfer)

    def regularized(self) -> list[torch.Tensor]:
        return [self.transfer]

    def prepare(self, tables: Sequence[TablePair], tasks: Sequence[int]) -> dict[int, TaskExperts]:
        state = {}
        for k in tasks:
            others = [j for j in range(len(tables)) if j != k]
            slots = [tables[k]] + [(tables[j][0] * self.transfer[k, i].sum(1), tables[j][1])
                                   for i, j in enumerate(others)]
            state[k] = TaskExperts(slots)
        return state


class BilinearHead(PredictionHead):
    """:math:`\\hat y^k = \\mathrm{mult}\\sum_d EU[k]_{u,d}\\, r_{k,d}\\, EV[k]_{v,d}` (w/o DFME; Table 5)."""

    def __init__(self, n_behaviors: int, dim: int = 64, mult: float = 300.0) -> None:
        super().__init__()
        self.mult = mult
        self.relation = nn.Parameter(torch.ones(n_behaviors, dim))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.relation)

    def prepare(self, tables: Sequence[TablePair], tasks: Sequence[int]) -> dict[int, TaskExperts]:
        return {k: TaskExperts([(tables[k][0] * self.relation[k], tables[k][1])]) for k in tasks}


class ProjectionHead(PredictionHead):
    """Projection fusion (Table 4): projected experts of the other behaviors, shared gate."""

    def __init__(self, n_behaviors: int, dim: int = 64, mult: float = 300.0) -> None:
        super().__init__()
        self.mult = mult
        self.gate_weight = nn.Parameter(torch.empty(2 * dim, n_behaviors))
        self.gate_bias = nn.Parameter(torch.zeros(n_behaviors))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.gate_weight)
        nn.init.zeros_(self.gate_bias)

    def regularized(self) -> list[torch.Tensor]:
        return [self.gate_weight]

    def prepare(self, tables: Sequence[TablePair], tasks: Sequence[int]) -> dict[Any, Any]:
        state: dict[Any, Any] = {"tables": list(tables)}
        for k in tasks:
            own_u, own_v = tables[k]
            slots = [tables[k]] + [(PROJECTION_SCALE * project(tables[j][0], own_u),
                                    PROJECTION_SCALE * project(tables[j][1], own_v))
                                   for j in range(len(tables)) if j != k]
            state[k] = TaskExperts(slots, *gate_logits(self.gate_weight, self.gate_bias, own_u, own_v))
        return state


class _PairTable:
    """A binary ``M x N`` matrix for sampling on torch: CSR offsets and sorted ``user·N + item`` keys."""

    def __init__(self, matrix: sp.csr_matrix) -> None:
        mat = sp.csr_matrix(matrix)
        mat.sort_indices()
        self.n_items = mat.shape[1]
        self.indptr = torch.from_numpy(mat.indptr.astype(np.int64))
        self.indices = torch.from_numpy(mat.indices.astype(np.int64))
        rows = torch.repeat_interleave(torch.arange(mat.shape[0]), self.indptr.diff())
        self.keys = rows * self.n_items + self.indices

    def contains(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        query = users * self.n_items + items
        pos = torch.searchsorted(self.keys, query).clamp_(max=max(len(self.keys) - 1, 0))
        return self.keys[pos] == query if len(self.keys) else torch.zeros_like(query, dtype=torch.bool)

    def sample(self, users: torch.Tensor, per_user: int, max_rounds: int = 100) -> tuple[torch.Tensor, ...]:
        """``min(S, deg)`` positives per user (with replacement) and as many rejected-uniform negatives."""
        degree = self.indptr[users + 1] - self.indptr[users]
        count = degree.clamp(max=per_user)
        rep = torch.repeat_interleave(users, count)
        offsets = (torch.rand(len(rep)) * torch.repeat_interleave(degree, count)).long()
        positives = self.indices[self.indptr[rep] + offsets]
        negatives = torch.randint(self.n_items, (len(rep),))
        bad = self.contains(rep, negatives).nonzero().squeeze(1)
        for _ in range(max_rounds):
            if len(bad) == 0:
                break
            negatives[bad] = torch.randint(self.n_items, (len(bad),))
            bad = bad[self.contains(rep[bad], negatives[bad])]
        return rep, positives, negatives


class PMEHead(ProjectionHead):
    """PKEF's PME (Table 5): projection fusion + BPR of the unique parts on "k without j" pairs.

    ``U(k) = {j ≠ k : B_k ∧ ¬B_j non-empty}``; per batch user ``min(S, |B_{k∖j}(u)|)`` positives from
    ``B_{k∖j}(u)`` with replacement, negatives uniform, rejected against ``B_{k∖j}(u)`` (torch's RNG).
    """

    def __init__(self, matrices: Sequence[sp.csr_matrix], behaviors: Sequence[str], dim: int = 64,
                 mult: float = 300.0, samples_per_user: int = 40) -> None:
        super().__init__(len(matrices), dim, mult)
        self.behaviors = list(behaviors)
        self.samples_per_user = samples_per_user
        self.unique: dict[tuple[int, int], _PairTable] = {}
        for k, mat_k in enumerate(matrices):
            for j, mat_j in enumerate(matrices):
                if j != k:
                    only_k = (mat_k - mat_k.multiply(mat_j)).tocsr()
                    only_k.eliminate_zeros()
                    if only_k.nnz:
                        self.unique[(k, j)] = _PairTable(only_k)

    def extra_losses(self, state: dict[Any, Any], batch: Batch, task_weights: Sequence[float]) -> dict:
        tables, out = state["tables"], {}
        batch_users = batch.users.cpu()
        for (k, j), pairs in self.unique.items():
            if task_weights[k] == 0:
                continue
            drawn = pairs.sample(batch_users, self.samples_per_user)                 # users, pos, neg
            users, positives, negatives = torch.stack([t.long() for t in drawn]).to(tables[k][0].device).unbind(0)
            res_u = PROJECTION_SCALE * (tables[j][0] - project(tables[j][0], tables[k][0]))
            res_v = PROJECTION_SCALE * (tables[j][1] - project(tables[j][1], tables[k][1]))
            rows = res_u[users]
            pos = self.mult * (rows * res_v[positives]).sum(-1)
            neg = self.mult * (rows * res_v[negatives]).sum(-1)
            out[f"bpr/{self.behaviors[k]}_without_{self.behaviors[j]}"] = task_weights[k] * bpr_loss(pos, neg)
        return out


class MESIHead(PredictionHead):
    """CIGF's MESI (Table 5): plain experts of all behaviors, one gate per task from its own tables."""

    def __init__(self, n_behaviors: int, dim: int = 64, mult: float = 300.0) -> None:
        super().__init__()
        self.mult = mult
        self.gate_weight = nn.Parameter(torch.empty(n_behaviors, 2 * dim, n_behaviors))
        self.gate_bias = nn.Parameter(torch.zeros(n_behaviors, n_behaviors))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _xavier_(self.gate_weight)
        nn.init.zeros_(self.gate_bias)

    def regularized(self) -> list[torch.Tensor]:
        return [self.gate_weight]

    def prepare(self, tables: Sequence[TablePair], tasks: Sequence[int]) -> dict[int, TaskExperts]:
        state = {}
        for k in tasks:
            slots = [tables[k]] + [tables[j] for j in range(len(tables)) if j != k]
            state[k] = TaskExperts(slots, *gate_logits(self.gate_weight[k], self.gate_bias[k], *tables[k]))
        return state


class VanillaFusionHead(PredictionHead):
    """PKEF's vanilla attention fusion (Table 4): attention of the own expert over all plain experts."""

    def __init__(self, dim: int = 64, mult: float = 300.0) -> None:
        super().__init__()
        self.mult = mult
        self.query = nn.Parameter(torch.empty(dim, dim))
        self.key = nn.Parameter(torch.empty(dim, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _xavier_(self.query, self.key)

    def regularized(self) -> list[torch.Tensor]:
        return [self.query, self.key]

    def prepare(self, tables: Sequence[TablePair], tasks: Sequence[int]) -> dict[Any, Any]:
        return {"tables": list(tables), **{k: None for k in tasks}}

    def pair_scores(self, state, k: int, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        experts = torch.stack([u[users] * v[items] for u, v in state["tables"]], 1)               # [P, K, d]
        query = experts[:, k] @ self.query                                                          # [P, d]
        logits = ((experts @ self.key) * query.unsqueeze(1)).sum(-1) / math.sqrt(experts.shape[-1])  # [P, K]
        fused = (torch.softmax(logits, dim=-1).unsqueeze(-1) * experts).sum(1)
        return self.mult * fused.sum(-1)

    def all_scores(self, state, k: int, users: torch.Tensor) -> torch.Tensor:
        tables = state["tables"]
        cost = len(tables) * tables[0][0].shape[1]
        return chunked_all_scores(lambda u, v: self.pair_scores(state, k, u, v), users,
                                  tables[0][1].shape[0], cost)


class SharedInputHead(PredictionHead):
    """Shared-input MTL modules on :math:`z = \\bar e_u \\circ \\bar e_v`: ``sb``, ``mmoe`` or ``ple``."""

    def __init__(self, kind: Literal["sb", "mmoe", "ple"], n_behaviors: int, dim: int = 64,
                 num_experts: int = 3) -> None:
        super().__init__()
        if kind not in ("sb", "mmoe", "ple"):
            raise ValueError(f"unknown shared-input head {kind!r} (sb, mmoe, ple)")
        self.kind = kind
        n_experts = {"sb": 1, "mmoe": num_experts, "ple": 1 + n_behaviors}[kind]
        n_gated = {"sb": 0, "mmoe": num_experts, "ple": 2}[kind]
        self.mix = nn.Parameter(torch.zeros(n_behaviors))
        self.expert_weight = nn.Parameter(torch.empty(n_experts, dim, dim))
        self.expert_bias = nn.Parameter(torch.zeros(n_experts, dim))
        self.gate_weight = nn.Parameter(torch.empty(n_behaviors, dim, n_gated)) if n_gated else None
        self.tower_weight = nn.Parameter(torch.empty(n_behaviors, dim, 1))
        self.tower_bias = nn.Parameter(torch.zeros(n_behaviors))
        self.reset_parameters()

    def _matrices(self) -> list[torch.Tensor]:
        return [w for w in (self.expert_weight, self.gate_weight, self.tower_weight) if w is not None]

    def reset_parameters(self) -> None:
        _xavier_(*self._matrices())
        for zero in (self.mix, self.expert_bias, self.tower_bias):
            nn.init.zeros_(zero)

    def regularized(self) -> list[torch.Tensor]:
        return self._matrices()

    def prepare(self, tables: Sequence[TablePair], tasks: Sequence[int]) -> dict[Any, Any]:
        weights = torch.softmax(self.mix, dim=0)
        users = sum(w * u for w, (u, _) in zip(weights, tables, strict=True))
        items = sum(w * v for w, (_, v) in zip(weights, tables, strict=True))
        return {"mixed": (users, items), **{k: None for k in tasks}}

    def pair_scores(self, state, k: int, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        mixed_u, mixed_v = state["mixed"]
        z = mixed_u[users] * mixed_v[items]                                                   # [P, d]
        chosen = {"sb": [0], "mmoe": list(range(self.expert_weight.shape[0])), "ple": [0, 1 + k]}[self.kind]
        idx = torch.tensor(chosen, device=z.device)
        hidden = F.leaky_relu(torch.einsum("pd,edf->pef", z, self.expert_weight[idx]) + self.expert_bias[idx],
                              negative_slope=0.1)                                             # [P, E, d]
        if self.gate_weight is None:
            fused = hidden[:, 0]
        else:
            gate = torch.softmax(z @ self.gate_weight[k], dim=-1)                             # [P, E]
            fused = (gate.unsqueeze(-1) * hidden).sum(1)
        return (fused @ self.tower_weight[k]).squeeze(-1) + self.tower_bias[k]

    def all_scores(self, state, k: int, users: torch.Tensor) -> torch.Tensor:
        mixed_u, mixed_v = state["mixed"]
        cost = self.expert_weight.shape[0] * mixed_u.shape[1]
        return chunked_all_scores(lambda u, v: self.pair_scores(state, k, u, v), users,
                                  mixed_v.shape[0], cost)
