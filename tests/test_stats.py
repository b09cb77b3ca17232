"""Spearman rank correlation with average ranks for ties, against scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats as sps

from dnn_modularity.stats import average_ranks, spearman, spearman_matrix


def test_average_ranks_match_scipy_rankdata():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 17, 40):
        values = rng.integers(0, 4, n).astype(float)  # many ties
        assert average_ranks(values).tolist() == pytest.approx(sps.rankdata(values).tolist())
    assert average_ranks([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]
    with pytest.raises(ValueError, match="NaN"):
        average_ranks([1.0, float("nan")])


@pytest.mark.parametrize("seed", range(6))
def test_spearman_equals_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 30))
    x = rng.integers(0, 5, n).astype(float)
    y = x * rng.choice([-1, 1]) + rng.integers(0, 3, n)
    if np.unique(x).size == 1:
        x[0] += 1
    if np.unique(y).size == 1:
        y[0] += 1
    expected = sps.spearmanr(x, y).statistic
    assert spearman(x, y) == pytest.approx(expected, abs=1e-12)
    assert spearman(torch.tensor(x), y.tolist()) == pytest.approx(expected, abs=1e-12)


def test_spearman_edge_cases():
    assert spearman([1, 2, 3], [10, 20, 30]) == 1.0
    assert spearman([1, 2, 3], [3, 2, 1]) == -1.0
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))  # constant: undefined
    assert math.isnan(spearman([1], [2]))
    # NaN pairs are left out, as scipy's nan_policy="omit"
    x, y = [1, 2, float("nan"), 4, 5], [2, 1, 7, 4, 3]
    assert spearman(x, y) == pytest.approx(sps.spearmanr(x, y, nan_policy="omit").statistic)
    with pytest.raises(ValueError, match="same length"):
        spearman([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="1-D"):
        spearman([[1, 2]], [[1, 2]])


def test_spearman_matrix_over_layers():
    curves = {
        "Q": [0.1, 0.2, 0.4, 0.5, 0.55],
        "knn_accuracy": [0.3, 0.5, 0.8, 0.95, 0.97],
        "probe_accuracy": [0.9, 0.6, 0.7, 0.99, 0.99],
    }
    out = spearman_matrix(curves)
    assert out["Q"]["knn_accuracy"] == 1.0 and out["Q"]["Q"] == 1.0
    expected = sps.spearmanr(curves["Q"], curves["probe_accuracy"]).statistic
    assert out["Q"]["probe_accuracy"] == pytest.approx(expected)
    assert out["probe_accuracy"]["Q"] == out["Q"]["probe_accuracy"]
    with pytest.raises(ValueError, match="same number of layers"):
        spearman_matrix({"a": [1, 2, 3], "b": [1, 2]})
