"""Linear CKA (Kornblith et al. 2019) and the modularity difference (paper 1, Sec. 5.1, Fig. 8).

Paper 1 compares its |M_i − M_j| heatmap with linear CKA between layers. Both the biased
estimator (HSIC with the centring matrix H) and the debiased one (the unbiased HSIC estimator of
Song et al. 2012, as used for CKA by Nguyen et al. 2021) are provided; all arithmetic is float64.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from dnn_modularity.graph.similarity import times_power_of_two
from dnn_modularity.graph.validation import check_features


def _flat64(x: Any, what: str, min_samples: int) -> Tensor:
    """Validated (N, D) float64 features, scaled by a power of two (exact).

    The largest magnitude becomes [0.5, 1) (CKA is invariant to isotropic scaling), so Gram
    matrices of features as large as 1e200 or as small as 1e-200 neither overflow nor underflow.
    """
    try:
        flat = check_features(x, min_samples=min_samples).to(torch.float64)
    except ValueError as err:
        raise ValueError(f"{what}: {err}") from err
    _, exponent = torch.frexp(flat.abs().max())
    return times_power_of_two(flat, exponent)


def centered_gram(x: Tensor, debiased: bool = False) -> Tensor:
    """Centred linear Gram matrix of (N, D) float64 features.

    Biased: H K H with K = X Xᵀ and H = I − 11ᵀ/N. Debiased: the "U-centred" Gram matrix whose
    Frobenius inner products are the unbiased HSIC estimator of Song et al. (2012) up to a factor
    N(N−3) (zero diagonal; Kornblith et al.'s ``center_gram(unbiased=True)``).

    Args:
        x: float64 (N, D); N >= 4 if debiased.
        debiased: Use the unbiased centring.

    Returns:
        float64 (N, N).
    """
    n = x.shape[0]
    gram = x @ x.T
    if not debiased:
        means = gram.mean(dim=0)
        means = means - means.mean() / 2
        return gram - means[:, None] - means[None, :]
    gram.fill_diagonal_(0.0)
    means = gram.sum(dim=0) / (n - 2)
    means = means - means.sum() / (2 * (n - 1))
    gram = gram - means[:, None] - means[None, :]
    gram.fill_diagonal_(0.0)
    return gram


def _cka_from_grams(gx: Tensor, gy: Tensor) -> float:
    hxy = (gx * gy).sum()
    hxx = (gx * gx).sum()
    hyy = (gy * gy).sum()
    if float(hxx) <= 0.0 or float(hyy) <= 0.0:
        raise ValueError(
            "CKA is undefined: a representation has zero (or, debiased, non-positive) "
            "self-similarity HSIC, e.g. constant features"
        )
    return float(hxy / torch.sqrt(hxx * hyy))


def linear_cka(x: Any, y: Any, debiased: bool = False) -> float:
    """Linear centred kernel alignment between two representations of the same N samples.

    CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with linear kernels K = XXᵀ, L = YYᵀ.
    It is 1 for X = Y and invariant to orthogonal transforms and isotropic scaling of either
    representation (Kornblith et al. 2019). The debiased variant replaces HSIC by the unbiased
    estimator of Song et al. (2012), which removes the upward bias at small N (needs N >= 4).

    Args:
        x: (N, ...) features of one layer (flattened to (N, Dx)).
        y: (N, ...) features of another layer (flattened to (N, Dy)).
        debiased: Use the unbiased HSIC estimator.

    Returns:
        CKA as a Python float (in [0, 1] for the biased estimator).

    Raises:
        ValueError: NaN/inf or badly shaped features, different N, too few samples, or a
            representation with zero variance.
    """
    min_samples = 4 if debiased else 2
    fx = _flat64(x, "x", min_samples)
    fy = _flat64(y, "y", min_samples)
    if fx.shape[0] != fy.shape[0]:
        raise ValueError(
            f"x and y must have the same number of samples, got {fx.shape[0]} and {fy.shape[0]}"
        )
    fy = fy.to(fx.device)
    if not debiased and fx.shape[0] > fx.shape[1] * 4 and fx.shape[0] > fy.shape[1] * 4:
        # Feature-space form (cheaper when N >> D): ||Yᶜᵀ Xᶜ||²_F / (||Xᶜᵀ Xᶜ||_F ||Yᶜᵀ Yᶜ||_F).
        xc = fx - fx.mean(dim=0)
        yc = fy - fy.mean(dim=0)
        hxy = torch.linalg.matrix_norm(yc.T @ xc) ** 2
        hxx = torch.linalg.matrix_norm(xc.T @ xc)
        hyy = torch.linalg.matrix_norm(yc.T @ yc)
        if float(hxx) <= 0.0 or float(hyy) <= 0.0:
            raise ValueError("CKA is undefined: a representation has zero variance")
        return float(hxy / (hxx * hyy))
    return _cka_from_grams(centered_gram(fx, debiased), centered_gram(fy, debiased))


def cka_matrix(
    features_per_layer: Sequence[Tensor] | Mapping[str, Tensor], debiased: bool = False
) -> Tensor:
    """Pairwise linear CKA between L layers' representations of the same N samples (Fig. 8b).

    Each layer's centred Gram matrix (N×N float64) is computed once, so memory is L·N²·8 bytes.

    Args:
        features_per_layer: L tensors (N, ...) — a sequence, or a mapping whose values are taken
            in its order.
        debiased: Use the unbiased HSIC estimator.

    Returns:
        float64 (L, L) symmetric matrix with ones on the diagonal.

    Raises:
        ValueError: Empty input, different N between layers, or bad features.
    """
    layers = (
        list(features_per_layer.values())
        if isinstance(features_per_layer, Mapping)
        else list(features_per_layer)
    )
    if not layers:
        raise ValueError("cka_matrix needs at least one layer, got none")
    min_samples = 4 if debiased else 2
    flats = [_flat64(f, f"layer {i}", min_samples) for i, f in enumerate(layers)]
    n = flats[0].shape[0]
    for i, f in enumerate(flats):
        if f.shape[0] != n:
            raise ValueError(f"layer {i} has {f.shape[0]} samples, layer 0 has {n}")
    grams = [centered_gram(f.to(flats[0].device), debiased) for f in flats]
    norms = torch.stack([(g * g).sum() for g in grams])
    if bool((norms <= 0).any()):
        bad = (norms <= 0).nonzero().flatten().tolist()
        raise ValueError(f"CKA is undefined for layer(s) {bad}: zero variance (constant features)")
    size = len(grams)
    out = torch.eye(size, dtype=torch.float64)
    for i in range(size):
        for j in range(i + 1, size):
            value = float((grams[i] * grams[j]).sum() / torch.sqrt(norms[i] * norms[j]))
            out[i, j] = out[j, i] = value
    return out


def modularity_difference(curve: Sequence[float] | Tensor) -> Tensor:
    """Paper 1's representational difference of layers (Sec. 5.1, Fig. 8a): D_ij = |M_i − M_j|.

    Args:
        curve: Modularity per layer, length L.

    Returns:
        float64 (L, L) matrix of absolute differences.

    Raises:
        ValueError: Not 1-D, empty, or non-finite values.
    """
    m = torch.as_tensor(curve, dtype=torch.float64).detach().cpu()
    if m.dim() != 1 or m.numel() == 0:
        raise ValueError(f"curve must be a non-empty 1-D sequence, got shape {tuple(m.shape)}")
    if not bool(torch.isfinite(m).all()):
        raise ValueError(f"curve must be finite, got {m.tolist()}")
    return (m[:, None] - m[None, :]).abs()
