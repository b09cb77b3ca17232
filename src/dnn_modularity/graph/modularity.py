"""Newman modularity with the classes as communities (paper 1); class-separation M (paper 2)."""

from __future__ import annotations

from types import ModuleType
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from dnn_modularity.graph.kernels import resolve_kernel
from dnn_modularity.graph.knn import Graph, knn_graph_of_rows
from dnn_modularity.graph.similarity import normalize_features, resolve_block_size
from dnn_modularity.graph.validation import (
    check_block_size,
    check_k,
    check_labels,
    check_metric,
    check_resolution,
)


def modularity_of_codes(graph: Graph, codes: Tensor, num_classes: int, resolution: float) -> float:
    """Closed-form Q = Σ_c [L_c/m − γ·(d_c/2m)²] (float64 sums) for class codes 0..C-1.

    Args:
        graph: Undirected :class:`Graph` with N nodes.
        codes: LongTensor (N,) class codes in 0..C-1 (:func:`~.validation.check_labels`).
        num_classes: C.
        resolution: γ.

    Returns:
        Q as a Python float.

    Raises:
        ValueError: A graph whose total edge weight is 0.
    """
    # CPU graphs in numpy, whose per-call overhead is a fraction of torch's: at N = 500 this
    # function is dominated by it (measured on a Xeon right after the similarity product:
    # ~0.35 ms in torch, ~0.1-0.2 ms in numpy)
    if graph.device.type == "cpu":
        weight = graph.weight.numpy().astype(np.float64, copy=False)  # float64 already: no copy
        edges = graph.src.numpy(), graph.dst.numpy(), weight
        q = _closed_form_q(np, *edges, codes.cpu().numpy(), num_classes, resolution)
    else:
        edges = graph.src, graph.dst, graph.weight.to(torch.float64)
        q = _closed_form_q(torch, *edges, codes.to(graph.device), num_classes, resolution)
    if q is None:
        raise ValueError(
            f"modularity is undefined for a graph whose total edge weight is 0 "
            f"({graph.num_edges} edges)"
        )
    return q


def _closed_form_q(
    lib: ModuleType,
    src: Any,
    dst: Any,
    weight: Any,
    codes: Any,
    num_classes: int,
    resolution: float,
) -> float | None:
    """Q from the edge list by per-class sums, in ``lib`` (numpy or torch), or None when m = 0.

    Args:
        lib: The ``numpy`` or ``torch`` module; the arrays below are that library's.
        src: int64 (E,) edge ends.
        dst: int64 (E,) edge ends.
        weight: float64 (E,) edge weights.
        codes: int64 (N,) class codes in 0..C-1.
        num_classes: C.
        resolution: γ.
    """
    m = float(weight.sum())
    if m == 0.0:
        return None
    # per-class sums straight from the edge list: three bincounts, where per-node degrees and
    # boolean masks took a dozen calls
    src_class, dst_class = codes[src], codes[dst]
    degree = lib.bincount(src_class, weight, num_classes) + lib.bincount(
        dst_class, weight, num_classes
    )
    intra = lib.bincount(src_class, lib.where(src_class == dst_class, weight, 0.0), num_classes)
    return float((intra / m - resolution * (degree / (2 * m)) ** 2).sum())


def modularity(graph: Graph, labels: Any, resolution: float = 1.0) -> float:
    """Newman's weighted modularity of ``graph`` with one community per class (paper 1, Eq. 1).

    Q = 1/(2m) Σ_ij [A_ij − γ k_i k_j / (2m)] δ(c_i, c_j), computed in closed form as
    Q = Σ_c [L_c/m − γ (d_c / 2m)²] with m the total edge weight, L_c the weight of edges inside
    class c and d_c the summed weighted degree of its nodes; all sums in float64. The value equals
    ``networkx.community.modularity(to_networkx(graph), classes, resolution=γ)``, negative edge
    weights included (igraph refuses those).

    Args:
        graph: Undirected :class:`Graph` with N nodes.
        labels: Integer class labels (N,), any values (not necessarily 0..C-1).
        resolution: γ (1 in the paper).

    Returns:
        Q as a Python float.

    Raises:
        ValueError: Labels of the wrong shape/length/dtype, fewer than two classes, a non-finite
            resolution, or a graph with total weight 0.
    """
    gamma = check_resolution(resolution)
    codes, num_classes = check_labels(labels, graph.num_nodes)
    return modularity_of_codes(graph, codes, num_classes, gamma)


def knn_modularity(
    features: Any,
    labels: Any,
    k: int = 3,
    metric: str = "cosine",
    block_size: int | None = None,
    *,
    kernel: str | None = None,
) -> float:
    """Paper 1's per-layer measurement: modularity of the k-NN graph, classes as communities.

    Equals the official code's value (dense similarity with a zero diagonal, ``heapq.nlargest``
    per row, (A + Aᵀ)/2, networkx modularity) without its dense N×N arrays: see
    :func:`~dnn_modularity.graph.knn.knn_graph` and :func:`modularity`. All inputs are checked
    before the graph is built.

    Args:
        features: (N, ...) features of N samples (flattened to (N, D)), CPU or CUDA.
        labels: Integer class labels (N,), any values.
        k: Neighbours per node, 1 <= k < N.
        metric: ``"cosine"`` or ``"pearson"``.
        block_size: Rows per similarity strip (None = about N/8 within a memory budget).
        kernel: Strip matmul (``"auto"``, ``"float32"``, ``"bfloat16"``, ``"float16"``; None =
            the ``DNN_MODULARITY_KERNEL`` environment variable, else ``"auto"``): see
            :func:`~dnn_modularity.graph.knn.knn_graph`. Q is exact with each.

    Returns:
        The modularity Q.

    Raises:
        ValueError: Bad features, labels, k, metric, block_size or kernel (see
            :mod:`.validation`).
    """
    check_metric(metric)
    check_block_size(block_size)
    resolve_kernel(kernel)
    x = normalize_features(features, metric)  # validates the features
    n = x.shape[0]
    codes, num_classes = check_labels(labels, n)
    check_k(k, n)
    bsize = resolve_block_size(block_size, n, x.device)
    graph = knn_graph_of_rows(x, k, bsize, kernel)
    return modularity_of_codes(graph, codes, num_classes, 1.0)


class ClassSeparation(NamedTuple):
    """Paper 2's class-separation quantities (Eqs. 3-5).

    Attributes:
        aq: Correct-modularity AQ (Eq. 3).
        eq: Wrong-modularity EQ (Eq. 4).
        r: Fraction of edges that connect samples of the same class, |AS| / |E|.
        m: M = r × AQ × (1 − EQ) (Eq. 5).
    """

    aq: float
    eq: float
    r: float
    m: float


def class_separation(graph: Graph, labels: Any) -> ClassSeparation:
    """Class-separation modularity M = r × AQ × (1 − EQ) of paper 2 (Sec. 3.1, Eqs. 3-5).

    Paper 2 defines, on a similarity graph (in its experiments the top-|E| subgraph of
    :func:`~dnn_modularity.graph.knn.top_edges_graph`):

    - s_i = Σ_j sim_ij, "the sum of the weights of all edges connected to" vertex i, and
      S = Σ_i s_i;
    - AS / ES = the edges joining samples of the same / of different classes;
    - AQ = 1/(2S) Σ_{(i,j)∈AS} (sim_ij − s_i s_j / (2S))   (Eq. 3),
      EQ = 1/(2S) Σ_{(i,j)∈ES} (sim_ij − s_i s_j / (2S))   (Eq. 4);
    - r = |AS| / |E| and M = r × AQ × (1 − EQ)                 (Eq. 5).

    The text leaves some choices open; this function implements it as written, reading it as:

    1. s_i sums the weights of the edges of the graph it is given (the |E| kept edges), not all
       N−1 similarities of the complete graph;
    2. S = Σ_i s_i is therefore twice the total edge weight (each edge counted at both ends), and
       the factor 2S is taken literally (it is not replaced by Newman's 2m = S);
    3. the sums over AS and ES run over the graph's *edges*, each unordered edge (i, j) once — not
       over all same-class / different-class pairs, and not over ordered pairs;
    4. r counts edges (unweighted): |AS| / |E|.

    With these readings AQ + EQ = 1/(2S) Σ_e (w_e − s_i s_j/(2S)) over all edges; AQ grows and
    EQ shrinks as edges concentrate inside classes.

    Args:
        graph: Undirected weighted :class:`Graph` with at least one edge.
        labels: Integer class labels (N,), any values.

    Returns:
        :class:`ClassSeparation` ``(aq, eq, r, m)``.

    Raises:
        ValueError: Bad labels, fewer than two classes, no edges, or S = 0.
    """
    codes, _ = check_labels(labels, graph.num_nodes)
    if graph.num_edges == 0:
        raise ValueError("class_separation needs a graph with at least one edge, got 0 edges")
    codes = codes.to(graph.device)
    w = graph.weight.to(torch.float64)
    s = graph.degrees()
    total = s.sum()  # S
    if float(total) == 0.0:
        raise ValueError("class_separation is undefined when the total edge weight S is 0")
    term = w - s[graph.src] * s[graph.dst] / (2 * total)
    same = codes[graph.src] == codes[graph.dst]
    aq = float(term[same].sum() / (2 * total))
    eq = float(term[~same].sum() / (2 * total))
    r = float(same.sum()) / graph.num_edges
    return ClassSeparation(aq=aq, eq=eq, r=r, m=r * aq * (1.0 - eq))
