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
