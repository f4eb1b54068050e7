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
``[(M+N), g·d]`` spmm per layer for the trainable group and one for the detached group. In training
(:meth:`DFME.prepare_pairs`, on CPU) the **last** layer is computed only for the rows the step scores — the
users and items of task k's pairs — with the row block of :math:`\hat A_k` (a batch touches 256 of the M
user rows): the same sums for those rows, fewer nonzeros in the product and its backward; the other rows of
:math:`T_{k,j}` never reach a loss. Rows are gathered with ``index_select`` (its backward, an ``index_add``, is
several times faster on CPU than the accumulating ``index_put`` behind ``table[ids]``), and the stacked
``[(M+N), d]`` tables come from the encoder's own tensors when the pairs are its split views
(:func:`stack_pair`). Evaluation scores B users against all N items exactly: per item chunk an
``[S, B, C]`` gate softmax and S matmuls ``[B,d]×[d,C]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from mbrec.data.samplers import Batch
from mbrec.graph import SparseOperator, spmm
from mbrec.graph.spmm import csr_product

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
        user_rows, item_rows: ``[M]`` / ``[N]`` position of each user / item in compact slots that hold
            only the rows a step scores (:meth:`DFME.prepare_pairs`; -1 = absent), or ``None`` (full tables).
    """

    slots: list[TablePair]
    gate_users: torch.Tensor | None = None
    gate_items: torch.Tensor | None = None
    detached_gate: tuple[int, ...] = ()
    user_rows: torch.Tensor | None = None
    item_rows: torch.Tensor | None = None


@dataclass
class RowBlock:
    """The rows of a node table that one task's pairs read, and the matching row block of its graph.

    ``users [U]``, ``items [I]`` sorted unique ids; ``index [U+I]`` their node rows (items offset by M);
    ``user_rows [M]`` / ``item_rows [N]``: position in ``users`` / ``items`` (-1 = absent);
    ``operator``: ``Â[index]`` ``[U+I, M+N]`` with its transpose (for the backward product).
    """

    users: torch.Tensor
    items: torch.Tensor
    index: torch.Tensor
    user_rows: torch.Tensor
    item_rows: torch.Tensor
    operator: SparseOperator

    @classmethod
    def of_pairs(cls, graph: SparseOperator, n_users: int, n_items: int, users: torch.Tensor,
                 items: torch.Tensor) -> RowBlock:
        def positions(ids: torch.Tensor, size: int) -> torch.Tensor:
            out = torch.full((size,), -1, dtype=torch.long, device=ids.device)
            out[ids] = torch.arange(len(ids), device=ids.device)
            return out

        unique_users, unique_items = torch.unique(users), torch.unique(items)
        index = torch.cat([unique_users, unique_items + n_users])
        block = graph.rows(index.cpu().numpy())
        if block.matrix.dtype != graph.matrix.dtype:          # a model cast with .double() (tests)
            block.matrix, block.transpose = block.matrix.to(graph.matrix.dtype), block.transpose.to(graph.matrix.dtype)
        return cls(unique_users, unique_items, index, positions(unique_users, n_users),
                   positions(unique_items, n_items), block)


def stack_pair(pair: TablePair) -> torch.Tensor:
    """``[EU; EV]`` ``[M+N, d]`` of a table pair: the tensor both halves are views of when they are its two
    adjacent row blocks (as :func:`mbrec.models.copf.cogcn.split_tables` gives them; no copy, and the
    gradient reaches that tensor directly), else a ``cat``."""
    users, items = pair
    base = users._base
    if (base is not None and items._base is base and base.dim() == 2 and base.is_contiguous()
            and users.is_contiguous() and items.is_contiguous()
            and base.shape == (users.shape[0] + items.shape[0], users.shape[1])
            and users.data_ptr() == base.data_ptr()
            and items.data_ptr() == base.data_ptr() + users.numel() * base.element_size()):
        return base
    return torch.cat(pair)


class _RowFitted(torch.autograd.Function):
    r""":math:`F = (\hat A_k[rows] X) \circ r + 2 X[rows]` ``[R, d]`` (:meth:`DFME.fitting_tables`) with one
    ``[(M+N), d]`` gradient for X: the transposed product writes it and the ``X[rows]`` part is added in place
    (autograd would zero-fill a second table for the gather and add the two)."""

    @staticmethod
    def forward(ctx, matrix, transpose, index, x, r):
        product = csr_product(matrix, x)                                            # [R, d]
        ctx.transpose = transpose
        ctx.save_for_backward(index, product, r)
        return torch.addcmul(x.index_select(0, index).mul_(2), product, r)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        index, product, r = ctx.saved_tensors
        grad_x = grad_r = None
        if ctx.needs_input_grad[3]:
            grad_x = csr_product(ctx.transpose, grad * r).index_add_(0, index, grad, alpha=2)
        if ctx.needs_input_grad[4]:
            grad_r = (product * grad).sum(0)
        return None, None, None, grad_x, grad_r


def gate_logits(weight: torch.Tensor, bias: torch.Tensor, users: torch.Tensor,
                items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[EU_u ‖ EV_v] W + b`` as a user part ``[M, S]`` (with the bias) plus an item part ``[N, S]``."""
    dim = users.shape[1]
    return users @ weight[:dim] + bias, items @ weight[dim:]


def expert_pair_scores(experts: TaskExperts, users: torch.Tensor, items: torch.Tensor,
                       mult: float) -> torch.Tensor:
    """``mult · Σ_s g_s ⟨U_s[u], V_s[v]⟩`` for parallel ``users``, ``items`` ``[P]`` -> ``[P]``."""
    if experts.user_rows is not None:
        users, items = experts.user_rows.index_select(0, users), experts.item_rows.index_select(0, items)
        if bool((users < 0).any()) or bool((items < 0).any()):
            raise ValueError("pairs outside the rows these experts were prepared for")
    sims = torch.stack([(u_tab.index_select(0, users) * v_tab.index_select(0, items)).sum(-1)
                        for u_tab, v_tab in experts.slots], dim=-1)
    if experts.gate_users is None:
        return mult * sims.sum(-1)
    gate = torch.softmax(experts.gate_users.index_select(0, users) + experts.gate_items.index_select(0, items), dim=-1)
    if experts.detached_gate:
        gate = torch.stack([gate[:, s].detach() if s in experts.detached_gate else gate[:, s]
                            for s in range(gate.shape[1])], dim=-1)
    return mult * (gate * sims).sum(-1)


def expert_all_scores(experts: TaskExperts, users: torch.Tensor, mult: float) -> torch.Tensor:
    """Exact scores of ``users [B]`` against every item, ``[B, N]`` (item chunks of ``[S, B, C]`` gates)."""
    if experts.user_rows is not None:
        raise ValueError("experts prepared for a step's pairs cannot score all items (prepare full tables)")
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

    def prepare_pairs(self, tables: Sequence[TablePair],
                      pairs: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> dict[int, Any]:
        """:meth:`prepare` for a training step that will score only ``pairs[k] = (users [P], items [P])``
        in task k (the tasks are the keys); a head may then skip rows no pair reads (DFME does)."""
        return self.prepare(tables, list(pairs))

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
        self.restrict_rows = True    # prepare_pairs: last fitting layer on the scored rows only (exact)
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

    def fitting_tables(self, stacked: Sequence[torch.Tensor], k: int, behaviors: Sequence[int],
                       rows: RowBlock | None = None) -> list[torch.Tensor]:
        r""":math:`T_{k,j}` ``[(M+N), d]`` for every ``j`` in ``behaviors``, propagated together on Â_k.

        The recursion is linear in Y⁰, so s is folded into Y⁰ (``Ŷ = sY``, ``T = Σ_l Ŷ^l``), and the
        last layer adds :math:`Ŷ^L = Ŷ^{L-1} + Â(Ŷ^{L-1} \circ r)` without materialising it. Every product
        is taken as :math:`(ÂŶ) \circ r` (a column scaling commutes with Â), so r scales the product's rows
        only — the row block's R rows in the last layer, not all M+N. With ``rows``
        only those rows of T are returned (``[R, d]`` each) and the last layer's product uses the row block
        ``Â_k[rows]`` (exact: row i of ``Â Y`` is ``Â[i] Y``).

        One layer with ``rows`` (COPF's configurations): by linearity, with :math:`c_k = s\beta/2`,
        :math:`c_j = s\alpha/2` and :math:`F_m = (\hat A_k[rows] X_m) \circ r + 2 X_m[rows]` ``[R, d]``,
        :math:`T_{k,j}[rows] = c_k F_k + c_j F_j`: every operation is on the R rows (the row-block
        products of the ``d``-wide tables, 1.5x the nonzeros x width of one ``g·d``-wide product), and
        no ``[(M+N), g·d]`` table is built forward or backward (:class:`_RowFitted`). A COPF Taobao step:
        1.03x on one thread, within noise on two (session 17, an in-process A/B over 30 steps each way).
        """
        group, layers = len(behaviors), self.fit_layers[k]
        own_scale, other_scale = self.fit_scale * self.beta / 2, self.fit_scale * self.alpha / 2
        if layers == 1 and rows is not None:
            r = self.behavior_emb[k]

            def fitted(m: int) -> torch.Tensor:
                return _RowFitted.apply(rows.operator.matrix, rows.operator.transpose, rows.index, stacked[m], r)

            own_rows = fitted(k) * own_scale
            return [torch.add(own_rows, fitted(j), alpha=other_scale) for j in behaviors]
        own = stacked[k] * own_scale
        y = torch.cat([torch.add(own, stacked[j], alpha=other_scale) for j in behaviors], 1)
        r, acc = self.behavior_emb[k], y
        if layers == 0 and rows is not None:
            acc = acc.index_select(0, rows.index)
        for layer in range(layers):
            if layer >= 1:
                r = r @ self.layer_weights[layer - 1]
            last = layer == layers - 1
            op = rows.operator if last and rows is not None else self.graphs[k]
            z = spmm(op, y) * r.repeat(group)          # Â(Y∘r) = (ÂY)∘r: the product scales R rows, not M+N
            if not last:
                y = y + z
                acc = acc + y
            else:
                if rows is not None:
                    y = y.index_select(0, rows.index)
                    acc = acc.index_select(0, rows.index)      # layer >= 1: one layer with rows returned above
                acc = torch.add(z, y, alpha=2) if layer == 0 else acc + y + z
        return list(acc.split(self.dim, dim=1))

    def task_experts(self, tables: Sequence[TablePair], stacked: Sequence[torch.Tensor] | None,
                     k: int, pairs: tuple[torch.Tensor, torch.Tensor] | None = None) -> TaskExperts:
        """Slots (own first, then other behaviors ascending) and gate logits of task ``k``; with ``pairs``
        (``forward="fit"``) compact slots holding only the users and items of those pairs."""
        n_users = tables[0][0].shape[0]
        own, rows = tables[k], None
        if pairs is not None:
            rows = RowBlock.of_pairs(self.graphs[k], n_users, tables[0][1].shape[0], *pairs)
            own, n_users = (own[0].index_select(0, rows.users), own[1].index_select(0, rows.items)), len(rows.users)
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
                        for j, table in zip(group, self.fitting_tables(stacked, k, group, rows), strict=True):
                            experts[j] = (table[:n_users], table[n_users:])
        gate_users, gate_items = gate_logits(self.gate_weight, self.gate_bias, *own)
        gate_detached = ()
        if self.stop_grad == "paper_gate":
            gate_detached = tuple(1 + others.index(j) for j in sorted(detached))
        compact = (rows.user_rows, rows.item_rows) if rows is not None else (None, None)
        return TaskExperts([own, *(experts[j] for j in others)], gate_users, gate_items, gate_detached, *compact)

    def prepare(self, tables: Sequence[TablePair], tasks: Sequence[int]) -> dict[int, TaskExperts]:
        if len(tables) != len(self.graphs):
            raise ValueError(f"DFME was built for {len(self.graphs)} behaviors, got {len(tables)} pairs")
        stacked = [stack_pair(pair) for pair in tables] if self.forward == "fit" else None
        return {k: self.task_experts(tables, stacked, k) for k in tasks}

    def prepare_pairs(self, tables: Sequence[TablePair],
                      pairs: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> dict[int, TaskExperts]:
        """Fitting tables for the rows of each task's pairs only (module docstring); full tables when
        ``forward="plain"`` (nothing to save), off the CPU (the row blocks are cut on the host) or with
        ``restrict_rows = False``."""
        if (not self.restrict_rows or self.forward != "fit"
                or any(op.device.type != "cpu" for op in self.graphs)):
            return self.prepare(tables, list(pairs))
        if len(tables) != len(self.graphs):
            raise ValueError(f"DFME was built for {len(self.graphs)} behaviors, got {len(tables)} pairs")
        stacked = [stack_pair(pair) for pair in tables]
        return {k: self.task_experts(tables, stacked, k, pair if len(pair[0]) else None)
                for k, pair in pairs.items()}
