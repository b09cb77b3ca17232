"""Which classes separate where: per-class and class-pair terms of the k-NN graph, k-NN accuracy.

Paper 1 reports one number per layer, Newman's Q of the k-NN graph with the classes as
communities. The same graph answers finer questions, all computed here from one k-NN pass:

- **Per-class modularity terms.** Q decomposes over communities (paper 1, Eq. 1 in closed form):
  Q = Σ_c Q_c with Q_c = e_cc/m − (a_c/2m)², where m is the total edge weight, e_cc the weight of
  the edges inside class c and a_c the summed weighted degree of its nodes. Q_c is the class's
  share of the layer's Q (it is negative when the class is less cohesive than chance).
- **Per-class k-NN purity** 2·e_cc / a_c: the share of the edge weight at the class's nodes that
  stays inside the class (1: every neighbour of a class-c sample is class c).
- **Class-pair weights** w_ab: the total weight of the edges between classes a and b, and a
  per-pair **entanglement** (the weight crossing between a and b relative to what a random
  relabelling of the two classes' nodes would give; see :func:`pair_entanglement`).
- **Leave-one-out k-NN accuracy** from each node's directed k-NN list (the lists the engine
  already selects for the graph, so it costs nothing extra; vote rule in :func:`knn_predict`).

Negative edge weights (Pearson similarity, or large k with weak signal) are kept with their sign
in the quantities that must add up to Q or to the edge weight (Q_c, the pair weights), and are
ignored (clamped to 0) in the shares (purity, entanglement): a negative similarity says that two
samples are unlike, which is neither cohesion nor entanglement, and letting it cancel positive
weight would push the shares out of [0, 1]. :attr:`ClassDiagnostics.negative_weight_share` says
how much weight that concerned. With cosine similarity of non-negative (post-ReLU) features all
weights are ≥ 0 and both readings coincide.

Over 500 lines: paper 2's class-separation measures (AQ, EQ, r, M) and their graph helpers belong
together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dnn_modularity.graph.edges import Graph
from dnn_modularity.graph.keys import INT64_MIN, decode_keys
from dnn_modularity.graph.knn import graph_from_knn_keys, knn_keys
from dnn_modularity.graph.modularity import modularity_of_codes
from dnn_modularity.graph.similarity import normalize_features, resolve_block_size
from dnn_modularity.graph.validation import (
    check_block_size,
    check_k,
    check_labels,
    check_metric,
)

__all__ = [
    "ClassDiagnostics",
    "KnnNeighbors",
    "class_diagnostics",
    "class_diagnostics_of_graph",
    "class_modularity_terms",
    "class_pair_weights",
    "class_purity",
    "first_crossing",
    "knn_accuracy",
    "knn_graph_with_neighbors",
    "knn_predict",
    "neighbors_from_knn_keys",
    "pair_entanglement",
]


# ------------------------------------------------------------------------------------------
# Neighbour lists
# ------------------------------------------------------------------------------------------
@dataclass
class KnnNeighbors:
    """Each node's directed k-NN list, as the k-NN graph was built from it.

    Attributes:
        indices: LongTensor (N, k), row i = the k columns paper 1's official code picks for node
            i (``heapq.nlargest`` over the similarity row with a zero diagonal), nearest first
            (larger similarity first, equal similarities: lower index first). An entry is -1 where
            the official code picks the node itself (a row with fewer than k positive
            similarities can, with similarity 0): that is no neighbour.
        similarities: float32 Tensor (N, k), the similarity of each entry (0 where -1).
    """

    indices: Tensor
    similarities: Tensor

    @property
    def k(self) -> int:
        """Entries per row."""
        return int(self.indices.shape[1])

    @property
    def num_nodes(self) -> int:
        """Rows N."""
        return int(self.indices.shape[0])


def neighbors_from_knn_keys(keys: Tensor) -> KnnNeighbors:
    """Decode :func:`~dnn_modularity.graph.knn.knn_keys` output into sorted neighbour lists.

    Args:
        keys: int64 (N, k) keys of :func:`~dnn_modularity.graph.keys.sort_keys`, any order within
            a row.

    Returns:
        :class:`KnnNeighbors` with rows in heapq order (nearest first); self entries and empty
        slots (``INT64_MIN``, never produced for N > k) become index -1, similarity 0.
    """
    n = keys.shape[0]
    keys = keys.sort(dim=1, descending=True).values  # a larger key is picked first by heapq
    values, cols = decode_keys(keys)
    rows = torch.arange(n, device=keys.device).unsqueeze(1)
    missing = (cols == rows) | (keys == INT64_MIN)
    return KnnNeighbors(
        indices=cols.masked_fill(missing, -1),
        similarities=values.masked_fill(missing, 0.0),
    )


def knn_graph_with_neighbors(
    features: Any, k: int = 3, metric: str = "cosine", block_size: int | None = None
) -> tuple[Graph, KnnNeighbors]:
    """Paper 1's symmetrised k-NN graph and the directed lists it was built from, in one pass.

    The graph equals :func:`~dnn_modularity.graph.knn.knn_graph`'s (same arguments, same
    selection, (A + Aᵀ)/2); the neighbour lists are the directed A before symmetrisation.

    Args:
        features: (N, ...) features, flattened to (N, D), CPU or CUDA.
        k: Neighbours per node, 1 <= k < N.
        metric: ``"cosine"`` or ``"pearson"``.
        block_size: Rows per similarity strip (None = about N/8 within a memory budget).

    Returns:
        ``(graph, neighbors)``: the undirected :class:`Graph` and :class:`KnnNeighbors` (N, k).

    Raises:
        ValueError: Bad features, k, metric or block_size (see :mod:`.validation`).
    """
    check_metric(metric)
    check_block_size(block_size)
    x = normalize_features(features, metric)
    check_k(k, x.shape[0])
    return _graph_and_neighbors(x, k, block_size)


def _graph_and_neighbors(x: Tensor, k: int, block_size: int | None) -> tuple[Graph, KnnNeighbors]:
    """The k-NN pass on already row-normalised (N, D) features (arguments checked)."""
    keys = knn_keys(x, k, resolve_block_size(block_size, x.shape[0], x.device))
    return graph_from_knn_keys(keys), neighbors_from_knn_keys(keys)


# ------------------------------------------------------------------------------------------
# k-NN vote
# ------------------------------------------------------------------------------------------
def _check_neighbors(neighbors: KnnNeighbors, n: int) -> None:
    if neighbors.indices.dim() != 2 or neighbors.num_nodes != n:
        raise ValueError(
            f"neighbour lists must have shape (N, k) with N = {n}, got "
            f"{tuple(neighbors.indices.shape)}"
        )


def knn_predict(neighbors: KnnNeighbors, codes: Tensor, num_classes: int) -> Tensor:
    """Leave-one-out k-NN class prediction of every node from its directed k-NN list.

    Vote rule: each neighbour in the node's list (the node itself excluded: it is never in its
    own list, see :class:`KnnNeighbors`) casts one unweighted vote for its class; the class with
    most votes wins; a tie between classes goes to the tied class of the nearest neighbour
    (the first entry of the list among the tied classes, i.e. the larger similarity, and among
    equal similarities the lower node index, heapq's order). Neighbours with zero or negative
    similarity vote like the others: they are among the k nearest. A node whose list holds no
    neighbour (possible only when fewer than k other nodes have positive similarity with it,
    e.g. k = 1 and an all-zero feature row) gets prediction -1 and counts as wrong.

    Args:
        neighbors: (N, k) lists from :func:`knn_graph_with_neighbors`.
        codes: LongTensor (N,) class codes in 0..C-1.
        num_classes: C.

    Returns:
        LongTensor (N,) predicted codes in 0..C-1, or -1.
    """
    idx = neighbors.indices.to(codes.device)
    n, k = idx.shape
    valid = idx >= 0
    votes_for = torch.where(valid, codes[idx.clamp(min=0)], num_classes)  # C = a dummy class
    counts = torch.zeros(n, num_classes + 1, dtype=torch.long, device=codes.device)
    counts.scatter_add_(1, votes_for, torch.ones_like(votes_for))
    # rank of each class's nearest neighbour (k where the class has none): scatter_reduce amin
    ranks = torch.arange(k, device=codes.device).expand(n, k)
    first = torch.full((n, num_classes + 1), k, dtype=torch.long, device=codes.device)
    first.scatter_reduce_(1, votes_for, ranks, reduce="amin")
    # More votes first; among equal counts the smaller first rank. Distinct classes have
    # distinct first ranks, so the maximum is unique; classes without votes score 0.
    score = counts[:, :num_classes] * (k + 1) + (k - first[:, :num_classes])
    pred = score.argmax(dim=1)
    return pred.masked_fill(~valid.any(dim=1), -1)


def knn_accuracy(neighbors: KnnNeighbors, labels: Any) -> float:
    """Leave-one-out k-NN accuracy: the share of nodes whose :func:`knn_predict` vote is right.

    Args:
        neighbors: (N, k) lists from :func:`knn_graph_with_neighbors`.
        labels: Integer class labels (N,), any values.

    Returns:
        Accuracy in [0, 1].

    Raises:
        ValueError: Bad labels or lists of the wrong shape.
    """
    codes, num_classes = check_labels(labels, neighbors.num_nodes)
    pred = knn_predict(neighbors, codes, num_classes)
    return float((pred == codes).double().mean())


# ------------------------------------------------------------------------------------------
# Per-class and class-pair terms of a graph
# ------------------------------------------------------------------------------------------
def _total_weight(graph: Graph) -> Tensor:
    m = graph.weight.to(torch.float64).sum()
    if graph.num_edges == 0 or float(m) == 0.0:
        raise ValueError(
            f"per-class modularity is undefined for a graph whose total edge weight is 0 "
            f"({graph.num_edges} edges)"
        )
    return m


def _pair_matrix(graph: Graph, codes: Tensor, num_classes: int, weight: Tensor) -> Tensor:
    """(C, C) float64: W[a, a] = weight inside a; W[a, b] = W[b, a] = weight between a and b."""
    cs, cd = codes[graph.src], codes[graph.dst]
    flat = torch.zeros(num_classes * num_classes, dtype=torch.float64, device=graph.device)
    flat.index_add_(0, cs * num_classes + cd, weight)
    pair = flat.view(num_classes, num_classes)
    return pair + pair.T - torch.diag(pair.diagonal())  # each edge stored once, in either order


def _class_degree(graph: Graph, codes: Tensor, num_classes: int, weight: Tensor) -> Tensor:
    deg = torch.zeros(graph.num_nodes, dtype=torch.float64, device=graph.device)
    deg.index_add_(0, graph.src, weight).index_add_(0, graph.dst, weight)
    out = torch.zeros(num_classes, dtype=torch.float64, device=graph.device)
    return out.index_add_(0, codes, deg)


def _q_terms(pair: Tensor, degree: Tensor, m: Tensor) -> Tensor:
    return pair.diagonal() / m - (degree / (2 * m)) ** 2


def _purity(pair_pos: Tensor, degree_pos: Tensor) -> Tensor:
    intra = 2 * pair_pos.diagonal()
    return torch.where(degree_pos > 0, intra / degree_pos.clamp(min=1e-300), math.nan)


def class_modularity_terms(graph: Graph, labels: Any) -> Tensor:
    """Each class's term of Newman's modularity: Q_c = e_cc/m − (a_c/2m)², summing to Q.

    m is the total edge weight, e_cc the weight of the edges with both ends in class c and a_c the
    summed weighted degree of class c's nodes (resolution 1, signed weights, float64), the closed
    form that :func:`~dnn_modularity.graph.modularity.modularity` sums.

    Args:
        graph: Undirected :class:`Graph` with N nodes.
        labels: Integer class labels (N,), any values; class c is the c-th smallest label value.

    Returns:
        float64 Tensor (C,) with ``Q_c.sum() == modularity(graph, labels)`` up to rounding.

    Raises:
        ValueError: Bad labels, fewer than two classes, or total edge weight 0.
    """
    codes, num_classes = check_labels(labels, graph.num_nodes, device=graph.device)
    m = _total_weight(graph)
    w = graph.weight.to(torch.float64)
    pair = _pair_matrix(graph, codes, num_classes, w)
    return _q_terms(pair, _class_degree(graph, codes, num_classes, w), m)


def class_purity(graph: Graph, labels: Any) -> Tensor:
    """Each class's k-NN purity: the share of its nodes' edge weight that stays inside the class.

    purity_c = 2·e⁺_cc / a⁺_c, with e⁺_cc the positive weight of the edges inside class c and a⁺_c
    the positive weight at its nodes (an intra-class edge counts at both of its ends, an edge
    leaving the class once). 1: every edge at a class-c node stays in class c; for a class of
    share p mixed at random, about p. Negative weights are ignored (see the module docstring).

    Args:
        graph: Undirected :class:`Graph` with N nodes.
        labels: Integer class labels (N,), any values.

    Returns:
        float64 Tensor (C,) in [0, 1]; NaN for a class without positive edge weight.

    Raises:
        ValueError: Bad labels or fewer than two classes.
    """
    codes, num_classes = check_labels(labels, graph.num_nodes, device=graph.device)
    w = graph.weight.to(torch.float64).clamp(min=0)
    pair = _pair_matrix(graph, codes, num_classes, w)
    return _purity(pair, _class_degree(graph, codes, num_classes, w))


def class_pair_weights(graph: Graph, labels: Any) -> Tensor:
    """The C × C class-pair edge-weight matrix W of the graph (signed weights, float64).

    W[a, a] = e_aa, the weight of the edges inside class a; W[a, b] = W[b, a] = w_ab, the weight
    of the edges between classes a and b (each such edge counted once in w_ab). Hence
    Σ_{a<b} W[a, b] (half of the off-diagonal entries' sum) is the inter-class edge weight,
    trace(W) the intra-class weight, and their sum the total weight m; a class's weighted degree
    is a_c = 2·W[c, c] + Σ_{b≠c} W[c, b].

    Args:
        graph: Undirected :class:`Graph` with N nodes.
        labels: Integer class labels (N,), any values.

    Returns:
        Symmetric float64 Tensor (C, C).

    Raises:
        ValueError: Bad labels or fewer than two classes.
    """
    codes, num_classes = check_labels(labels, graph.num_nodes, device=graph.device)
    return _pair_matrix(graph, codes, num_classes, graph.weight.to(torch.float64))


def pair_entanglement(pair_weights: Tensor) -> Tensor:
    """Per-pair entanglement: observed cross weight over the cross weight of random mixing.

    For classes a ≠ b, restrict the graph to their nodes: x = W[a, a], y = W[b, b] and z = W[a, b]
    (entries of the class-pair matrix, clamped at 0), T = x + y + z its weight, D_a = 2x + z and
    D_b = 2y + z the degrees of the two classes in it. If the pair's nodes were assigned to a and
    b at random (keeping the degrees, the configuration model behind Newman's Q) the expected
    crossing weight would be D_a·D_b / (2T). The entanglement is

        E_ab = z / (D_a·D_b / (2T)) = 2·z·T / (D_a·D_b)

    0: no edge between a and b (separated); 1: they are as mixed as random labels would make them
    (indistinguishable in the graph); up to 2: more crossing than random (bipartite-like). It is
    1 − Q_ab / (expected cross share), Q_ab being the modularity of the two-class subgraph, so
    it is Newman's own null model applied to one pair; unlike the raw cross share z/T (whose
    random-mixing value is 2·n_a·n_b/(n_a + n_b)² for k-NN graphs) it is corrected for the two
    classes' sizes through their degrees (for two equal classes E_ab = 2·z/T).

    Args:
        pair_weights: (C, C) class-pair matrix: :func:`class_pair_weights` of the graph, or (as
            :func:`class_diagnostics_of_graph` does, ignoring negative edges) of the graph with
            its negative edge weights set to 0.

    Returns:
        Symmetric float64 Tensor (C, C) in [0, 2]: 0 wherever z = 0 (then D_a·D_b may be 0 too),
        NaN on the diagonal.

    Raises:
        ValueError: A non-square matrix.
    """
    if pair_weights.dim() != 2 or pair_weights.shape[0] != pair_weights.shape[1]:
        raise ValueError(f"pair_weights must be (C, C), got shape {tuple(pair_weights.shape)}")
    w = pair_weights.to(torch.float64).clamp(min=0)
    diag = w.diagonal()
    x, y = diag.unsqueeze(1), diag.unsqueeze(0)
    total = x + y + w
    d_a, d_b = 2 * x + w, 2 * y + w
    denom = d_a * d_b  # > 0 wherever z > 0 (z is part of both degrees)
    out = torch.where(w > 0, 2 * w * total / denom.clamp(min=1e-300), 0.0)
    return out.fill_diagonal_(math.nan)


# ------------------------------------------------------------------------------------------
# Everything at once
# ------------------------------------------------------------------------------------------
@dataclass
class ClassDiagnostics:
    """Per-class and class-pair diagnostics of one layer's k-NN graph (C classes, N nodes).

    Class c is the c-th smallest label value (``classes[c]``). Tensors are on the graph's device.

    Attributes:
        classes: (C,) the label value of each class.
        counts: LongTensor (C,) nodes per class.
        modularity: Q (paper 1's measurement of the layer), the value of
            :func:`~dnn_modularity.graph.modularity.knn_modularity`; Σ_c class_q[c] up to rounding.
        class_q: float64 (C,) per-class terms Q_c (:func:`class_modularity_terms`).
        purity: float64 (C,) per-class k-NN purity (:func:`class_purity`), NaN if undefined.
        class_degree: float64 (C,) summed signed weighted degree a_c of each class.
        pair_weight: float64 (C, C) class-pair edge weights (:func:`class_pair_weights`).
        entanglement: float64 (C, C) per-pair entanglement (:func:`pair_entanglement`).
        negative_weight_share: Σ|negative weights| / Σ|weights| (0 for non-negative graphs).
        knn_predictions: LongTensor (N,) leave-one-out k-NN predicted codes (-1: no neighbour);
            None when built from a graph alone.
        knn_accuracy: Leave-one-out k-NN accuracy (:func:`knn_predict`), or None.
        class_knn_accuracy: float64 (C,) per-class k-NN accuracy (recall), or None.
        k: Neighbours per node, or None when built from a graph alone.
        metric: The similarity, or None when built from a graph alone.
    """

    classes: Tensor
    counts: Tensor
    modularity: float
    class_q: Tensor
    purity: Tensor
    class_degree: Tensor
    pair_weight: Tensor
    entanglement: Tensor
    negative_weight_share: float
    knn_predictions: Tensor | None = None
    knn_accuracy: float | None = None
    class_knn_accuracy: Tensor | None = None
    k: int | None = None
    metric: str | None = None

    @property
    def num_classes(self) -> int:
        """C."""
        return int(self.classes.numel())

    @property
    def inter_class_weight(self) -> float:
        """Total weight of the edges between different classes (Σ_{a<b} pair_weight[a, b])."""
        return float(self.pair_weight.triu(diagonal=1).sum())

    def most_entangled_pairs(self, top: int = 5) -> list[tuple[Any, Any, float]]:
        """The ``top`` class pairs of largest entanglement, most entangled first.

        Returns:
            ``(label a, label b, entanglement)`` with label a < label b, as Python scalars;
            equal values are ordered by (a, b).
        """
        c = self.num_classes
        a, b = torch.triu_indices(c, c, offset=1, device=self.entanglement.device)
        values = self.entanglement[a, b]
        order = torch.sort(values, descending=True, stable=True).indices[: max(0, top)]
        labels = self.classes.tolist()
        return [(labels[int(a[i])], labels[int(b[i])], float(values[i])) for i in order.tolist()]


def class_diagnostics_of_graph(
    graph: Graph, labels: Any, neighbors: KnnNeighbors | None = None
) -> ClassDiagnostics:
    """:class:`ClassDiagnostics` of any undirected graph (k-NN or top-|E|), classes as communities.

    Args:
        graph: Undirected :class:`Graph` with N nodes and positive total weight.
        labels: Integer class labels (N,), any values.
        neighbors: Optional (N, k) directed lists the graph was built from; with them the k-NN
            accuracy fields are filled.

    Returns:
        The diagnostics (``k``/``metric`` None; set by :func:`class_diagnostics`).

    Raises:
        ValueError: Bad labels, fewer than two classes, total weight 0, or lists of another N.
    """
    y = torch.as_tensor(labels)
    codes, num_classes = check_labels(y, graph.num_nodes, device=graph.device)
    m = _total_weight(graph)
    w = graph.weight.to(torch.float64)
    w_pos = w.clamp(min=0)
    pair = _pair_matrix(graph, codes, num_classes, w)
    pair_pos = _pair_matrix(graph, codes, num_classes, w_pos)
    degree = _class_degree(graph, codes, num_classes, w)
    class_q = _q_terms(pair, degree, m)
    abs_total = float(w.abs().sum())
    neg_share = float((w_pos - w).sum()) / abs_total if abs_total > 0 else 0.0
    counts = torch.bincount(codes, minlength=num_classes)
    out = ClassDiagnostics(
        classes=torch.unique(y.to(graph.device)),
        counts=counts,
        modularity=modularity_of_codes(graph, codes, num_classes, 1.0),  # knn_modularity's Q
        class_q=class_q,
        purity=_purity(pair_pos, _class_degree(graph, codes, num_classes, w_pos)),
        class_degree=degree,
        pair_weight=pair,
        entanglement=pair_entanglement(pair_pos),
        negative_weight_share=neg_share,
    )
    if neighbors is not None:
        _check_neighbors(neighbors, graph.num_nodes)
        pred = knn_predict(neighbors, codes, num_classes)
        right = (pred == codes).double()
        per_class = torch.zeros(num_classes, dtype=torch.float64, device=codes.device)
        per_class.index_add_(0, codes, right)
        out.knn_predictions = pred
        out.knn_accuracy = float(right.mean())
        out.class_knn_accuracy = per_class / counts
    return out


def class_diagnostics(
    features: Any,
    labels: Any,
    k: int = 3,
    metric: str = "cosine",
    block_size: int | None = None,
) -> ClassDiagnostics:
    """All per-class diagnostics of one layer from one k-NN pass (paper 1's graph).

    Builds the k-NN graph of :func:`~dnn_modularity.graph.knn.knn_graph` and its directed lists
    (:func:`knn_graph_with_neighbors`), then the per-class Q terms, purity, class-pair weights
    and entanglement, and the leave-one-out k-NN accuracy. ``modularity`` equals
    :func:`~dnn_modularity.graph.modularity.knn_modularity` with the same arguments.

    Args:
        features: (N, ...) features of N samples (flattened to (N, D)), CPU or CUDA.
        labels: Integer class labels (N,), any values.
        k: Neighbours per node, 1 <= k < N.
        metric: ``"cosine"`` or ``"pearson"``.
        block_size: Rows per similarity strip (None = about N/8 within a memory budget).

    Returns:
        :class:`ClassDiagnostics` with every field set.

    Raises:
        ValueError: Bad features, labels, k, metric or block_size (checked before the k-NN
            pass), or a graph of total weight 0 (e.g. all-zero features).
    """
    check_metric(metric)
    check_block_size(block_size)
    x = normalize_features(features, metric)
    check_labels(labels, x.shape[0])
    check_k(k, x.shape[0])
    graph, neighbors = _graph_and_neighbors(x, k, block_size)
    out = class_diagnostics_of_graph(graph, labels, neighbors)
    out.k, out.metric = k, metric
    return out


# ------------------------------------------------------------------------------------------
# Over layers
# ------------------------------------------------------------------------------------------
def first_crossing(curves: Any, threshold: float, *, above: bool = True) -> Tensor:
    """First layer (row) at which each column's value reaches ``threshold``.

    E.g. the layer at which each class's purity first exceeds 0.9 (``curves`` = purity per layer,
    (L, C)), or, with ``above=False``, at which each pair's entanglement first drops to a level.

    Args:
        curves: (L, ...) values per layer (rows in layer order), e.g. (L, C) or (L, C, C).
        threshold: The level.
        above: True: first row with value >= threshold; False: first row with value <= threshold.

    Returns:
        LongTensor of shape ``curves.shape[1:]``: the 0-based row index, or -1 where the level is
        never reached (NaN never reaches it).

    Raises:
        ValueError: ``curves`` with no layer dimension or no rows, or a NaN threshold.
    """
    values = torch.as_tensor(curves, dtype=torch.float64)
    if values.dim() < 1 or values.shape[0] == 0:
        raise ValueError(f"curves must have shape (L, ...) with L >= 1, got {tuple(values.shape)}")
    if math.isnan(threshold):
        raise ValueError("threshold must not be NaN")
    hit = values >= threshold if above else values <= threshold
    first = hit.to(torch.uint8).argmax(dim=0)  # the first maximum: the first True
    return torch.where(hit.any(dim=0), first, -1)
