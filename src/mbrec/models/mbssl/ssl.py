r"""MBSSL's self-supervised losses (Eqs. 7–9, as released) and the target-graph augmentations.

InfoNCE with similarity φ and temperature τ, for an anchor x, candidates Y (all nodes), its positive
:math:`y^+ \in Y` and false negatives F. φ is the cosine :math:`c(a, b) = a^T b / (\|a\| \|b\|)` (a zero
row normalises to 0; ``similarity="cosine"``, the released code) or the raw inner product
:math:`a^T b` of the paper's Eqs. 7–9 (``similarity="dot"``); written with c below:

.. math::
    \ell(x; Y, y^+, F) = -\frac{c(x, y^+)}{\tau} + \log \sum_{y \in Y} \exp\frac{\tilde c(x, y)}{\tau}

``fn_mode``: ``zero_logit`` (released code) sets :math:`\tilde c(x, y) = 0` for :math:`y \in F` (each still
adds :math:`e^0 = 1`); ``remove`` (paper) leaves F out of the sum; ``none`` ignores F.

The batch anchors are the batch's target pairs (u, i): a user counts once per purchase, an item once
per buyer (released code; ``ssl_anchors="pairs"`` in the model). The paper's Eqs. 7–9 sum over nodes, each
once (``ssl_anchors="nodes"``: the same unique nodes with multiplicity 1). Rows of one node are
identical, so each loss is computed once per **unique** node and multiplied by its multiplicity (exact):
:math:`\sum_{a} m_a\, \ell_a`. Losses are sums, not means.
:func:`node_contrast` computes that sum with the fused :func:`mbrec.losses.infonce.weighted_infonce`;
:func:`info_nce_terms` is the plain per-anchor form (autograd ``logsumexp``), kept as its reference.

* inter-behavior (Eq. 7), aux behavior k: anchor :math:`E[v, K]`, candidates :math:`E[:, k]`,
  positive :math:`E[v, k]`, F = swing false negatives of v (users and items separately).
* intra-behavior (Eqs. 8–9): anchor :math:`E^{(1)}[v, K]`, candidates :math:`E^{(2)}[:, K]`, no F;
  :math:`E^{(1)}, E^{(2)}` come from two augmented target graphs.

Augmentations of the target training graph (redrawn every epoch, torch's global RNG): ``node`` drops
⌊ρM⌋ users and ⌊ρN⌋ items with all their edges (released default); ``edge`` keeps ⌊(1-ρ)|E|⌋ edges
(paper); ``walk`` draws an independent edge-dropout graph for every layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from mbrec.graph import SparseOperator
from mbrec.losses.infonce import weighted_infonce
from mbrec.losses.normalize import unit_rows
from mbrec.models.mbssl.swing import FalseNegatives

FalseNegativeMode = Literal["zero_logit", "remove", "none"]
Similarity = Literal["cosine", "dot"]
Augmentation = Literal["node", "edge", "walk"]


def info_nce_terms(anchors: torch.Tensor, candidates: torch.Tensor, positives: torch.Tensor, tau: float,
                   fn_rows: torch.Tensor | None = None, fn_cols: torch.Tensor | None = None,
                   fn_mode: FalseNegativeMode = "zero_logit", similarity: Similarity = "cosine") -> torch.Tensor:
    """Per-anchor InfoNCE :math:`\\ell` (module docstring), ``[A]``.

    Args:
        anchors: ``[A, d]``. candidates: ``[C, d]``. positives: ``[A]`` index of each positive in
            ``candidates``. tau: temperature.
        fn_rows, fn_cols: ``[F]`` false negatives as (anchor row, candidate index) pairs; a positive
            must not be among them.
        fn_mode: ``zero_logit`` / ``remove`` / ``none``. similarity: φ, ``cosine`` or ``dot``.
    """
    if similarity == "cosine":
        anchors, candidates = F.normalize(anchors, dim=-1), F.normalize(candidates, dim=-1)
    elif similarity != "dot":
        raise ValueError(f"unknown similarity {similarity!r} (cosine, dot)")
    scaled_anchors = anchors / tau
    logits = scaled_anchors @ candidates.T                                                 # [A, C]
    positive = (scaled_anchors * candidates[positives]).sum(-1)                            # [A]
    if fn_mode != "none" and fn_rows is not None and fn_cols is not None and len(fn_rows):
        fill = 0.0 if fn_mode == "zero_logit" else float("-inf")
        fill_value = torch.tensor(fill, dtype=logits.dtype, device=logits.device)
        logits.index_put_((fn_rows, fn_cols), fill_value)          # in place: mm does not keep its output
    return torch.logsumexp(logits, dim=1) - positive


@dataclass
class Anchors:
    """Unique anchor nodes of a batch with multiplicities and their false negatives.

    ``nodes`` ``[A]``, ``multiplicity`` ``[A]`` (float), ``fn_rows``/``fn_cols`` ``[F]``: FN pairs
    (position in ``nodes``, node id).
    """

    nodes: torch.Tensor
    multiplicity: torch.Tensor
    fn_rows: torch.Tensor
    fn_cols: torch.Tensor

    @classmethod
    def from_occurrences(cls, occurrences: np.ndarray, false_negatives: FalseNegatives | None,
                         device: torch.device | str, counted: bool = True) -> Anchors:
        """Unique nodes of ``occurrences`` (one entry per pair), counted (or each once when not
        ``counted``), with their FN pairs."""
        nodes, counts = np.unique(np.asarray(occurrences, dtype=np.int64), return_counts=True)
        if not counted:
            counts = np.ones_like(counts)
        if false_negatives is None:
            rows = cols = np.zeros(0, dtype=np.int64)
        else:
            rows, cols = false_negatives.select(nodes)
        return cls(torch.from_numpy(nodes).to(device), torch.from_numpy(counts.astype(np.float32)).to(device),
                   torch.from_numpy(rows).to(device), torch.from_numpy(cols).to(device))


def node_contrast(anchor_table: torch.Tensor, candidate_table: torch.Tensor, anchors: Anchors, tau: float,
                  fn_mode: FalseNegativeMode = "none", similarity: Similarity = "cosine") -> torch.Tensor:
    r""":math:`\sum_a m_a\, \ell(A[a];\ C,\ C[a],\ F_a)` with ``A = anchor_table``, ``C = candidate_table``.

    ``anchor_table`` ``[C, d]`` (only the anchor rows are read), ``candidate_table`` ``[C', d]`` with
    ``C' >= C`` (e.g. items plus a zero PAD row). Returns a scalar.
    """
    if fn_mode not in ("zero_logit", "remove", "none"):
        raise ValueError(f"unknown false-negative mode {fn_mode!r} (zero_logit, remove, none)")
    rows = anchor_table.index_select(0, anchors.nodes)                                     # [A, d]
    if similarity == "cosine":
        scaled, candidates, bound = unit_rows(rows) / tau, unit_rows(candidate_table), 1.0 / tau
    elif similarity == "dot":                       # unbounded logits: the fused loss shifts by the row maximum
        scaled, candidates, bound = rows / tau, candidate_table, float("inf")
    else:
        raise ValueError(f"unknown similarity {similarity!r} (cosine, dot)")
    masked = fn_mode != "none"
    return weighted_infonce(scaled, candidates, anchors.nodes, anchors.multiplicity, bound,
                            anchors.fn_rows if masked else None, anchors.fn_cols if masked else None,
                            0.0 if fn_mode == "zero_logit" else float("-inf"))


# ------------------------------------------------------------------------------------------ augmentation
def drop_nodes(interactions: sp.csr_matrix, ratio: float,
               generator: torch.Generator | None = None) -> sp.csr_matrix:
    """Remove ⌊ρM⌋ users and ⌊ρN⌋ items (uniform, without replacement) with all their edges."""
    n_users, n_items = interactions.shape
    keep_users = np.ones(n_users)
    keep_items = np.ones(n_items)
    keep_users[torch.randperm(n_users, generator=generator)[: int(ratio * n_users)].numpy()] = 0.0
    keep_items[torch.randperm(n_items, generator=generator)[: int(ratio * n_items)].numpy()] = 0.0
    out = (sp.diags(keep_users) @ sp.csr_matrix(interactions) @ sp.diags(keep_items)).tocsr()
    out.eliminate_zeros()
    return out


def drop_edges(interactions: sp.csr_matrix, ratio: float,
               generator: torch.Generator | None = None) -> sp.csr_matrix:
    """Keep ⌊(1-ρ)|E|⌋ edges drawn uniformly without replacement."""
    coo = sp.coo_matrix(interactions)
    kept = torch.randperm(coo.nnz, generator=generator)[: int((1.0 - ratio) * coo.nnz)].numpy()
    return sp.csr_matrix((coo.data[kept], (coo.row[kept], coo.col[kept])), shape=coo.shape)


def draw_target_view(interactions: sp.csr_matrix, augmentation: Augmentation, ratio: float, layers: int,
                     device: torch.device | str,
                     generator: torch.Generator | None = None) -> list[SparseOperator]:
    """One augmented, symmetrically normalised target graph per layer (the same one unless ``walk``)."""
    def operator(mat: sp.csr_matrix) -> SparseOperator:
        return SparseOperator.from_interactions(mat, "symmetric", device)

    if augmentation == "walk":
        return [operator(drop_edges(interactions, ratio, generator)) for _ in range(layers)]
    if augmentation == "node":
        return [operator(drop_nodes(interactions, ratio, generator))] * layers
    if augmentation == "edge":
        return [operator(drop_edges(interactions, ratio, generator))] * layers
    raise ValueError(f"unknown augmentation {augmentation!r} (node, edge, walk)")
