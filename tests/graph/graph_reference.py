"""Reference implementations shared by the engine tests (not a test module).

``official_modularity`` is paper 1's official algorithm step by step (dense similarity, diagonal
set to 0, ``heapq.nlargest`` per row into a dense float64 matrix, (A + Aᵀ)/2, networkx). It is fed
the same float32 similarities as the engine path under test: ``strip_sim`` (the float32 path's
strips as a dense matrix) or ``pairwise_sim`` (the screened path's per-pair dot products).
"""

from __future__ import annotations

import heapq
import itertools

import networkx as nx
import numpy as np
import torch

from dnn_modularity.graph import Graph, normalize_features
from dnn_modularity.graph.screen import pair_similarities
from dnn_modularity.graph.similarity import (
    block_bounds,
    compute_strip,
    dense_applies,
    dense_similarity,
    resolve_block_size,
)


def official_adjacency(sim: np.ndarray, k: int) -> np.ndarray:
    sim = np.array(sim, dtype=np.float32, copy=True)
    n = sim.shape[0]
    np.fill_diagonal(sim, 0)
    adj = np.zeros((n, n))
    for i in range(n):
        row = sim[i]
        idx = heapq.nlargest(k, range(n), row.take)
        adj[i, idx] = row[idx]
    return (adj + adj.T) / 2


def official_modularity(sim: np.ndarray, labels: np.ndarray, k: int) -> tuple[float, dict]:
    graph = nx.from_numpy_array(official_adjacency(sim, k))
    communities = [set(np.flatnonzero(labels == c).tolist()) for c in np.unique(labels)]
    edges = {(min(u, v), max(u, v)): d["weight"] for u, v, d in graph.edges(data=True)}
    return nx.community.modularity(graph, communities), edges


def edge_dict(graph: Graph) -> dict:
    return dict(
        zip(
            zip(graph.src.tolist(), graph.dst.tolist(), strict=True),
            graph.weight.tolist(),
            strict=True,
        )
    )


def strip_sim(features: torch.Tensor, metric: str, block_size: int | None = None) -> np.ndarray:
    """The float32 similarities the engine's float32 path uses: its strips, as a dense matrix."""
    x = normalize_features(features, metric)
    n = x.shape[0]
    if dense_applies(n, x.shape[1]):  # the dense route: one strip of all rows
        return dense_similarity(x).numpy()
    dense = torch.empty(n, n)
    for i0, i1 in itertools.pairwise(block_bounds(n, resolve_block_size(block_size, n, "cpu"))):
        strip = torch.empty(i1 - i0, n - i0)
        compute_strip(x, i0, i1, strip, mirror=True)
        dense[i0:i1, i0:] = strip
        dense[i0:, i0:i1] = strip.T
    return dense.numpy()


def float32_dot_bound(dim: int) -> float:
    """Largest difference of two float32 evaluations of x·y for unit x, y (any summation order).

    Each is within γ_D·Σ|x_i y_i| <= γ_D of the exact value (Higham, Thm. 3.1 + Cauchy-Schwarz;
    γ_D = D·u/(1 − D·u), u = 2⁻²⁴), plus ~2 ulps for the rows' own normalisation rounding.
    """
    unit = 2.0**-24
    return 2 * dim * unit / (1 - dim * unit) + 4 * unit


def pairwise_sim(features: torch.Tensor, metric: str) -> np.ndarray:
    """float32 similarities by per-pair dot products (the screened path's recomputation)."""
    x = normalize_features(features, metric)
    n = x.shape[0]
    rows = torch.arange(n).repeat_interleave(n)
    cols = torch.arange(n).repeat(n)
    return pair_similarities(x, x, rows, cols).view(n, n).numpy()


def to_networkx(graph: Graph) -> nx.Graph:
    """A ``networkx.Graph`` with nodes 0..N-1 and a ``weight`` attribute per edge (the engine
    imports only torch, so the networkx view of its graphs lives with the reference code)."""
    out = nx.Graph()
    out.add_nodes_from(range(graph.num_nodes))
    out.add_weighted_edges_from(
        zip(graph.src.tolist(), graph.dst.tolist(), graph.weight.tolist(), strict=True)
    )
    return out
