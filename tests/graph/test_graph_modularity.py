"""modularity / knn_modularity / class_separation against networkx, igraph and hand computation."""

from __future__ import annotations

import math

import igraph
import networkx as nx
import numpy as np
import pytest
import torch
from graph_reference import to_networkx

from dnn_modularity.graph import (
    ClassSeparation,
    Graph,
    class_separation,
    knn_graph,
    knn_modularity,
    modularity,
)
from dnn_modularity.graph.modularity import _closed_form_q


def planted_features(
    n: int, num_classes: int, strength: float, dim: int, seed: int, relu: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means + noise; class sizes drawn from a Dirichlet (unequal); every class present."""
    gen = torch.Generator().manual_seed(seed)
    props = torch.from_numpy(np.random.default_rng(seed).dirichlet(np.full(num_classes, 2.0)))
    labels = torch.multinomial(props, n, replacement=True, generator=gen)
    labels[:num_classes] = torch.arange(num_classes)  # every class at least once
    labels = labels[torch.randperm(n, generator=gen)]
    means = torch.randn(num_classes, dim, generator=gen)
    feats = strength * means[labels] + torch.randn(n, dim, generator=gen)
    if relu:
        feats = feats.relu()
    return feats, labels


def nx_modularity(graph: Graph, labels: np.ndarray) -> float:
    communities = [set(np.flatnonzero(labels == c).tolist()) for c in np.unique(labels)]
    return nx.community.modularity(to_networkx(graph), communities, weight="weight")


def ig_modularity(graph: Graph, labels: np.ndarray) -> float:
    membership = np.unique(labels, return_inverse=True)[1].tolist()
    g = igraph.Graph(
        n=graph.num_nodes, edges=list(zip(graph.src.tolist(), graph.dst.tolist(), strict=True))
    )
    return g.modularity(membership, weights=graph.weight.tolist())


def _cases() -> list[tuple[int, int, int, float, str, int]]:
    """(N, k, C, strength, metric, seed): N 10..2000, k 1..N/2, 2..100 classes."""
    rng = np.random.default_rng(1234)
    cases = []
    for i in range(56):
        n = round(math.exp(rng.uniform(math.log(10), math.log(2000))))
        if i < 4:
            n = (10, 37, 2000, 1500)[i]
        num_classes = int(rng.integers(2, min(100, n // 2) + 1))
        max_k = n // 2
        # keep networkx fast: at most ~40k directed entries, but also cover k = N/2
        k_cap = max(1, min(max_k, 40000 // n))
        k = int(rng.integers(1, k_cap + 1))
        if i % 9 == 0:
            k = k_cap
        if i % 11 == 0:
            k = 1
        strength = float(rng.choice([0.0, 0.3, 1.0, 3.0]))
        metric = "pearson" if i % 2 else "cosine"
        cases.append((n, k, num_classes, strength, metric, 1000 + i))
    return cases


CASES = _cases()
IGRAPH_SKIPPED: list[tuple] = []


@pytest.mark.parametrize(("n", "k", "num_classes", "strength", "metric", "seed"), CASES)
def test_modularity_equals_networkx_and_igraph(n, k, num_classes, strength, metric, seed):
    feats, labels = planted_features(
        n, num_classes, strength, dim=24, seed=seed, relu=seed % 3 == 0
    )
    # labels that are not 0..C-1: a random injective map to large, negative, unsorted values
    values = torch.randperm(10 * num_classes, generator=torch.Generator().manual_seed(seed))
    labels = values[labels] * 7 - 300
    graph = knn_graph(feats, k=k, metric=metric)
    lab = labels.numpy()
    q = modularity(graph, labels)
    assert q == pytest.approx(nx_modularity(graph, lab), abs=1e-9)
    assert knn_modularity(feats, labels, k=k, metric=metric) == pytest.approx(q, abs=1e-12)
    if bool((graph.weight < 0).any()):
        # igraph refuses negative weights ("Negative weight in weight vector"): networkx only.
        IGRAPH_SKIPPED.append((n, k, metric))
        with pytest.raises(Exception, match=r"[Nn]egative"):
            ig_modularity(graph, lab)
    else:
        assert q == pytest.approx(ig_modularity(graph, lab), abs=1e-9)


def test_case_grid_covers_the_required_ranges():
    ns = [c[0] for c in CASES]
    assert len(CASES) >= 50
    assert min(ns) == 10 and max(ns) == 2000
    assert any(c[1] == c[0] // 2 for c in CASES) and any(c[1] == 1 for c in CASES)
    assert max(c[2] for c in CASES) >= 50 and min(c[2] for c in CASES) == 2
    assert {c[4] for c in CASES} == {"cosine", "pearson"}


def test_negative_weights_match_networkx_and_are_refused_by_igraph():
    # large k on weakly structured data: many neighbours have negative similarity
    feats, labels = planted_features(60, 3, 0.0, dim=8, seed=5)
    graph = knn_graph(feats, k=30, metric="pearson")
    assert bool((graph.weight < 0).any())
    lab = labels.numpy()
    assert modularity(graph, labels) == pytest.approx(nx_modularity(graph, lab), abs=1e-12)
    with pytest.raises(Exception, match=r"[Nn]egative"):
        ig_modularity(graph, lab)


@pytest.mark.parametrize("resolution", [0.5, 1.0, 2.0])
def test_resolution_matches_networkx(resolution):
    feats, labels = planted_features(200, 4, 1.0, dim=16, seed=3)
    graph = knn_graph(feats, k=5)
    lab = labels.numpy()
    communities = [set(np.flatnonzero(lab == c).tolist()) for c in np.unique(lab)]
    expected = nx.community.modularity(to_networkx(graph), communities, resolution=resolution)
    assert modularity(graph, labels, resolution=resolution) == pytest.approx(expected, abs=1e-12)


def test_two_well_separated_classes_reach_the_maximum():
    n0, n1 = 300, 100
    gen = torch.Generator().manual_seed(0)
    centres = torch.eye(32)[:2] * 5
    labels = torch.cat([torch.zeros(n0, dtype=torch.long), torch.ones(n1, dtype=torch.long)])
    feats = centres[labels] + torch.randn(n0 + n1, 32, generator=gen) * 0.05
    graph = knn_graph(feats, k=5)
    assert bool((labels[graph.src] == labels[graph.dst]).all())  # no edge crosses the classes
    degree_share = torch.zeros(2, dtype=torch.float64).index_add_(0, labels, graph.degrees())
    degree_share /= degree_share.sum()
    q = knn_modularity(feats, labels, k=5)
    assert q == pytest.approx(1 - float((degree_share**2).sum()), abs=1e-12)
    q_max = 1 - ((n0 / 400) ** 2 + (n1 / 400) ** 2)  # equal degrees: 0.375
    assert q == pytest.approx(q_max, abs=5e-3)


def test_shuffled_labels_give_modularity_near_zero():
    feats, labels = planted_features(1000, 10, 3.0, dim=32, seed=11)
    q_true = knn_modularity(feats, labels, k=5)
    shuffled = labels[torch.randperm(1000, generator=torch.Generator().manual_seed(1))]
    q_shuffled = knn_modularity(feats, shuffled, k=5)
    assert q_true > 0.5
    assert abs(q_shuffled) < 0.03


def test_modularity_of_hand_graph():
    # two triangles joined by one edge, unit weights: Q = 2·(3/7 − (7/14)²) = 5/14
    src = torch.tensor([0, 0, 1, 3, 3, 4, 2])
    dst = torch.tensor([1, 2, 2, 4, 5, 5, 3])
    graph = Graph(6, src, dst, torch.ones(7, dtype=torch.float64))
    assert modularity(graph, [5, 5, 5, 9, 9, 9]) == pytest.approx(5 / 14, abs=1e-15)


def test_numpy_and_torch_closed_forms_agree_with_networkx():
    # CPU graphs are summed in numpy, CUDA graphs in torch: the same Q (both run here on CPU data)
    gen = torch.Generator().manual_seed(4)
    graph = knn_graph(torch.randn(200, 12, generator=gen), k=5)
    codes = torch.randint(0, 4, (200,), generator=gen)
    edges = graph.src, graph.dst, graph.weight
    q_torch = _closed_form_q(torch, *edges, codes, 4, 0.7)
    q_numpy = _closed_form_q(np, *(t.numpy() for t in edges), codes.numpy(), 4, 0.7)
    communities = [set(torch.nonzero(codes == c).flatten().tolist()) for c in range(4)]
    expected = nx.community.modularity(to_networkx(graph), communities, resolution=0.7)
    assert q_torch == pytest.approx(expected, abs=1e-12)
    assert q_numpy == pytest.approx(expected, abs=1e-12)
    zero = torch.zeros_like(graph.weight)
    assert _closed_form_q(torch, graph.src, graph.dst, zero, codes, 4, 1.0) is None
    assert (
        _closed_form_q(
            np, graph.src.numpy(), graph.dst.numpy(), zero.numpy(), codes.numpy(), 4, 1.0
        )
        is None
    )


def test_class_separation_hand_computed():
    # Path 0-1-2-3 with weights 0.9, 0.2, 0.6 plus edge 0-2 (0.5); classes {0,1} and {2,3}.
    src = torch.tensor([0, 1, 2, 0])
    dst = torch.tensor([1, 2, 3, 2])
    w = torch.tensor([0.9, 0.2, 0.6, 0.5], dtype=torch.float64)
    graph = Graph(4, src, dst, w)
    labels = torch.tensor([1, 1, 4, 4])
    # s = (1.4, 1.1, 1.3, 0.6), S = 4.4, 2S = 8.8
    s = [1.4, 1.1, 1.3, 0.6]
    big = 8.8
    aq = ((0.9 - s[0] * s[1] / big) + (0.6 - s[2] * s[3] / big)) / big
    eq = ((0.2 - s[1] * s[2] / big) + (0.5 - s[0] * s[2] / big)) / big
    r = 2 / 4
    result = class_separation(graph, labels)
    assert isinstance(result, ClassSeparation)
    assert result.aq == pytest.approx(aq, abs=1e-15)
    assert result.eq == pytest.approx(eq, abs=1e-15)
    assert result.r == pytest.approx(r)
    assert result.m == pytest.approx(r * aq * (1 - eq), abs=1e-15)
    # hand values: AQ = (0.9 − 1.54/8.8 + 0.6 − 0.78/8.8)/8.8
    assert result.aq == pytest.approx((1.5 - 2.32 / 8.8) / 8.8, abs=1e-15)


def test_class_separation_increases_with_class_structure():
    from dnn_modularity.graph import top_edges_graph

    weak, labels = planted_features(300, 3, 0.3, dim=16, seed=2)
    strong, _ = planted_features(300, 3, 3.0, dim=16, seed=2)
    m_weak = class_separation(top_edges_graph(weak, 2000), labels).m
    m_strong = class_separation(top_edges_graph(strong, 2000), labels).m
    assert m_strong > m_weak


def test_modularity_runs_on_the_graph_device_and_returns_float():
    feats, labels = planted_features(50, 2, 1.0, dim=4, seed=0)
    graph = knn_graph(feats, k=3)
    assert isinstance(modularity(graph, labels.numpy()), float)
    assert isinstance(class_separation(graph, labels).m, float)


@pytest.mark.gpu
def test_cuda_matches_cpu():
    feats, labels = planted_features(5000, 10, 1.0, dim=300, seed=4)  # bf16-screened path
    q_cpu = knn_modularity(feats, labels, k=5)
    q_gpu = knn_modularity(feats.cuda(), labels.cuda(), k=5)
    assert q_gpu == pytest.approx(q_cpu, abs=1e-6)
