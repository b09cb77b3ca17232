"""Pruning figures: paper 1, Fig. 10(b) (ΔM of a removed layer vs the accuracy drop)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_delta_m_vs_delta_acc"]


def plot_delta_m_vs_delta_acc(
    x: np.ndarray,
    y: np.ndarray,
    layers: Sequence[str],
    *,
    fit: tuple[float, float] | None = None,
    pearson_r: float = math.nan,
    control: bool = False,
    title: str = "",
) -> Figure:
    """Scatter of ΔM (x) against the accuracy drop ΔAcc (y), one labelled point per layer.

    Args:
        x: ``(P,)`` ΔM = M_i − M_{i−1} of each removed layer (NaN: not drawn).
        y: ``(P,)`` accuracy drop in points (NaN: not drawn).
        layers: ``P`` point labels (layer names).
        fit: ``(slope, intercept)`` of the least-squares line, drawn when given.
        pearson_r: Pearson r, shown in the legend when finite.
        control: The drop is measured against the parent fine-tuned the same way.
        title: Axes title (default: the paper's figure).

    Returns:
        The figure.
    """
    ok = np.isfinite(x) & np.isfinite(y)
    fig, ax = plt.subplots(figsize=(5.0, 3.8))
    ax.scatter(x[ok], y[ok], color="#1f77b4", zorder=3)
    for name, xi, yi in zip(layers, x, y, strict=True):
        if math.isfinite(xi) and math.isfinite(yi):
            ax.annotate(name, (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if fit is not None:
        slope, intercept = fit
        grid = np.linspace(x[ok].min(), x[ok].max(), 50)
        ax.plot(grid, slope * grid + intercept, color="#d62728", lw=1, label=f"slope {slope:.2f}")
        if math.isfinite(pearson_r):
            ax.plot([], [], " ", label=f"Pearson r = {pearson_r:.2f}")
        ax.legend(fontsize=8)
    ax.axhline(0.0, color="0.6", lw=0.8)
    ax.set_xlabel(r"$\Delta M = M_i - M_{i-1}$ of the removed layer")
    parent = r"Acc$_{parent+FT}$" if control else r"Acc$_{parent}$"
    ax.set_ylabel(r"$\Delta$Acc = " + parent + r" − Acc$_{pruned}$ (points)")
    ax.set_title(title or "single-layer removals (paper 1, Fig. 10b)", fontsize=9)
    fig.tight_layout()
    return fig
