"""Every bad input of the engine raises ValueError naming the problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dnn_modularity.graph import (
    METRICS,
    Graph,
    class_separation,
    knn_graph,
    knn_modularity,
    modularity,
    similarity_histogram,
    top_edges_graph,
)

FEATS = torch.randn(20, 3, 2, generator=torch.Generator().manual_seed(0))
LABELS = torch.arange(20) % 3
GRAPH = knn_graph(FEATS, k=3)


def test_metrics_constant():
    assert METRICS == ("cosine", "pearson")


@pytest.mark.parametrize(
    "call",
    [
        lambda m: knn_graph(FEATS, metric=m),
        lambda m: knn_modularity(FEATS, LABELS, metric=m),
        lambda m: top_edges_graph(FEATS, 10, metric=m),
        lambda m: similarity_histogram(FEATS, metric=m),
    ],
)
def test_unknown_metric_lists_the_valid_ones(call):
    with pytest.raises(ValueError, match=r"unknown metric 'euclid'.*cosine, pearson"):
        call("euclid")


@pytest.mark.parametrize("k", [20, 25])
def test_n_not_greater_than_k(k):
    with pytest.raises(ValueError, match=rf"N > k.*N = 20 and k = {k}"):
        knn_graph(FEATS, k=k)
    with pytest.raises(ValueError, match="N > k"):
        knn_modularity(FEATS, LABELS, k=k)


@pytest.mark.parametrize("k", [0, -1, 2.5, True, "3"])
def test_k_not_a_positive_integer(k):
    with pytest.raises(ValueError, match="k must be"):
        knn_graph(FEATS, k=k)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (torch.arange(19) % 3, r"labels have length 19 but there are N = 20"),
        (torch.zeros(20, 1, dtype=torch.long), r"labels must have shape \(N,\) = \(20,\)"),
        (torch.zeros(20, dtype=torch.long), r"at least 2 classes, got 1"),
        (torch.full((20,), 7), r"at least 2 classes.*\[7\]"),
        (torch.rand(20), r"labels must be integers"),
    ],
)
def test_bad_labels(labels, message):
    with pytest.raises(ValueError, match=message):
        knn_modularity(FEATS, labels)
    with pytest.raises(ValueError, match=message):
        modularity(GRAPH, labels)
    with pytest.raises(ValueError, match=message):
        class_separation(GRAPH, labels)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_features(bad):
    feats = FEATS.clone()
    feats[4, 1, 0] = bad
    for call in (
        lambda: knn_graph(feats),
        lambda: knn_modularity(feats, LABELS),
        lambda: top_edges_graph(feats, 10),
        lambda: similarity_histogram(feats),
    ):
        with pytest.raises(ValueError, match=r"1 NaN/inf values.*first row 4"):
            call()


@pytest.mark.parametrize(
    ("features", "message"),
    [
        (torch.randn(20), "at least 2 dimensions"),
        (torch.randn(20, 0), "no feature dimensions"),
        (torch.randn(1, 5), "N > k samples.*N = 1"),
        (torch.randn(20, 3, dtype=torch.complex64), "real-valued"),
        ("not features", "tensor or array-like|at least 2 dimensions"),
    ],
)
def test_bad_feature_shapes(features, message):
    with pytest.raises(ValueError, match=message):
        knn_graph(features, k=1)


def test_num_edges_beyond_the_number_of_pairs():
    with pytest.raises(ValueError, match=r"num_edges = 191 exceeds the N\(N-1\)/2 = 190"):
        top_edges_graph(FEATS, num_edges=191)
    with pytest.raises(ValueError, match="num_edges must be >= 1"):
        top_edges_graph(FEATS, num_edges=0)
    assert top_edges_graph(FEATS, num_edges=190).num_edges == 190


@pytest.mark.parametrize("bins", [0, -3, 2.0])
def test_bins_below_one(bins):
    with pytest.raises(ValueError, match="bins must be"):
        similarity_histogram(FEATS, bins=bins)


@pytest.mark.parametrize("value_range", [(1.0, 0.0), (0.5, 0.5), (0.0, float("inf")), (0.0,)])
def test_bad_histogram_range(value_range):
    with pytest.raises(ValueError, match="range must be"):
        similarity_histogram(FEATS, range=value_range)


@pytest.mark.parametrize("block_size", [0, -5, 2.5])
def test_bad_block_size(block_size):
    for call in (
        lambda: knn_graph(FEATS, block_size=block_size),
        lambda: knn_modularity(FEATS, LABELS, block_size=block_size),
        lambda: top_edges_graph(FEATS, 10, block_size=block_size),
        lambda: similarity_histogram(FEATS, block_size=block_size),
    ):
        with pytest.raises(ValueError, match="block_size must be None or a positive integer"):
            call()


def test_bad_resolution_and_empty_graph():
    with pytest.raises(ValueError, match="resolution must be finite"):
        modularity(GRAPH, LABELS, resolution=float("nan"))
    empty = Graph(
        20, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0)
    )
    with pytest.raises(ValueError, match="total edge weight is 0"):
        modularity(empty, LABELS)
    with pytest.raises(ValueError, match="at least one edge"):
        class_separation(empty, LABELS)


def test_numpy_inputs_are_accepted():
    q = knn_modularity(FEATS.numpy(), np.asarray(LABELS))
    assert q == pytest.approx(knn_modularity(FEATS, LABELS), abs=1e-15)


def _structured(n: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=gen)
    return torch.randn(3, dim, generator=gen)[labels] + torch.randn(n, dim, generator=gen), labels


@pytest.mark.parametrize("metric", ["cosine", "pearson"])
@pytest.mark.parametrize(
    ("scale", "dtype"),
    [
        (2.0**-40, torch.float32),  # row norms ~1e-11: below the official 1e-8 clamp
        (1e-9, torch.float32),
        (1e20, torch.float32),  # x² overflows float32
        (2.0**70, torch.float32),
        (1e39, torch.float64),  # beyond float32's range
        (1e-300, torch.float64),
    ],
)
def test_results_do_not_depend_on_the_features_scale(scale, dtype, metric):
    feats, labels = _structured(120, 16, 0)
    q = knn_modularity(feats, labels, metric=metric)
    edges = knn_graph(feats, metric=metric)
    top = top_edges_graph(feats, 300, metric=metric)
    hist = similarity_histogram(feats, bins=20, range=(-1, 1), metric=metric)
    scaled = feats.to(dtype) * scale
    exact = float(np.log2(scale)).is_integer()  # a power of two: bit-identical results
    graph = knn_graph(scaled, metric=metric)
    assert torch.equal(graph.src, edges.src) and torch.equal(graph.dst, edges.dst)
    tolerance = 0 if exact else 1e-6
    assert knn_modularity(scaled, labels, metric=metric) == pytest.approx(q, abs=tolerance)
    scaled_top = top_edges_graph(scaled, 300, metric=metric)
    torch.testing.assert_close(scaled_top.weight, top.weight, rtol=0, atol=tolerance)
    counts = similarity_histogram(scaled, bins=20, range=(-1, 1), metric=metric).counts
    assert (counts - hist.counts).abs().sum() <= (0 if exact else 4)


def test_features_with_requires_grad_are_accepted():
    from dnn_modularity.graph import linear_cka

    feats, labels = _structured(60, 8, 1)
    weight = torch.randn(8, 8, requires_grad=True)
    activations = feats @ weight  # straight from a forward pass
    assert activations.requires_grad
    plain = activations.detach()
    assert knn_modularity(activations, labels) == knn_modularity(plain, labels)
    assert torch.equal(knn_graph(activations).weight, knn_graph(plain).weight)
    assert torch.equal(top_edges_graph(activations, 50).weight, top_edges_graph(plain, 50).weight)
    assert torch.equal(similarity_histogram(activations).counts, similarity_histogram(plain).counts)
    assert linear_cka(activations, feats) == linear_cka(plain, feats)


def test_empty_features_get_a_clear_message():
    for call in (
        lambda: knn_graph(torch.zeros(0, 5)),
        lambda: knn_modularity(torch.zeros(0, 5), torch.zeros(0, dtype=torch.long)),
        lambda: similarity_histogram(np.zeros((0, 3, 4))),
    ):
        with pytest.raises(ValueError, match=r"got N = 0 \(features of shape \(0, "):
            call()


def test_string_labels_are_classes():
    names = np.array(["cat", "dog", "ship"])[LABELS.numpy()]
    q = knn_modularity(FEATS, LABELS)
    assert knn_modularity(FEATS, names) == q
    assert knn_modularity(FEATS, names.tolist()) == q
    assert modularity(GRAPH, list(names)) == modularity(GRAPH, LABELS)
    assert class_separation(GRAPH, names) == class_separation(GRAPH, LABELS)
    with pytest.raises(ValueError, match="at least 2 classes"):
        knn_modularity(FEATS, ["cat"] * 20)
    with pytest.raises(ValueError, match=r"labels have length 3 but there are N = 20"):
        knn_modularity(FEATS, ["cat", "dog", "cat"])


def test_cka_does_not_depend_on_the_scale():
    from dnn_modularity.graph import cka_matrix, linear_cka

    x, _ = _structured(40, 6, 2)
    y = x[:, :3] ** 2
    x64, y64 = x.double(), y.double()
    for debiased in (False, True):
        reference = linear_cka(x64, y64, debiased=debiased)
        assert linear_cka(x64 * 1e200, y64 * 1e-200, debiased=debiased) == pytest.approx(reference)
        assert linear_cka(x * 1e30, y, debiased=debiased) == pytest.approx(reference, rel=1e-6)
    matrix = cka_matrix([x64 * 1e250, y64, x64 * 1e-250])
    assert matrix[0, 2] == pytest.approx(1.0) and matrix[0, 1] == pytest.approx(matrix[2, 1])
