"""Input checks shared by the graph engine.

Every public function of :mod:`dnn_modularity.graph` validates its inputs here, before any
expensive work, and raises :class:`ValueError` with a message that names the bad value and, where
there is a fixed set of choices, the valid ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

METRICS: tuple[str, ...] = ("cosine", "pearson")
"""Similarity metrics of the engine: cosine (paper 1 Eq. 3, paper 2 Eq. 6) and Pearson
correlation (paper 1 appendix A, Fig. B11)."""


def check_metric(metric: str) -> str:
    """Return ``metric`` if it is one of :data:`METRICS`.

    Raises:
        ValueError: Unknown metric; the message lists the valid ones.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid metrics are {', '.join(METRICS)}")
    return metric


KERNELS: tuple[str, ...] = ("auto", "float32", "bfloat16", "float16")
"""Matmul kernels of the similarity strips: ``"auto"`` (chosen by measured speed, see
:mod:`~dnn_modularity.graph.kernels`), plain ``"float32"``, or a ``"bfloat16"``/``"float16"``
screen whose candidates are recomputed in float32 (exact either way)."""


def _as_tensor(x: Any, what: str) -> Tensor:
    """``x`` as a tensor, detached.

    The engine never needs gradients; features straight from a forward pass have
    ``requires_grad=True``, which ``out=`` matmuls refuse.
    """
    if isinstance(x, Tensor):
        return x.detach()
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as err:
        dtype = getattr(x, "dtype", None)
        detail = f" of dtype {dtype}" if dtype is not None else ""
        raise ValueError(
            f"{what} must be a real-valued tensor or array-like, got {type(x).__name__}{detail}"
        ) from err


def check_features(features: Any, *, min_samples: int = 2, finite: bool = True) -> Tensor:
    """Validate features of shape (N, ...) and flatten them to (N, D).

    Args:
        features: Tensor or array-like of shape (N, ...) with at least two dimensions; any real
            dtype (it is not converted here).
        min_samples: The smallest N accepted.
        finite: Also check that every value is finite (a pass over the data). Callers that
            prove finiteness on their own way (a finite norm of every row) skip it and call
            :func:`check_finite` when that proof fails.

    Returns:
        A (N, D) view or copy of ``features`` (``features.reshape(N, -1)``).

    Raises:
        ValueError: Not at least 2-D, an empty dimension, complex dtype, fewer than
            ``min_samples`` rows, or NaN/inf values (the message gives the count and first row).
    """
    x = _as_tensor(features, "features")
    if x.dim() < 2:
        raise ValueError(
            f"features must have shape (N, ...) with at least 2 dimensions, got shape "
            f"{tuple(x.shape)}"
        )
    if x.is_complex():
        raise ValueError(f"features must be real-valued, got dtype {x.dtype}")
    n = x.shape[0]
    shape = tuple(x.shape)
    if n == 0:
        raise ValueError(
            f"need at least {min_samples} samples, got N = 0 (features of shape {shape})"
        )
    x = x.reshape(n, -1)
    if x.shape[1] == 0:
        raise ValueError(f"features have no feature dimensions (shape {shape})")
    if n < min_samples:
        raise ValueError(f"need at least {min_samples} samples, got N = {n}")
    if finite:
        check_finite(x)
    if x.dtype == torch.bool:
        x = x.to(torch.uint8)
    return x


def check_finite(x: Tensor) -> None:
    """Raise if the (N, D) features ``x`` hold NaN or inf values.

    Raises:
        ValueError: NaN/inf values (the message gives the count and the first bad row).
    """
    # Fast test first: a row holding NaN/inf has a non-finite sum (the sum may also overflow, in
    # which case the exact elementwise test below decides); torch.isfinite is ~10x slower.
    if x.is_floating_point() and not bool(torch.isfinite(x.sum(dim=1, dtype=torch.float32)).all()):
        finite = torch.isfinite(x).all(dim=1)
        if not bool(finite.all()):
            bad_rows = (~finite).nonzero().flatten()
            n_bad = int((~torch.isfinite(x)).sum())
            raise ValueError(
                f"features contain {n_bad} NaN/inf values (in {bad_rows.numel()} rows, first row "
                f"{int(bad_rows[0])}); all features must be finite"
            )


def check_k(k: int, n: int) -> int:
    """Return ``k`` if 1 <= k < N (each of the N nodes needs k *other* nodes).

    Raises:
        ValueError: k not a positive integer, or N <= k.
    """
    if isinstance(k, bool) or not isinstance(k, int):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got k = {k}")
    if n <= k:
        raise ValueError(f"need N > k samples for a k-NN graph, got N = {n} and k = {k}")
    return k


def _string_label_codes(labels: Any) -> Tensor | None:
    """Codes 0..C-1 (in sorted order) of string/object labels, or None for numeric labels."""
    if isinstance(labels, Tensor):
        return None
    array = np.asarray(labels) if isinstance(labels, (list, tuple, np.ndarray)) else None
    if array is None or array.dtype.kind not in "USO":
        return None
    if array.ndim != 1:
        raise ValueError(f"labels must have shape (N,), got shape {array.shape}")
    try:
        _, codes = np.unique(array, return_inverse=True)
    except TypeError as err:  # e.g. a mix of strings and numbers: no order between them
        raise ValueError(
            f"labels must be all numbers or all strings; got mixed values {array[:5].tolist()}..."
        ) from err
    return torch.as_tensor(codes.reshape(-1), dtype=torch.long)


def check_labels(labels: Any, n: int, *, device: torch.device | None = None) -> tuple[Tensor, int]:
    """Validate class labels and map them to consecutive codes 0..C-1.

    Args:
        labels: Tensor or array-like of shape (N,): integer labels (any values, not necessarily
            0..C-1) or string labels (e.g. class names; each distinct string is a class).
        n: The expected number of samples N.
        device: Where to put the codes (default: the labels' device).

    Returns:
        ``(codes, num_classes)``: a LongTensor (N,) of codes in 0..C-1 (in the sorted order of
        the label values) and C.

    Raises:
        ValueError: Wrong shape or length, non-integer dtype, or fewer than two classes.
    """
    strings = _string_label_codes(labels)
    y = strings if strings is not None else _as_tensor(labels, "labels")
    if y.dim() != 1:
        raise ValueError(f"labels must have shape (N,) = ({n},), got shape {tuple(y.shape)}")
    if y.shape[0] != n:
        raise ValueError(f"labels have length {y.shape[0]} but there are N = {n} samples")
    if y.is_floating_point() or y.is_complex():
        raise ValueError(f"labels must be integers or strings, got dtype {y.dtype}")
    if device is not None:
        y = y.to(device)
    values, codes = torch.unique(y, return_inverse=True)
    if values.numel() < 2:
        raise ValueError(
            f"need at least 2 classes, got {values.numel()} (label value(s) {values.tolist()})"
        )
    return codes.to(torch.long), int(values.numel())


def check_num_edges(num_edges: int, n: int) -> int:
    """Return ``num_edges`` if 1 <= num_edges <= N(N-1)/2.

    Raises:
        ValueError: Not a positive integer, or more edges than unordered pairs.
    """
    if isinstance(num_edges, bool) or not isinstance(num_edges, int):
        raise ValueError(f"num_edges must be a positive integer, got {num_edges!r}")
    pairs = n * (n - 1) // 2
    if num_edges < 1:
        raise ValueError(f"num_edges must be >= 1, got {num_edges}")
    if num_edges > pairs:
        raise ValueError(
            f"num_edges = {num_edges} exceeds the N(N-1)/2 = {pairs} unordered pairs of N = {n} "
            "samples"
        )
    return num_edges


def check_bins(bins: int) -> int:
    """Return ``bins`` if it is an integer >= 1.

    Raises:
        ValueError: bins < 1 or not an integer.
    """
    if isinstance(bins, bool) or not isinstance(bins, int):
        raise ValueError(f"bins must be a positive integer, got {bins!r}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    return bins


def check_range(value_range: Sequence[float]) -> tuple[float, float]:
    """Return ``(lo, hi)`` if both are finite and lo < hi.

    Raises:
        ValueError: Not a pair, not finite, or lo >= hi.
    """
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError) as err:
        raise ValueError(f"range must be a pair (lo, hi) of numbers, got {value_range!r}") from err
    if not (torch.isfinite(torch.tensor([lo, hi])).all() and lo < hi):
        raise ValueError(f"range must be finite with lo < hi, got ({lo}, {hi})")
    return lo, hi


def check_block_size(block_size: int | None) -> int | None:
    """Return ``block_size`` if it is None or an integer >= 1.

    Raises:
        ValueError: Not None and not a positive integer.
    """
    if block_size is None:
        return None
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be None or a positive integer, got {block_size!r}")
    return block_size


def check_resolution(resolution: float) -> float:
    """Return ``resolution`` as a float if it is finite.

    Raises:
        ValueError: Not a finite number.
    """
    try:
        value = float(resolution)
    except (TypeError, ValueError) as err:
        raise ValueError(f"resolution must be a number, got {resolution!r}") from err
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"resolution must be finite, got {resolution!r}")
    return value


def check_kernel(kernel: str, source: str = "kernel") -> str:
    """Return ``kernel`` if it is one of :data:`KERNELS`.

    Args:
        kernel: The requested kernel.
        source: Where the value came from (the argument or an environment variable), for the
            message.

    Raises:
        ValueError: Unknown kernel; the message lists the valid ones.
    """
    if kernel not in KERNELS:
        raise ValueError(f"unknown {source} {kernel!r}; valid kernels are {', '.join(KERNELS)}")
    return kernel
