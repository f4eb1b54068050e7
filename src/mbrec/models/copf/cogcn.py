r"""COGCN: the cascading fusion encoder of COPF (copf.md §3) and the graphs it propagates on.

Node tables are stacked users first, ``X ∈ R^{(M+N)×d}``; ``E⁰ = [E_u; E_v]``. For behavior k (0-based,
upstream → target) with ``L_k`` layers and encoder graph ``S_k`` with residual scale ``c_k``:

.. math::
    X^{k,l+1} = S_k X^{k,l} + c_k X^{k,l}, \qquad e^{k,*} = \sum_{l=0}^{L_k} X^{k,l}

and the input of the next behavior (the three constraints of §3.3 are switches):

* ``pre="cumulative"`` (Eq. 6): :math:`X^{k+1,0} = X^{k,0} + X^{k,L_k} = E^0 + \sum_{k'\le k} X^{k',L}`;
* ``pre="strict"``: :math:`X^{k+1,0} = E^0 + X^{k,L_k}` (only the immediately preceding behavior);
* ``pre="none"``: :math:`X^{k+1,0} = E^0` (K parallel encoders).

Encoder graphs (``graph`` = which behaviors feed behavior k: ``upstream`` k' ≤ k, ``all``, ``own`` k' = k):

* ``adjacency="code"`` (released code): :math:`S_k = D^{-1}\mathrm{bip}(\sum_{k'} B_{k'})` — one
  left-normalised matrix of the *weighted* sum (a pair present in two behaviors weighs 2), ``c_k = 1``;
* ``adjacency="paper_sum"`` (Eq. 5): :math:`\sum_{k'} (D_{k'}^{-1}\mathrm{bip}(B_{k'}) + I)`, i.e.
  ``S_k = Σ_{k'} Â_{k'}`` and ``c_k`` = the number of summed behaviors.

``post="merged"`` (COPF-D) replaces every behavior's output by :math:`\bar e = \sum_k e^{k,*}`.
The encoder has no weights; it returns one ``(users [M, d], items [N, d])`` pair per behavior.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import scipy.sparse as sp
import torch

from mbrec.graph import SparseOperator, normalized_bipartite, spmm

Pre = Literal["cumulative", "strict", "none"]
GraphScope = Literal["upstream", "all", "own"]
Adjacency = Literal["code", "paper_sum"]
Post = Literal["decoupled", "merged"]
TablePair = tuple[torch.Tensor, torch.Tensor]


def graph_members(k: int, n_behaviors: int, scope: GraphScope) -> tuple[int, ...]:
    """Behaviors whose interactions form behavior ``k``'s encoder graph."""
    if scope == "upstream":
        return tuple(range(k + 1))
    if scope == "all":
        return tuple(range(n_behaviors))
    if scope == "own":
        return (k,)
    raise ValueError(f"unknown graph scope {scope!r} (upstream, all, own)")


class GraphBank:
    """Builds each distinct normalised graph once and hands out shared :class:`SparseOperator` s.

    ``combined(members)`` = :math:`D^{-1}\\mathrm{bip}(\\sum_{k \\in members} B_k)`;
    ``behavior(k)`` = :math:`\\hat A_k = D_k^{-1}\\mathrm{bip}(B_k)` (= ``combined((k,))``, no self-loops);
    ``summed(members)`` = :math:`\\sum_{k \\in members} \\hat A_k`.
    """

    def __init__(self, matrices: Sequence[sp.spmatrix], device: torch.device | str = "cpu") -> None:
        self.matrices = [sp.csr_matrix(m, dtype="float32") for m in matrices]
        self.device = device
        self._ops: dict[tuple, SparseOperator] = {}
        self._scipy: dict[tuple, sp.csr_matrix] = {}

    def _left(self, members: tuple[int, ...]) -> sp.csr_matrix:
        key = ("left", members)
        if key not in self._scipy:
            weighted = self.matrices[members[0]]
            for k in members[1:]:
                weighted = weighted + self.matrices[k]
            self._scipy[key] = normalized_bipartite(weighted, "left")
        return self._scipy[key]

    def _operator(self, key: tuple, build) -> SparseOperator:
        if key not in self._ops:
            self._ops[key] = SparseOperator(build(), device=self.device, symmetric=False)
        return self._ops[key]

    def combined(self, members: tuple[int, ...]) -> SparseOperator:
        return self._operator(("left", members), lambda: self._left(members))

    def behavior(self, k: int) -> SparseOperator:
        return self.combined((k,))

    def summed(self, members: tuple[int, ...]) -> SparseOperator:
        if len(members) == 1:
            return self.behavior(members[0])
        def build() -> sp.csr_matrix:
            total = self._left((members[0],))
            for k in members[1:]:
                total = total + self._left((k,))
            return total.tocsr()

        return self._operator(("sum", members), build)

    def operators(self) -> list[SparseOperator]:
        """Every operator built so far (each once)."""
        return list(self._ops.values())


def encoder_graphs(bank: GraphBank, scope: GraphScope = "upstream",
                   adjacency: Adjacency = "code") -> tuple[list[SparseOperator], list[float]]:
    """Per behavior: the encoder graph ``S_k`` and the residual scale ``c_k`` (see the module docstring)."""
    n = len(bank.matrices)
    ops, scales = [], []
    for k in range(n):
        members = graph_members(k, n, scope)
        if adjacency == "code":
            ops.append(bank.combined(members))
            scales.append(1.0)
        elif adjacency == "paper_sum":
            ops.append(bank.summed(members))
            scales.append(float(len(members)))
        else:
            raise ValueError(f"unknown COGCN adjacency {adjacency!r} (code, paper_sum)")
    return ops, scales


def cogcn_propagate(ego: torch.Tensor, graphs: Sequence[SparseOperator], residual: Sequence[float],
                    layers: Sequence[int], pre: Pre = "cumulative") -> list[torch.Tensor]:
    r"""The cascade of the module docstring: ``[M+N, d] -> K × [M+N, d]`` (the :math:`e^{k,*}` tables).

    One ``spmm`` per layer and behavior; nothing is computed twice.
    """
    if pre not in ("cumulative", "strict", "none"):
        raise ValueError(f"unknown pre-behavior rule {pre!r} (cumulative, strict, none)")
    x_in, outputs = ego, []
    for graph, scale, n_layers in zip(graphs, residual, layers, strict=True):
        h, acc = x_in, x_in
        for _ in range(n_layers):
            h = torch.add(spmm(graph, h), h, alpha=scale)
            acc = acc + h
        outputs.append(acc)
        if pre == "cumulative":
            x_in = acc if n_layers == 1 else x_in + h         # at L = 1, X^{k,0} + X^{k,1} is both
        elif pre == "strict":
            x_in = ego + h
        else:
            x_in = ego
    return outputs


def split_tables(stacked: Sequence[torch.Tensor], n_users: int, post: Post = "decoupled") -> list[TablePair]:
    """Node-stacked tables -> ``(users, items)`` pairs.

    ``merged`` gives every behavior the same pair, :math:`\\sum_k e^{k,*}`.
    """
    if post == "merged":
        total = torch.stack(list(stacked)).sum(0)
        return [_split(total, n_users)] * len(stacked)
    if post != "decoupled":
        raise ValueError(f"unknown post-behavior rule {post!r} (decoupled, merged)")
    return [_split(x, n_users) for x in stacked]


def _split(x: torch.Tensor, n_users: int) -> TablePair:
    """``(x[:M], x[M:])`` as one ``split``: its backward concatenates the two gradients in one pass
    (two slices would each zero-fill an ``[M+N, d]`` gradient and add them); DFME reads ``x`` back
    from the pair without a copy (:func:`mbrec.models.copf.dfme.stack_pair`)."""
    users, items = x.split([n_users, x.shape[0] - n_users])
    return users, items
