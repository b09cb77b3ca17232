"""Per-class Q terms, purity, class-pair weights/entanglement and k-NN accuracy of the k-NN graph.

References: the engine's Q, networkx's modularity and graph, a dense copy of paper 1's official
adjacency, and a brute-force leave-one-out vote over ``heapq.nlargest`` neighbour lists.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter

import networkx as nx
import numpy as np
import pytest
import torch
from graph_reference import to_networkx

from dnn_modularity.graph import Graph, knn_graph, knn_modularity, modularity
from dnn_modularity.graph.classes import (
    KnnNeighbors,
    class_diagnostics,
    class_diagnostics_of_graph,
    class_modularity_terms,
    class_pair_weights,
    class_purity,
    first_crossing,
    knn_accuracy,
    knn_graph_with_neighbors,
    knn_predict,
    pair_entanglement,
)
from dnn_modularity.graph.similarity import normalize_features


def planted(n: int, num_classes: int, strength: float, dim: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=gen)
    labels[:num_classes] = torch.arange(num_classes)
    means = torch.randn(num_classes, dim, generator=gen)
    feats = strength * means[labels] + torch.randn(n, dim, generator=gen)
    return feats, labels * 7 + 2  # label values that are not 0..C-1


def tie_heavy(kind: str, n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if kind == "integer":
        return torch.randint(0, 3, (n, 4), generator=gen).float()
    if kind == "duplicates":
        base = torch.randn(max(2, n // 5), 6, generator=gen)
        return base[torch.randint(0, base.shape[0], (n,), generator=gen)]
    if kind == "zeros":
        feats = torch.randn(n, 5, generator=gen)
        feats[torch.rand(n, generator=gen) < 0.3] = 0
        return feats
    raise AssertionError(kind)


def official_lists(features: torch.Tensor, k: int, metric: str) -> tuple[np.ndarray, list]:
    """Similarity (zero diagonal) and each row's heapq.nlargest picks, as the official code."""
    x = normalize_features(features, metric)
    sim = (x @ x.T).numpy().astype(np.float32)
    np.fill_diagonal(sim, 0)
    n = sim.shape[0]
    return sim, [heapq.nlargest(k, range(n), sim[i].take) for i in range(n)]


def dense_adjacency(sim: np.ndarray, lists: list) -> np.ndarray:
    n = sim.shape[0]
    adj = np.zeros((n, n))
    for i, cols in enumerate(lists):
        adj[i, cols] = sim[i, cols]
    np.fill_diagonal(adj, 0)
    return (adj + adj.T) / 2


def brute_force_vote(lists: list, codes: np.ndarray, num_classes: int) -> np.ndarray:
    """The documented rule: most votes; ties -> the tied class of the nearest neighbour."""
    pred = np.full(len(lists), -1)
    for i, cols in enumerate(lists):
        neigh = [c for c in cols if c != i]
        if not neigh:
            continue
        votes = Counter(int(codes[c]) for c in neigh)
        best = max(votes.values())
        tied = {c for c, v in votes.items() if v == best}
        pred[i] = next(int(codes[c]) for c in neigh if int(codes[c]) in tied)
    return pred


CASES = [
    # (n, C, strength, k, metric, seed)
    (40, 2, 1.0, 1, "cosine", 0),
    (60, 3, 0.5, 3, "cosine", 1),
    (90, 5, 1.0, 10, "pearson", 2),
    (120, 4, 0.3, 7, "pearson", 3),
    (80, 6, 0.0, 40, "pearson", 4),  # no signal, k = N/2: many negative weights
    (100, 3, 2.0, 99, "cosine", 5),  # k = N - 1
]


@pytest.mark.parametrize(("n", "num_classes", "strength", "k", "metric", "seed"), CASES)
def test_class_terms_sum_to_q_and_match_networkx(n, num_classes, strength, k, metric, seed):
    feats, labels = planted(n, num_classes, strength, 16, seed)
    graph = knn_graph(feats, k, metric)
    terms = class_modularity_terms(graph, labels)
    assert terms.shape == (num_classes,) and terms.dtype == torch.float64
    assert float(terms.sum()) == pytest.approx(modularity(graph, labels), abs=1e-9)
    # Each term from networkx's graph: e_cc / m - (a_c / 2m)^2.
    g = to_networkx(graph)
    m = g.size(weight="weight")
    for c, value in enumerate(torch.unique(labels).tolist()):
        members = np.flatnonzero(labels.numpy() == value).tolist()
        e_cc = g.subgraph(members).size(weight="weight")
        a_c = sum(d for _, d in g.degree(members, weight="weight"))
        assert float(terms[c]) == pytest.approx(e_cc / m - (a_c / (2 * m)) ** 2, abs=1e-9)
    communities = [set(np.flatnonzero(labels.numpy() == v).tolist()) for v in labels.unique()]
    assert float(terms.sum()) == pytest.approx(nx.community.modularity(g, communities), abs=1e-9)
    diag = class_diagnostics(feats, labels, k, metric)
    assert diag.modularity == knn_modularity(feats, labels, k, metric)  # same graph, same sums
    assert torch.allclose(diag.class_q, terms, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("n", "num_classes", "strength", "k", "metric", "seed"), CASES)
def test_pair_matrix_and_purity_against_the_dense_official_adjacency(
    n, num_classes, strength, k, metric, seed
):
    feats, labels = planted(n, num_classes, strength, 16, seed)
    sim, lists = official_lists(feats, k, metric)
    adj = dense_adjacency(sim, lists)
    codes = np.unique(labels.numpy(), return_inverse=True)[1]
    graph = knn_graph(feats, k, metric)
    pair = class_pair_weights(graph, labels).numpy()
    same = codes[:, None] == codes[None, :]
    for a in range(num_classes):
        for b in range(num_classes):
            block = adj[np.ix_(codes == a, codes == b)].sum()
            expected = block / 2 if a == b else block  # each intra edge appears twice in adj
            assert pair[a, b] == pytest.approx(expected, abs=1e-6)
    inter = adj[~same].sum() / 2
    assert np.triu(pair, 1).sum() == pytest.approx(inter, abs=1e-6)  # the done-when identity
    assert (pair.sum() - np.trace(pair)) / 2 == pytest.approx(inter, abs=1e-6)
    assert np.trace(pair) + np.triu(pair, 1).sum() == pytest.approx(adj.sum() / 2, abs=1e-6)
    src, dst = graph.src.numpy(), graph.dst.numpy()
    w = graph.weight.numpy()
    cross = codes[src] != codes[dst]
    assert np.triu(pair, 1).sum() == pytest.approx(w[cross].sum(), abs=1e-9)
    # Purity: 2 e+_cc / a+_c on positive weights.
    pos = np.clip(adj, 0, None)
    purity = class_purity(graph, labels).numpy()
    for c in range(num_classes):
        inside = pos[np.ix_(codes == c, codes == c)].sum()
        at_class = pos[codes == c].sum()
        if at_class > 0:
            assert purity[c] == pytest.approx(inside / at_class, abs=1e-9)
            assert 0 <= purity[c] <= 1
        else:
            assert math.isnan(purity[c])
    diag = class_diagnostics(feats, labels, k, metric)
    assert diag.inter_class_weight == pytest.approx(w[cross].sum(), abs=1e-9)
    assert torch.equal(diag.pair_weight, class_pair_weights(graph, labels))
    expected_share = -w[w < 0].sum() / np.abs(w).sum()
    assert diag.negative_weight_share == pytest.approx(expected_share, abs=1e-12)


def test_negative_weights_are_signed_in_q_and_ignored_in_shares():
    feats, labels = planted(80, 4, 0.0, 16, 4)
    diag = class_diagnostics(feats, labels, k=60, metric="pearson")
    assert diag.negative_weight_share > 0.1
    assert float(diag.class_q.sum()) == pytest.approx(diag.modularity, abs=1e-12)
    finite = diag.purity[~diag.purity.isnan()]
    assert ((finite >= 0) & (finite <= 1)).all()
    off = diag.entanglement[~diag.entanglement.isnan()]
    assert ((off >= 0) & (off <= 2)).all()
    # No signal: every pair is about as mixed as random labels.
    assert 0.7 < float(off.mean()) < 1.3
    # The raw matrix keeps the sign; the entanglement uses the positive edge weights.
    graph = knn_graph(feats, k=60, metric="pearson")
    positive = Graph(graph.num_nodes, graph.src, graph.dst, graph.weight.clamp(min=0))
    assert torch.equal(diag.pair_weight, class_pair_weights(graph, labels))
    assert bool((class_pair_weights(positive, labels) > diag.pair_weight + 1e-6).all())
    assert torch.allclose(
        diag.entanglement,
        pair_entanglement(class_pair_weights(positive, labels)),
        equal_nan=True,
    )
    assert torch.allclose(diag.purity, class_purity(positive, labels))


def test_entanglement_hand_computed_and_its_extremes():
    # x = w_aa, y = w_bb, z = w_ab: E = 2 z (x + y + z) / ((2x + z)(2y + z)).
    w = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 4.0], [0.0, 4.0, 0.0]], dtype=torch.float64)
    ent = pair_entanglement(w)
    assert float(ent[0, 1]) == pytest.approx(2 * 1 * 6 / (7 * 5))
    assert float(ent[1, 0]) == float(ent[0, 1])
    assert float(ent[0, 2]) == 0.0  # no edge between them
    assert float(ent[1, 2]) == pytest.approx(2 * 4 * 6 / (8 * 4))  # class 2 only links to 1
    assert ent.diagonal().isnan().all()
    # Two equal classes: E = 2 z / T; a perfectly mixed pair (z = x + y) gives 1.
    assert float(pair_entanglement(torch.tensor([[1.0, 2.0], [2.0, 1.0]]))[0, 1]) == 1.0
    # Only crossing edges: the maximum 2.
    assert float(pair_entanglement(torch.tensor([[0.0, 5.0], [5.0, 0.0]]))[0, 1]) == 2.0
    # No weight at all in the pair: no crossing, 0.
    assert float(pair_entanglement(torch.zeros(2, 2))[0, 1]) == 0.0
    assert not pair_entanglement(torch.rand(5, 5)).fill_diagonal_(0).isnan().any()
    with pytest.raises(ValueError, match="must be"):
        pair_entanglement(torch.zeros(2, 3))


def test_entanglement_ranks_the_pair_that_shares_a_mean_first():
    # Classes 0 and 1 share their mean, class 2 is far away: (0, 1) is the entangled pair.
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(150) % 3
    means = torch.randn(3, 20, generator=gen) * 3
    means[1] = means[0]
    feats = means[labels] + torch.randn(150, 20, generator=gen)
    diag = class_diagnostics(feats, labels, k=5)
    (a, b, value), *rest = diag.most_entangled_pairs(3)
    assert (a, b) == (0, 1) and 0.6 < value < 1.4
    assert all(v < 0.2 for _, _, v in rest)
    assert float(diag.purity[2]) > 0.95 > max(float(diag.purity[0]), float(diag.purity[1]))
    assert diag.class_knn_accuracy[2] == 1.0 and diag.class_knn_accuracy[0] < 0.8
    assert diag.most_entangled_pairs(0) == []
    assert len(diag.most_entangled_pairs(10)) == 3  # only C(C-1)/2 pairs exist


@pytest.mark.parametrize("kind", ["integer", "duplicates", "zeros"])
@pytest.mark.parametrize(
    ("n", "k", "num_classes"), [(15, 1, 2), (30, 2, 3), (40, 4, 2), (50, 6, 4)]
)
@pytest.mark.parametrize("metric", ["cosine", "pearson"])
def test_knn_accuracy_equals_a_brute_force_leave_one_out_vote(kind, n, k, num_classes, metric):
    feats = tie_heavy(kind, n, seed=n + k)
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=torch.Generator().manual_seed(k))]
    _, lists = official_lists(feats, k, metric)
    codes = labels.numpy()
    expected = brute_force_vote(lists, codes, num_classes)
    graph, neighbors = knn_graph_with_neighbors(feats, k, metric)
    pred = knn_predict(neighbors, labels, num_classes)
    assert pred.tolist() == expected.tolist()
    acc = float((expected == codes).mean())
    assert knn_accuracy(neighbors, labels) == pytest.approx(acc, abs=1e-12)
    if graph.weight.sum() > 0:
        diag = class_diagnostics(feats, labels, k, metric)
        assert diag.knn_accuracy == pytest.approx(acc, abs=1e-12)
        assert diag.knn_predictions.tolist() == expected.tolist()
        for c in range(num_classes):
            assert float(diag.class_knn_accuracy[c]) == pytest.approx(
                float((expected[codes == c] == c).mean())
            )
    # The lists are the official ones (self picks as -1), nearest first.
    official = [[-1 if c == i else c for c in row] for i, row in enumerate(lists)]
    assert neighbors.indices.tolist() == official


def test_vote_rule_ties_go_to_the_nearest_neighbour_and_empty_lists_to_minus_one():
    codes = torch.tensor([0, 1, 2, 0, 1, 2])
    idx = torch.tensor(
        [
            [3, 1, 2, -1],  # 0, 1, 2: three-way tie -> the nearest, class 0 (right)
            [2, 0, 3, 5],  # 2, 0, 0, 2 -> tie 0/2: nearest is class 2
            [3, 4, -1, -1],  # 0, 1 (self picks) -> tie: nearest is class 0
            [5, 1, -1, 2],  # 2, 1, -, 2 -> class 2
            [-1, -1, -1, -1],  # no neighbour -> -1
            [4, 0, 3, 2],  # 1, 0, 0, 2 -> class 0
        ]
    )
    nb = KnnNeighbors(idx, torch.zeros(6, 4))
    assert knn_predict(nb, codes, 3).tolist() == [0, 2, 0, 2, -1, 0]
    assert knn_accuracy(nb, codes) == pytest.approx(1 / 6)  # only node 0 is right


def test_neighbor_lists_rebuild_the_graph_and_self_picks_are_minus_one():
    feats = tie_heavy("zeros", 30, seed=3)
    graph, neighbors = knn_graph_with_neighbors(feats, k=3)
    ref = knn_graph(feats, k=3)
    assert torch.equal(graph.src, ref.src) and torch.equal(graph.weight, ref.weight)
    zero_rows = (feats.abs().sum(1) == 0).nonzero().squeeze(1)
    assert zero_rows.numel() > 0
    for i in zero_rows.tolist():  # all similarities 0: heapq picks the lowest indices, maybe i
        assert (neighbors.similarities[i] == 0).all()
    assert (neighbors.indices != torch.arange(30).unsqueeze(1)).all()
    assert neighbors.k == 3 and neighbors.num_nodes == 30
    sims = neighbors.similarities
    assert (sims[:, :-1] >= sims[:, 1:]).all()  # nearest first


def test_diagnostics_of_a_top_edges_graph_have_no_knn_fields():
    graph = Graph(
        4,
        torch.tensor([0, 0, 1, 2]),
        torch.tensor([1, 2, 3, 3]),
        torch.tensor([1.0, 0.5, 0.25, 2.0], dtype=torch.float64),
    )
    labels = torch.tensor([5, 5, 9, 9])
    diag = class_diagnostics_of_graph(graph, labels)
    assert diag.knn_accuracy is None and diag.knn_predictions is None and diag.k is None
    assert diag.classes.tolist() == [5, 9] and diag.counts.tolist() == [2, 2]
    # m = 3.75; e_00 = 1, e_11 = 2; a_0 = 1 + 0.5 + 1 + 0.25 = 2.75, a_1 = 4.75
    m = 3.75
    assert diag.class_q.tolist() == pytest.approx(
        [1 / m - (2.75 / (2 * m)) ** 2, 2 / m - (4.75 / (2 * m)) ** 2]
    )
    assert diag.pair_weight.tolist() == [[1.0, 0.75], [0.75, 2.0]]
    assert diag.purity.tolist() == pytest.approx([2 / 2.75, 4 / 4.75])
    assert diag.most_entangled_pairs(1)[0][:2] == (5, 9)


def test_errors_name_the_problem():
    feats, labels = planted(20, 2, 1.0, 4, 0)
    with pytest.raises(ValueError, match="N > k"):
        class_diagnostics(feats, labels, k=20)
    with pytest.raises(ValueError, match="length"):
        class_diagnostics(feats, labels[:-1])
    with pytest.raises(ValueError, match="metric"):
        class_diagnostics(feats, labels, metric="euclid")
    with pytest.raises(ValueError, match="at least 2 classes"):
        class_diagnostics(feats, torch.zeros(20, dtype=torch.long))
    with pytest.raises(ValueError, match="total edge weight is 0"):
        class_diagnostics(torch.zeros(10, 3), torch.arange(10) % 2)
    graph, neighbors = knn_graph_with_neighbors(feats, 3)
    with pytest.raises(ValueError, match="shape"):
        class_diagnostics_of_graph(
            graph, labels, KnnNeighbors(neighbors.indices[:5], neighbors.similarities[:5])
        )


def test_first_crossing():
    purity = torch.tensor([[0.2, 0.5, float("nan")], [0.6, 0.95, 0.1], [0.91, 0.8, 0.2]])
    assert first_crossing(purity, 0.9).tolist() == [2, 1, -1]
    assert first_crossing(purity, 0.5, above=False).tolist() == [0, 0, 1]
    assert first_crossing(purity[:, :, None].expand(3, 3, 2), 0.9).shape == (3, 2)
    with pytest.raises(ValueError, match="L >= 1"):
        first_crossing(torch.empty(0, 3), 0.5)
    with pytest.raises(ValueError, match="NaN"):
        first_crossing(purity, float("nan"))
