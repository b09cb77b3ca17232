"""Linear CKA (biased and debiased) and the modularity-difference matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dnn_modularity.graph import cka_matrix, linear_cka, modularity_difference


def _features(n: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _orthogonal(d: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(_features(d, d, seed))
    return q


def hsic_unbiased_direct(k: np.ndarray, l_mat: np.ndarray) -> float:
    """Song et al. (2012) unbiased HSIC, written out with explicit loops over O(N²) terms."""
    n = k.shape[0]
    kt = k.copy()
    lt = l_mat.copy()
    np.fill_diagonal(kt, 0)
    np.fill_diagonal(lt, 0)
    trace = sum(kt[i, j] * lt[j, i] for i in range(n) for j in range(n))
    sum_k = sum(kt[i, j] for i in range(n) for j in range(n))
    sum_l = sum(lt[i, j] for i in range(n) for j in range(n))
    row_k = [sum(kt[i, j] for j in range(n)) for i in range(n)]
    row_l = [sum(lt[i, j] for j in range(n)) for i in range(n)]
    cross = sum(row_k[i] * row_l[i] for i in range(n))  # 1ᵀ K̃ L̃ 1
    return (trace + sum_k * sum_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * cross) / (n * (n - 3))


def biased_cka_direct(x: np.ndarray, y: np.ndarray) -> float:
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_mat = h @ x @ x.T @ h, h @ y @ y.T @ h
    return float((k * l_mat).sum() / np.sqrt((k * k).sum() * (l_mat * l_mat).sum()))


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_of_a_representation_with_itself_is_one(debiased):
    x = _features(40, 12, 0)
    assert linear_cka(x, x, debiased=debiased) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("debiased", [False, True])
def test_invariance_to_orthogonal_transform_and_isotropic_scaling(debiased):
    x, y = _features(50, 10, 1), _features(50, 7, 2) + _features(50, 10, 1)[:, :7]
    base = linear_cka(x, y, debiased=debiased)
    assert linear_cka(x @ _orthogonal(10, 3), y, debiased=debiased) == pytest.approx(
        base, abs=1e-10
    )
    assert linear_cka(x, 3.7 * y, debiased=debiased) == pytest.approx(base, abs=1e-10)
    assert linear_cka(0.01 * x @ _orthogonal(10, 4), y @ _orthogonal(7, 5), debiased=debiased) == (
        pytest.approx(base, abs=1e-10)
    )


def test_biased_cka_equals_the_centring_matrix_formula():
    x, y = _features(30, 5, 6), _features(30, 9, 7)
    assert linear_cka(x, y) == pytest.approx(biased_cka_direct(x.numpy(), y.numpy()), abs=1e-12)
    # N >> D uses the feature-space form; it must agree too
    x, y = _features(200, 3, 8), _features(200, 4, 9)
    assert linear_cka(x, y) == pytest.approx(biased_cka_direct(x.numpy(), y.numpy()), abs=1e-12)


def test_debiased_cka_equals_the_direct_unbiased_hsic_formula():
    x, y = _features(25, 6, 10), _features(25, 4, 11) + _features(25, 6, 10)[:, :4]
    k = (x @ x.T).numpy()
    l_mat = (y @ y.T).numpy()
    expected = hsic_unbiased_direct(k, l_mat) / np.sqrt(
        hsic_unbiased_direct(k, k) * hsic_unbiased_direct(l_mat, l_mat)
    )
    assert linear_cka(x, y, debiased=True) == pytest.approx(expected, abs=1e-12)


def test_features_are_flattened_and_float32_is_accepted():
    x = _features(20, 12, 12)
    y = _features(20, 8, 13)
    assert linear_cka(x.reshape(20, 3, 4).float(), y) == pytest.approx(linear_cka(x, y), abs=1e-6)


def test_cka_matrix_matches_pairwise_cka():
    layers = {f"layer{i}": _features(30, 4 + i, 20 + i) for i in range(4)}
    for debiased in (False, True):
        mat = cka_matrix(layers, debiased=debiased)
        assert mat.shape == (4, 4) and mat.dtype == torch.float64
        assert torch.allclose(mat, mat.T)
        assert torch.allclose(mat.diagonal(), torch.ones(4, dtype=torch.float64))
        names = list(layers)
        for i in range(4):
            for j in range(4):
                expected = linear_cka(layers[names[i]], layers[names[j]], debiased=debiased)
                assert float(mat[i, j]) == pytest.approx(expected, abs=1e-12)
    assert torch.equal(cka_matrix(list(layers.values())), cka_matrix(layers))


def test_modularity_difference():
    diff = modularity_difference([0.1, 0.4, 0.35])
    expected = torch.tensor([[0.0, 0.3, 0.25], [0.3, 0.0, 0.05], [0.25, 0.05, 0.0]])
    assert torch.allclose(diff, expected.double(), atol=1e-15)
    assert torch.equal(
        modularity_difference(torch.tensor([0.1, 0.4, 0.35], dtype=torch.float64)), diff
    )


def test_cka_bad_inputs():
    x = _features(10, 3, 0)
    with pytest.raises(ValueError, match="same number of samples"):
        linear_cka(x, _features(11, 3, 0))
    with pytest.raises(ValueError, match="zero"):
        linear_cka(torch.ones(10, 3), x)
    with pytest.raises(ValueError, match="at least 4 samples"):
        linear_cka(x[:3], x[:3], debiased=True)
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN/inf"):
        linear_cka(bad, x)
    with pytest.raises(ValueError, match="at least one layer"):
        cka_matrix([])
    with pytest.raises(ValueError, match="layer 1 has 9 samples"):
        cka_matrix([x, x[:9]])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        modularity_difference([])
    with pytest.raises(ValueError, match="finite"):
        modularity_difference([0.1, float("nan")])
