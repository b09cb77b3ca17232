"""similarity_histogram against numpy.histogram of the brute-force similarity matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dnn_modularity.graph import SimilarityHistogram, normalize_features, similarity_histogram


def brute_force(feats: torch.Tensor, bins: int, value_range, metric: str):
    x = normalize_features(feats, metric)
    sim = (x @ x.T).numpy()
    upper = sim[np.triu_indices(sim.shape[0], k=1)].astype(np.float64)
    counts, edges = np.histogram(upper, bins=bins, range=value_range)
    lo, hi = value_range
    return counts, edges, int((upper < lo).sum()), int((upper > hi).sum())


@pytest.mark.parametrize("metric", ["cosine", "pearson"])
@pytest.mark.parametrize(
    ("bins", "value_range"), [(10, (0.0, 1.0)), (1, (0.0, 1.0)), (7, (-0.3, 0.45)), (20, (-1, 1))]
)
def test_histogram_equals_brute_force(metric, bins, value_range):
    n = 150
    gen = torch.Generator().manual_seed(bins)
    labels = torch.randint(0, 3, (n,), generator=gen)
    feats = torch.randn(3, 20, generator=gen)[labels] + torch.randn(n, 20, generator=gen)
    counts, edges, under, over = brute_force(feats, bins, value_range, metric)
    for block_size in (None, 32, 64):
        hist = similarity_histogram(feats, bins, value_range, metric, block_size=block_size)
        assert isinstance(hist, SimilarityHistogram)
        np.testing.assert_array_equal(hist.counts.numpy(), counts)
        np.testing.assert_array_equal(hist.edges.numpy(), edges)
        assert (hist.underflow, hist.overflow) == (under, over)
        assert hist.total == n * (n - 1) // 2
        assert int(hist.counts.sum()) + hist.underflow + hist.overflow == n * (n - 1) // 2


def test_values_on_edges_follow_numpy():
    # Non-negative integer features give exact similarities 0 and 1 and values on edges.
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
    counts, _, under, over = brute_force(feats, 4, (0.0, 1.0), "cosine")
    hist = similarity_histogram(feats, bins=4, range=(0.0, 1.0))
    np.testing.assert_array_equal(hist.counts.numpy(), counts)
    assert hist.counts[-1] >= 1  # similarity exactly 1.0 lands in the last bin
    assert hist.underflow == under == 0 and hist.overflow == over
    assert hist.total == 15


def test_negative_similarities_go_to_underflow_not_dropped():
    feats = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0]])
    hist = similarity_histogram(feats, bins=10)
    assert hist.underflow == 1  # the pair (0, 1) has similarity -1
    assert int(hist.counts.sum()) == 2 and hist.overflow == 0


def test_ten_thousand_samples_run():
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(10_000, 16, generator=gen).relu()
    hist = similarity_histogram(feats, bins=10)
    assert hist.total == 10_000 * 9_999 // 2
    assert hist.underflow == 0  # ReLU features: similarities >= 0


def test_pairs_with_cosine_one_land_in_the_last_bin_not_the_overflow():
    # A row r whose float32 similarity with 2r (exact cosine 1) rounds above 1 must count in the
    # last bin [0.9, 1.0], not in the overflow.
    from dnn_modularity.graph.similarity import iter_similarity_strips

    gen = torch.Generator().manual_seed(0)
    others = torch.randn(6, 300, generator=gen).abs()  # positive: similarities in (0, 1)
    for row in torch.randn(400, 300, generator=gen):
        feats = torch.cat([row[None], 2 * row[None], others])
        _, _, strip = next(iter_similarity_strips(normalize_features(feats), 8))
        if strip[0, 1] > 1.0:
            break
    else:
        raise AssertionError("no row's self-similarity rounds above 1: the precondition")
    hist = similarity_histogram(feats, bins=10, range=(0.0, 1.0))
    assert hist.overflow == 0
    assert int(hist.counts[-1]) >= 1
    assert hist.total == 28
