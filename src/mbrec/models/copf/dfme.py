r"""DFME, the decoupled fitting multi-expert prediction module of COPF (copf.md §4), and the gated-expert
scoring it shares with the other prediction heads (:mod:`mbrec.models.copf.heads`).

DFME needs only, per behavior k, a table pair ``(EU[k] [M, d], EV[k] [N, d])`` from any encoder and the
per-behavior graph :math:`\hat A_k = D_k^{-1}\mathrm{bip}(B_k)` (a left-normalised :class:`SparseOperator`).
Task k (one per behavior) scores a pair ``(u, v)`` with K expert slots:

* slot 0, the behavior-specific expert (Eq. 9): :math:`x_0 = EU[k]_u \circ EV[k]_v`;
* slots 1..K-1, one per other behavior ``j ≠ k`` in ascending ``j``: the fitting experts (Eqs. 10-12,
  [C]). With :math:`X_j = [EU[j]; EV[j]]` ``[(M+N), d]``, ``R [K, d]``, shared ``W_l [d, d]`` and ``L = L_k``:

  .. math::
      Y^0 = (\alpha X_j + \beta X_k)/2, \quad r^0 = R_k,\ r^l = r^{l-1} W_l\ (l \ge 1), \quad
      Y^{l+1} = \hat A_k (Y^l \circ r^l) + Y^l, \quad T_{k,j} = s \sum_{l=0}^{L} Y^l

  and :math:`x_j = T_{k,j}[u] \circ T_{k,j}[M+v]`; with ``forward="plain"``:
  :math:`x_j = EU[j]_u \circ EV[j]_v`;
* the gate (Eq. 13), one ``W_g [2d, K]``, ``b_g [K]`` shared by all tasks:
  :math:`g = \mathrm{softmax}([EU[k]_u \| EV[k]_v] W_g + b_g) = \mathrm{softmax}(a_u + b_v)` with
  ``a = EU[k] W_g[:d] + b_g [M, K]``, ``b = EV[k] W_g[d:] [N, K]``;
* the tower (Eq. 15, [C]): :math:`\hat y^k(u,v) = \mathrm{mult}\sum_d\sum_s g_s x_{s,d}
  = \mathrm{mult}\sum_s g_s \langle U_s[u], V_s[v]\rangle`.

Stop-gradient (Eq. 14), ``stop_grad`` = which non-own slots of task k are detached:

* ``official``: all of them iff ``L_k - 1 == K - 1`` (the released code's loop-variable quirk; none at
  L_k = 1);
* ``paper``: the slot of the target behavior K-1 in every auxiliary task ``k < K-1`` (table only, gate kept);
* ``paper_gate``: as ``paper``, and that slot's gate weight is detached too (``sg(g·x)``, literal Eq. 14);
* ``none``; ``all``: every non-own slot of every task.

A detached fitting table is computed under ``no_grad`` (no gradient to EU/EV of j or k, R_k or W_l through
it). Efficiency: the fitting tables of one task share :math:`\hat A_k` and are propagated together, one
``[(M+N), g·d]`` spmm per layer for the trainable group and one for the detached group. Evaluation
scores B users against all N items exactly: per item chunk an ``[S, B, C]`` gate softmax and S matmuls
``[B,d]×[d,C]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from mbrec.data.samplers import Batch
from mbrec.graph import SparseOperator, spmm

StopGrad = Literal["official", "paper", "paper_gate", "none", "all"]
Forward = Literal["fit", "plain"]
TablePair = tuple[torch.Tensor, torch.Tensor]
PAIR_BUDGET = 1 << 22  # elements of one [S, B, C] evaluation chunk


@dataclass
class TaskExperts:
    """What one task needs to score pairs: expert slots and (optionally) additive gate logits.

    Attributes:
        slots: S pairs ``(U_s [M, d], V_s [N, d])``; slot s of pair (u, v) is ``U_s[u] ∘ V_s[v]``.
        gate_users, gate_items: ``[M, S]`` (bias included) and ``[N, S]`` gate logits; ``None`` = unit
            weights.
        detached_gate: slots whose gate weight is detached (``stop_grad="paper_gate"``).
    """

    slots: list[TablePair]
    gate_users: torch.Tensor | None = None
    gate_items: torch.Tensor | None = None
    detached_gate: tuple[int, ...] = ()


def gate_logits(weight: torch.Tensor, bias: torch.Tensor, users: torch.Tensor,
                items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[EU_u ‖ EV_v] W + b`` as a user part ``[M, S]`` (with the bias) plus an item part ``[N, S]``."""
    dim = users.shape[1]
    return users @ weight[:dim] + bias, items @ weight[dim:]


def expert_pair_scores(experts: TaskExperts, users: torch.Tensor, items: torch.Tensor,
                       mult: float) -> torch.Tensor:
    """``mult · Σ_s g_s ⟨U_s[u], V_s[v]⟩`` for parallel ``users``, ``items`` ``[P]`` -> ``[P]``."""
    sims = torch.stack([(u_tab[users] * v_tab[items]).sum(-1) for u_tab, v_tab in experts.slots], dim=-1)
    if experts.gate_users is None:
        return mult * sims.sum(-1)
    gate = torch.softmax(experts.gate_users[users] + experts.gate_items[items], dim=-1)
    if experts.detached_gate:
        gate = torch.stack([gate[:, s].detach() if s in experts.detached_gate else gate[:, s]
                            for s in range(gate.shape[1])], dim=-1)
    return mult * (gate * sims).sum(-1)


def expert_all_scores(experts: TaskExperts, users: torch.Tensor, mult: float) -> torch.Tensor:
    """Exact scores of ``users [B]`` against every item, ``[B, N]`` (item chunks of ``[S, B, C]`` gates)."""
    user_rows = [u_tab[users] for u_tab, _ in experts.slots]
    if experts.gate_users is None:
        return mult * (torch.cat(user_rows, 1) @ torch.cat([v for _, v in experts.slots], 1).T)
    n_items, n_slots = experts.gate_items.shape
    chunk = max(1, PAIR_BUDGET // max(len(users) * n_slots, 1))
    user_logits = experts.gate_users[users].T.unsqueeze(2)                      # [S, B, 1]
    item_logits = experts.gate_items.T.unsqueeze(1)                             # [S, 1, N]
    out = user_logits.new_empty(len(users), n_items)
    for start in range(0, n_items, chunk):
        stop = min(start + chunk, n_items)
        gate = torch.softmax(user_logits + item_logits[:, :, start:stop], dim=0)  # [S, B, C]
        acc = gate[0] * (user_rows[0] @ experts.slots[0][1][start:stop].T)
        for s in range(1, n_slots):
            acc.addcmul_(gate[s], user_rows[s] @ experts.slots[s][1][start:stop].T)
        out[:, start:stop] = acc.mul_(mult)
    return out


class PredictionHead(nn.Module):
    """A multi-task prediction module on top of K table pairs (DFME or one of :mod:`.heads`).

    ``prepare(tables, tasks)`` does the full-table work of one step (once) and returns a per-task state;
    ``pair_scores``/``all_scores`` score pairs ``[P]`` or users against all items ``[B, N]`` from it.
    """

    mult: float = 300.0

    def prepare(self, tables: Sequence[TablePair], tasks: Sequence[int]) -> dict[int, Any]:
        raise NotImplementedError

    def pair_scores(self, state: dict[int, Any], k: int, users: torch.Tensor,
                    items: torch.Tensor) -> torch.Tensor:
        return expert_pair_scores(state[k], users, items, self.mult)

    def all_scores(self, state: dict[int, Any], k: int, users: torch.Tensor) -> torch.Tensor:
        return expert_all_scores(state[k], users, self.mult)

    def extra_losses(self, state: dict[int, Any], batch: Batch,
                     task_weights: Sequence[float]) -> dict[str, torch.Tensor]:
        """Head-specific training losses (PME's unique-part BPR); ``task_weights[k] = 3λ_k``."""
        return {}

    def regularized(self) -> list[torch.Tensor]:
        """Parameters that enter the full-table L2 term."""
        return []

    def reset_parameters(self) -> None:
        """Re-initialise the head's parameters (none by default)."""


def detached_behaviors(stop_grad: StopGrad, k: int, n_behaviors: int, fit_layers: int) -> frozenset[int]:
    """Behaviors ``j ≠ k`` whose expert is detached in task ``k`` (see the module docstring)."""
    others = frozenset(j for j in range(n_behaviors) if j != k)
    target = n_behaviors - 1
    if stop_grad == "official":
        return others if fit_layers - 1 == target else frozenset()
    if stop_grad in ("paper", "paper_gate"):
        return frozenset({target}) if k < target else frozenset()
    if stop_grad == "none":
        return frozenset()
    if stop_grad == "all":
        return others
    raise ValueError(f"unknown stop_grad {stop_grad!r} (official, paper, paper_gate, none, all)")


class DFME(PredictionHead):
    """Behavior-specific + fitting experts, shared gate, stop-gradient and ×mult tower (module docstring).

    Args:
        graphs: the K per-behavior graphs :math:`\\hat A_k` (left-normalised, ``[(M+N), (M+N)]``).
        fit_layers: ``L_k`` per task (``gnn_mtl_layer``; default 1 each).
        alpha, beta, fit_scale: the α (other behavior), β (own behavior) and s scales of the fitting tables.
    """

    def __init__(self, graphs: Sequence[SparseOperator], dim: int = 64,
                 fit_layers: Sequence[int] | None = None, alpha: float = 0.1, beta: float = 0.001,
                 fit_scale: float = 0.1, mult: float = 300.0, stop_grad: StopGrad = "official",
                 forward: Forward = "fit") -> None:
        super().__init__()
        n = len(graphs)
        self.graphs = list(graphs)
        self.fit_layers = list(fit_layers) if fit_layers is not None else [1] * n
        if len(self.fit_layers) != n or min(self.fit_layers) < 0:
            raise ValueError(f"fit_layers needs {n} non-negative entries, got {self.fit_layers}")
        if forward not in ("fit", "plain"):
            raise ValueError(f"unknown forward {forward!r} (fit, plain)")
        detached_behaviors(stop_grad, 0, n, self.fit_layers[0])  # validates the name
        self.dim, self.alpha, self.beta, self.fit_scale, self.mult = dim, alpha, beta, fit_scale, mult
        self.stop_grad, self.forward = stop_grad, forward
        self.behavior_emb = nn.Parameter(torch.empty(n, dim))                       # R
        self.layer_weights = nn.ParameterList(
            [nn.Parameter(torch.empty(dim, dim)) for _ in range(max(self.fit_layers) - 1)])  # W_l, l >= 1
        self.gate_weight = nn.Parameter(torch.empty(2 * dim, n))                     # W_g (shared)
        self.gate_bias = nn.Parameter(torch.empty(n))                               # b_g (shared)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for weight in (self.behavior_emb, self.gate_weight, *self.layer_weights):
            nn.init.xavier_uniform_(weight)
        nn.init.zeros_(self.gate_bias)

    def regularized(self) -> list[torch.Tensor]:
        return [self.gate_weight, *self.layer_weights]

    def fitting_tables(self, stacked: Sequence[torch.Tensor], k: int,
                       behaviors: Sequence[int]) -> list[torch.Tensor]:
        r""":math:`T_{k,j}` ``[(M+N), d]`` for every ``j`` in ``behaviors``, propagated together on Â_k.

        The recursion is linear in Y⁰, so s is folded into Y⁰ (``Ŷ = sY``, ``T = Σ_l Ŷ^l``), and the
        last layer adds :math:`Ŷ^L = Ŷ^{L-1} + Â(Ŷ^{L-1} \circ r)` without materialising it.
        """
        group, layers = len(behaviors), self.fit_layers[k]
        own = stacked[k] * (self.fit_scale * self.beta / 2)
        other_scale = self.fit_scale * self.alpha / 2
        y = torch.cat([torch.add(own, stacked[j], alpha=other_scale) for j in behaviors], 1)
        r, acc = self.behavior_emb[k], y
        for layer in range(layers):
            if layer >= 1:
                r = r @ self.layer_weights[layer - 1]
            z = spmm(self.graphs[k], y * r.repeat(group))
            if layer < layers - 1:
                y = y + z
                acc = acc + y
            else:
                acc = torch.add(z, y, alpha=2) if layer == 0 else acc + y + z
        return list(acc.split(self.dim, dim=1))

    def task_experts(self, tables: Sequence[TablePair], stacked: Sequence[torch.Tensor] | None,
                     k: int) -> TaskExperts:
        """Slots (own first, then other behaviors ascending) and gate logits of task ``k``."""
        n_users = tables[0][0].shape[0]
        others = [j for j in range(len(tables)) if j != k]
        detached = detached_behaviors(self.stop_grad, k, len(tables), self.fit_layers[k])
        experts: dict[int, TablePair] = {}
        if self.forward == "plain":
            for j in others:
                users, items = tables[j]
                experts[j] = (users.detach(), items.detach()) if j in detached else (users, items)
        else:
            trainable = [j for j in others if j not in detached]
            frozen = [j for j in others if j in detached]
            for group, grad in ((trainable, torch.is_grad_enabled()), (frozen, False)):
                if group:
                    with torch.set_grad_enabled(grad):
                        for j, table in zip(group, self.fitting_tables(stacked, k, group), strict=True):
                            experts[j] = (table[:n_users], table[n_users:])
        gate_users, gate_items = gate_logits(self.gate_weight, self.gate_bias, *tables[k])
        gate_detached = ()
        if self.stop_grad == "paper_gate":
            gate_detached = tuple(1 + others.index(j) for j in sorted(detached))
        return TaskExperts([tables[k], *(experts[j] for j in others)], gate_users, gate_items, gate_detached)

    def prepare(self, tables: Sequence[TablePair], tasks: Sequence[int]) -> dict[int, TaskExperts]:
        if len(tables) != len(self.graphs):
            raise ValueError(f"DFME was built for {len(self.graphs)} behaviors, got {len(tables)} pairs")
        stacked = [torch.cat(pair) for pair in tables] if self.forward == "fit" else None
        return {k: self.task_experts(tables, stacked, k) for k in tasks}
