"""Linear-probe accuracy of a layer's features (Alain & Bengio 2016), in closed form (torch only).

Alain & Bengio ("Understanding intermediate layers using linear classifier probes", 2016) train
a linear classifier on each layer's frozen features and read how linearly separable the classes
are, layer by layer. This module gives that curve from the same probe features the modularity
is computed from, deterministically and in a fraction of a second per layer:

**The classifier.** A ridge (L2-regularised least-squares) classifier: one-hot targets Y
(N, C), an unpenalised bias, weights W minimising ||Y − 1bᵀ − XW||² + λ||W||², the class of a
sample the argmax of its C scores (ties: the lower class). It is the regularised linear
classifier with a closed-form solution, so no learning rate, epochs or random initialisation
enter the curve; a softmax probe would need an iterative solver and a stopping rule per layer.

**Solved in the smaller space.** With X_c the centred training features (N, D): when D > N (the
usual case: D up to ~65k, N ~ 500) the N × N Gram matrix K = X_c X_cᵀ is diagonalised (the dual,
W = X_cᵀ (K + λI)⁻¹ (Y − Ȳ)); otherwise the D × D covariance X_cᵀ X_c (the primal). Either way
one float64 eigendecomposition serves every λ. Cost ~2·N·min(N, D)·max(N, D) flops plus the
eigendecomposition; memory 8·N·D bytes (a float64 copy of the training features).

**The regulariser** is chosen on the training part only, by exact leave-one-out (LOO) cross-
validation over a fixed grid: λ = ``l2`` × (mean squared norm of the centred training rows),
``l2`` in :data:`DEFAULT_L2_GRID`; the LOO predictions of a ridge fit have a closed form
(ŷ₋ᵢ = (ŷᵢ − Hᵢᵢ yᵢ) / (1 − Hᵢᵢ), H the hat matrix), so the whole grid costs less than one
more fit. The grid point with the highest LOO accuracy wins, ties going to the lower LOO squared
error. A fixed ``l2`` (relative, as the grid) skips the selection.

**Train and test samples** are either given (``test_x``/``test_y``, e.g. a separate seeded
training subset and the probe set) or a seeded, class-stratified split of one set
(:func:`stratified_split`); :attr:`LinearProbeResult.split` records which.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dnn_modularity.graph.validation import check_features

__all__ = [
    "DEFAULT_L2_GRID",
    "LinearProbeResult",
    "linear_probe",
    "stratified_split",
]

DEFAULT_L2_GRID: tuple[float, ...] = tuple(10.0**e for e in range(-6, 4))
"""Relative ridge penalties tried by LOO cross-validation: 1e-6 .. 1e3 (× mean squared norm)."""

# Eigenvalues below this fraction of the largest are treated as 0 (rank deficiency, and the
# centring direction of the Gram matrix).
_EIG_RTOL = 1e-10


@dataclass
class LinearProbeResult:
    """Outcome of :func:`linear_probe`.

    Attributes:
        accuracy: Test accuracy in [0, 1].
        train_accuracy: Accuracy on the training samples (fitted, not LOO).
        cv_accuracy: LOO accuracy on the training samples at the chosen ``l2``.
        chance_accuracy: Accuracy of always predicting the most frequent training class, on the
            test samples (the floor a probe must beat).
        l2: The chosen relative penalty (a grid value, or the fixed one).
        l2_absolute: λ = l2 × mean squared norm of the centred training rows.
        l2_grid: The relative penalties tried (one value when fixed).
        grid_cv_accuracy: LOO accuracy at each grid value.
        split: ``"given"`` (separate train and test sets) or ``"stratified"`` (a seeded split of
            one set, see :func:`stratified_split`).
        seed: Seed of the split (None for ``"given"``).
        test_fraction: Test share of the split (None for ``"given"``).
        num_train: Training samples.
        num_test: Test samples.
        num_features: Feature dimension D.
        solver: ``"dual"`` (N × N Gram, D > N) or ``"primal"`` (D × D covariance).
        classes: (C,) training label values; class c is ``classes[c]``.
        weight: float32 (D, C) weights.
        bias: float32 (C,) bias.
        test_predictions: (num_test,) predicted label values.
    """

    accuracy: float
    train_accuracy: float
    cv_accuracy: float
    chance_accuracy: float
    l2: float
    l2_absolute: float
    l2_grid: tuple[float, ...]
    grid_cv_accuracy: tuple[float, ...]
    split: str
    seed: int | None
    test_fraction: float | None
    num_train: int
    num_test: int
    num_features: int
    solver: str
    classes: Tensor
    weight: Tensor
    bias: Tensor
    test_predictions: Tensor

    def record(self) -> dict[str, Any]:
        """The scalar fields, for a CSV/JSON record (tensors left out)."""
        return {
            "probe_accuracy": self.accuracy,
            "probe_train_accuracy": self.train_accuracy,
            "probe_cv_accuracy": self.cv_accuracy,
            "probe_chance_accuracy": self.chance_accuracy,
            "probe_l2": self.l2,
            "probe_split": self.split,
            "probe_seed": self.seed,
            "probe_test_fraction": self.test_fraction,
            "probe_num_train": self.num_train,
            "probe_num_test": self.num_test,
            "probe_solver": self.solver,
        }

    def predict(self, features: Any) -> Tensor:
        """Predicted label values (M,) of features (M, ...) with the fitted probe."""
        x = check_features(features, min_samples=1).to(self.weight.device, torch.float32)
        if x.shape[1] != self.weight.shape[0]:
            raise ValueError(
                f"features have D = {x.shape[1]}, the probe was fitted on D = "
                f"{self.weight.shape[0]}"
            )
        return self.classes[(x @ self.weight + self.bias).argmax(dim=1)]


def _check_int_labels(labels: Any, n: int, what: str) -> Tensor:
    y = torch.as_tensor(labels)
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(f"{what} must have shape ({n},) (one per sample), got {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{what} must be integers, got dtype {y.dtype}")
    return y.to(torch.long)


def stratified_split(
    labels: Any, test_fraction: float = 0.5, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Seeded class-stratified split of sample indices into train and test.

    Each class c with n_c samples sends round(test_fraction·n_c) of them, clipped to
    [1, n_c − 1], to the test part (a class with one sample stays in training), chosen by
    ``torch.randperm`` with a generator seeded by ``seed``, classes in sorted label order. The
    result depends only on the labels, ``test_fraction`` and ``seed``.

    Args:
        labels: Integer labels (N,).
        test_fraction: Share of each class held out, in (0, 1).
        seed: Seed of the permutation.

    Returns:
        ``(train_idx, test_idx)``: sorted LongTensors partitioning 0..N-1 (CPU).

    Raises:
        ValueError: Bad labels or a fraction outside (0, 1).
    """
    y = torch.as_tensor(labels)
    if y.dim() != 1:
        raise ValueError(f"labels must be 1-D (N,), got shape {tuple(y.shape)}")
    y = _check_int_labels(y, int(y.shape[0]), "labels").cpu()
    if not (isinstance(test_fraction, int | float) and 0.0 < float(test_fraction) < 1.0):
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    gen = torch.Generator().manual_seed(int(seed))
    test_parts = []
    for value in torch.unique(y).tolist():
        members = (y == value).nonzero().squeeze(1)
        n_c = members.numel()
        n_test = min(max(round(test_fraction * n_c), 1), n_c - 1)
        test_parts.append(members[torch.randperm(n_c, generator=gen)[:n_test]])
    test = torch.cat(test_parts).sort().values
    mask = torch.ones(y.numel(), dtype=torch.bool)
    mask[test] = False
    return mask.nonzero().squeeze(1), test


def _spectral_basis(xc: Tensor) -> tuple[Tensor, Tensor, str, float]:
    """Orthonormal Q (N, r) and eigenvalues s (r,) with X_c X_cᵀ = Q diag(s) Qᵀ (s > 0).

    Also returns the solver used and trace(X_c X_cᵀ) = Σ_i ||x_i − x̄||².
    """
    n, d = xc.shape
    gram = xc @ xc.T if d > n else xc.T @ xc
    trace = float(gram.diagonal().sum())
    if d > n:
        s, q = torch.linalg.eigh(gram)
        solver = "dual"
    else:
        s, v = torch.linalg.eigh(gram)
        solver = "primal"
    keep = s > _EIG_RTOL * s.max().clamp(min=0)
    s = s[keep]
    # primal: X_c v_j / sqrt(s_j) are the orthonormal left vectors
    q = (xc @ v[:, keep]) / s.sqrt() if solver == "primal" else q[:, keep]
    return q, s, solver, trace


def _loo_scores(q: Tensor, s: Tensor, b: Tensor, yc: Tensor, y_onehot: Tensor, lam: float):
    """Fitted and exact LOO scores (N, C) of the ridge fit with penalty ``lam``."""
    shrink = s / (s + lam)
    fitted = q @ (shrink.unsqueeze(1) * b) + (y_onehot - yc)  # + the mean: the bias
    h = (q.square() @ shrink) + 1.0 / q.shape[0]  # diagonal of the hat matrix (with the bias)
    loo = (fitted - h.unsqueeze(1) * y_onehot) / (1.0 - h).clamp(min=1e-12).unsqueeze(1)
    return fitted, loo


def linear_probe(
    train_x: Any,
    train_y: Any,
    test_x: Any | None = None,
    test_y: Any | None = None,
    *,
    test_fraction: float = 0.5,
    seed: int = 0,
    l2: float | None = None,
    l2_grid: Sequence[float] = DEFAULT_L2_GRID,
) -> LinearProbeResult:
    """Fit a ridge linear probe on training features and report its test accuracy.

    Two ways to give the samples: ``train_x, train_y, test_x, test_y`` (split ``"given"``), or
    one set ``train_x, train_y`` split by :func:`stratified_split` with ``test_fraction`` and
    ``seed`` (split ``"stratified"``). The penalty is chosen by exact LOO cross-validation on the
    training part over ``l2_grid`` (relative to the mean squared norm of the centred training
    rows), or fixed by ``l2``; see the module docstring for the classifier and solver.

    Args:
        train_x: (N, ...) training features (flattened to (N, D)), any real dtype, CPU or CUDA.
        train_y: (N,) integer labels, any values, at least two classes.
        test_x: Optional (M, ...) test features with the same D; needs ``test_y``.
        test_y: Optional (M,) integer labels (a label absent from training is always wrong).
        test_fraction: Test share of the stratified split (only without ``test_x``).
        seed: Seed of the stratified split (only without ``test_x``).
        l2: A fixed relative penalty > 0 (no selection); None: select from ``l2_grid``.
        l2_grid: Relative penalties (> 0) to select from.

    Returns:
        :class:`LinearProbeResult`.

    Raises:
        ValueError: Bad or non-finite features, mismatched shapes or lengths, fewer than two
            training classes, only one of ``test_x``/``test_y``, bad ``l2``/``l2_grid``.
    """
    if (test_x is None) != (test_y is None):
        raise ValueError("give both test_x and test_y (or neither, to split train_x)")
    x = check_features(train_x, min_samples=2)
    y = _check_int_labels(train_y, x.shape[0], "train_y").to(x.device)
    grid = _check_grid(l2, l2_grid)
    if test_x is None:
        train_idx, test_idx = stratified_split(y, test_fraction, seed)
        train_idx, test_idx = train_idx.to(x.device), test_idx.to(x.device)
        x, y, xt, yt = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
        split, split_seed, fraction = "stratified", int(seed), float(test_fraction)
    else:
        xt = check_features(test_x, min_samples=1).to(x.device)
        if xt.shape[1] != x.shape[1]:
            raise ValueError(
                f"test_x has D = {xt.shape[1]} features per sample, train_x has D = {x.shape[1]}"
            )
        yt = _check_int_labels(test_y, xt.shape[0], "test_y").to(x.device)
        split, split_seed, fraction = "given", None, None
    classes, codes = torch.unique(y, return_inverse=True)
    if classes.numel() < 2:
        raise ValueError(f"need at least 2 training classes, got labels {classes.tolist()}")

    x64 = x.to(torch.float64)
    mean = x64.mean(dim=0)
    xc = x64 - mean
    n = xc.shape[0]
    q, s, solver, trace = _spectral_basis(xc)
    # λ's unit: the mean squared norm of the centred rows (1 for identical rows, where any λ
    # predicts the majority class)
    scale = trace / n if trace > 0 else 1.0
    y_onehot = torch.nn.functional.one_hot(codes, classes.numel()).to(torch.float64)
    yc = y_onehot - y_onehot.mean(dim=0)
    b = q.T @ yc

    cv_acc: list[float] = []
    cv_err: list[float] = []
    for rel in grid:
        _, loo = _loo_scores(q, s, b, yc, y_onehot, rel * scale)
        cv_acc.append(float((loo.argmax(dim=1) == codes).double().mean()))
        cv_err.append(float((loo - y_onehot).square().sum(dim=1).mean()))
    best = max(range(len(grid)), key=lambda i: (cv_acc[i], -cv_err[i]))
    lam = grid[best] * scale

    fitted, _ = _loo_scores(q, s, b, yc, y_onehot, lam)
    weight = xc.T @ (q @ (b / (s + lam).unsqueeze(1)))  # (D, C) = X_cᵀ (K + λI)⁻¹ Y_c
    bias = y_onehot.mean(dim=0) - mean @ weight
    pred_codes = (xt.to(torch.float64) @ weight + bias).argmax(dim=1)
    pred = classes[pred_codes]
    majority = classes[torch.bincount(codes).argmax()]
    return LinearProbeResult(
        accuracy=float((pred == yt).double().mean()),
        train_accuracy=float((fitted.argmax(dim=1) == codes).double().mean()),
        cv_accuracy=cv_acc[best],
        chance_accuracy=float((yt == majority).double().mean()),
        l2=float(grid[best]),
        l2_absolute=float(lam),
        l2_grid=tuple(float(v) for v in grid),
        grid_cv_accuracy=tuple(cv_acc),
        split=split,
        seed=split_seed,
        test_fraction=fraction,
        num_train=n,
        num_test=int(xt.shape[0]),
        num_features=int(xc.shape[1]),
        solver=solver,
        classes=classes,
        weight=weight.to(torch.float32),
        bias=bias.to(torch.float32),
        test_predictions=pred,
    )


def _check_grid(l2: float | None, l2_grid: Sequence[float]) -> tuple[float, ...]:
    values = [l2] if l2 is not None else list(l2_grid)
    what = "l2" if l2 is not None else "l2_grid"
    if not values:
        raise ValueError("l2_grid is empty; give at least one relative penalty > 0")
    for v in values:
        number = isinstance(v, int | float) and not isinstance(v, bool)
        if not (number and math.isfinite(v) and v > 0):
            raise ValueError(f"{what} values must be finite numbers > 0, got {v!r}")
    return tuple(float(v) for v in values)
