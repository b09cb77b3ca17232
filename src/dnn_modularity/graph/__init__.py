"""The engine: similarity graphs of samples' features and their modularity (torch, CPU/GPU).

Paper 1 (Lu et al. 2022) measures, per layer, the Newman modularity of a k-NN graph of the samples'
flattened features with the classes as communities: :func:`knn_modularity` (= :func:`knn_graph` +
:func:`modularity`). Paper 2 ("Understanding the class separation process of CNNs") uses all-pairs
similarity histograms (:func:`similarity_histogram`), the top-|E| subgraph
(:func:`top_edges_graph`) and M = r × AQ × (1 − EQ) (:func:`class_separation`). Linear CKA and
|M_i − M_j| compare layers (paper 1, Fig. 8). Apart from CKA's Gram matrices and the k-NN dense
route's whole matrix (N <= 2048), no function here builds an N×N matrix beyond one block of rows.
On the CPU, numpy takes over where it is faster: BLAS ``syrk`` for symmetric products, and the
small, overhead-bound steps of the dense route (top-k filter, symmetrisation).
"""

from dnn_modularity.graph.cka import cka_matrix, linear_cka, modularity_difference
from dnn_modularity.graph.edge_budget import EdgeBudget, resolve_num_edges
from dnn_modularity.graph.knn import Graph, knn_graph, top_edges_graph
from dnn_modularity.graph.modularity import (
    ClassSeparation,
    class_separation,
    knn_modularity,
    modularity,
)
from dnn_modularity.graph.similarity import (
    SimilarityHistogram,
    normalize_features,
    similarity_histogram,
)
from dnn_modularity.graph.validation import METRICS

__all__ = [
    "METRICS",
    "ClassSeparation",
    "EdgeBudget",
    "Graph",
    "SimilarityHistogram",
    "cka_matrix",
    "class_separation",
    "knn_graph",
    "knn_modularity",
    "linear_cka",
    "modularity",
    "modularity_difference",
    "normalize_features",
    "resolve_num_edges",
    "similarity_histogram",
    "top_edges_graph",
]
