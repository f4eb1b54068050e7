"""Graph layer: bipartite adjacencies, normalisations, cumulative graphs and the SpMM operator."""

from mbrec.graph.adjacency import bipartite, cumulative, normalize, normalized_bipartite, union
from mbrec.graph.spmm import SparseOperator, spmm

__all__ = ["SparseOperator", "bipartite", "cumulative", "normalize", "normalized_bipartite", "spmm", "union"]
