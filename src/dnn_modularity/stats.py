"""Spearman rank correlation of per-layer curves (e.g. modularity Q vs linear-probe accuracy).

Does modularity track how linearly separable a layer is? Over the L layers of one network, the
Spearman correlation of two curves (Q, M, k-NN accuracy, probe accuracy) answers it without
assuming a linear relation between them. Pure torch, float64.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["average_ranks", "spearman", "spearman_matrix"]


def _as_vector(values: Any, what: str) -> Tensor:
    v = torch.as_tensor(values, dtype=torch.float64)
    if v.dim() != 1:
        raise ValueError(f"{what} must be a 1-D sequence of numbers, got shape {tuple(v.shape)}")
    return v


def average_ranks(values: Any) -> Tensor:
    """Ranks 1..n of ``values``, tied values sharing the average of their ranks.

    Example: ``[10, 20, 20, 5]`` -> ``[2, 3.5, 3.5, 1]`` (scipy's ``rankdata`` "average").

    Args:
        values: (n,) numbers without NaN.

    Returns:
        float64 Tensor (n,).

    Raises:
        ValueError: Not 1-D, or NaN values.
    """
    v = _as_vector(values, "values")
    if v.isnan().any():
        raise ValueError("values must not contain NaN")
    n = v.numel()
    order = torch.sort(v, stable=True).indices
    sorted_v = v[order]
    # groups of equal values: start index of each group, then the average rank of the group
    new_group = torch.ones(n, dtype=torch.bool)
    new_group[1:] = sorted_v[1:] != sorted_v[:-1]
    group = torch.cumsum(new_group.long(), 0) - 1
    counts = torch.bincount(group).to(torch.float64)
    starts = torch.cumsum(counts, 0) - counts  # 0-based first position of each group
    mean_rank = starts + (counts + 1) / 2  # 1-based average of positions start+1 .. start+count
    ranks = torch.empty(n, dtype=torch.float64)
    ranks[order] = mean_rank[group]
    return ranks


def spearman(x: Any, y: Any) -> float:
    """Spearman's rank correlation ρ of two paired sequences (ties: average ranks).

    ρ is the Pearson correlation of the average ranks (equal to ``scipy.stats.spearmanr``).
    Pairs where either value is NaN are left out (e.g. a layer whose probe failed).

    Args:
        x: (n,) numbers.
        y: (n,) numbers, paired with ``x``.

    Returns:
        ρ in [-1, 1]; NaN when fewer than 2 complete pairs remain or either sequence is constant
        on them.

    Raises:
        ValueError: Not 1-D, or different lengths.
    """
    a, b = _as_vector(x, "x"), _as_vector(y, "y")
    if a.numel() != b.numel():
        raise ValueError(f"x and y must have the same length, got {a.numel()} and {b.numel()}")
    keep = ~(a.isnan() | b.isnan())
    if int(keep.sum()) < 2:
        return math.nan
    ra, rb = average_ranks(a[keep]), average_ranks(b[keep])
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float(ra @ ra) * float(rb @ rb))  # exact 1 for identical ranks
    if denom == 0.0:
        return math.nan
    return max(-1.0, min(1.0, float(ra @ rb) / denom))


def spearman_matrix(curves: Mapping[str, Sequence[float] | Tensor]) -> dict[str, dict[str, float]]:
    """Spearman ρ between every pair of named per-layer curves.

    Args:
        curves: name -> (L,) values per layer, all of the same length L (e.g. ``{"Q": ...,
            "M": ..., "knn_accuracy": ..., "probe_accuracy": ...}``).

    Returns:
        ``out[a][b]`` = ρ(curves[a], curves[b]) for all names (``out[a][a]`` = 1 unless the
        curve is constant, then NaN).

    Raises:
        ValueError: Curves of different lengths, or not 1-D.
    """
    lengths = {name: _as_vector(values, name).numel() for name, values in curves.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"curves must have the same number of layers, got {lengths}")
    names = list(curves)
    return {a: {b: spearman(curves[a], curves[b]) for b in names} for a in names}
