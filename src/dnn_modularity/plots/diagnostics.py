"""Figures of the per-class and class-pair diagnostics (which classes separate where), matplotlib.

Every function returns a :class:`matplotlib.figure.Figure` and never saves it: callers save with
:func:`dnn_modularity.records.atomic_save_figure` (PNG + PDF) and close it.

- :func:`plot_class_layer_heatmap`: class × layer heatmap (purity), the layer at which each
  class first reaches a threshold marked;
- :func:`plot_pair_matrices`: C × C pair-entanglement matrices at chosen layers;
- :func:`plot_pair_separation`: "when do they come apart" — pair × layer entanglement of chosen
  pairs, the layer at which each pair first drops to a threshold marked;
- :func:`plot_separability_curves`: Q, M, k-NN accuracy and linear-probe accuracy per layer (mean
  ± std bands), with their Spearman correlations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import matplotlib

matplotlib.use("Agg", force=False)

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from dnn_modularity.plots.curves import draw_curve, imshow_masked, layer_ticks

__all__ = [
    "DPI",
    "plot_class_layer_heatmap",
    "plot_pair_matrices",
    "plot_pair_separation",
    "plot_separability_curves",
]

#: Resolution of every figure here (pixels = figsize × DPI), as the other analysis figures.
DPI = 100


def _layer_axis(ax: Any, layer_names: Sequence[str], *, offset: int = 0) -> None:
    n = len(layer_names)
    step = max(1, int(np.ceil(n / 20)))
    ticks = np.arange(n)[::step]
    ax.set_xticks(ticks + offset)
    ax.set_xticklabels([layer_names[i] for i in ticks], rotation=60, ha="right", fontsize=7)


def _mark_crossings(ax: Any, first: Sequence[int], num_layers: int, symbol: str) -> None:
    """A marker in each row's first crossing cell; "never" at the right end of rows without one."""
    for row, col in enumerate(first):
        if int(col) >= 0:
            ax.plot(int(col), row, marker=symbol, color="white", markersize=7, mec="black")
        else:
            ax.text(num_layers - 0.45, row, "never", va="center", ha="left", fontsize=7)


def plot_class_layer_heatmap(
    values: Any,
    *,
    layer_names: Sequence[str],
    class_labels: Sequence[str],
    threshold: float,
    first: Sequence[int],
    title: str = "",
    cbar_label: str = "k-NN purity",
    vmin: float = 0.0,
    vmax: float = 1.0,
) -> Figure:
    """Class × layer heatmap, the first layer at which each class reaches ``threshold`` marked.

    Args:
        values: (C, L) values per class (rows) and layer (columns); NaN cells blank.
        layer_names: L column labels.
        class_labels: C row labels.
        threshold: The level (shown in the colour bar).
        first: (C,) 0-based first layer at which the row reaches ``threshold``, -1 for never.
        title: Axes title.
        cbar_label: Colour-bar label.
        vmin: Lower end of the colour range.
        vmax: Upper end of the colour range.

    Returns:
        The figure.
    """
    title = title or f"{cbar_label} per class and layer (▼: first layer ≥ {threshold:g})"
    rows = _Rows(class_labels, "class", "v", "viridis", 3.0)
    return _row_layer_heatmap(
        np.asarray(values, dtype=float), layer_names, rows, first, (vmin, vmax), threshold,
        cbar_label, title,
    )  # fmt: skip


class _Rows(NamedTuple):
    """What the rows of a row × layer heatmap are and how they are drawn."""

    labels: Sequence[str]
    name: str
    marker: str
    cmap: str
    min_height: float


def _row_layer_heatmap(
    array: np.ndarray,
    layer_names: Sequence[str],
    rows: _Rows,
    first: Sequence[int],
    value_range: tuple[float, float],
    threshold: float,
    cbar_label: str,
    title: str,
) -> Figure:
    """(R, L) row × layer heatmap, each row's first crossing marked, the level in the bar."""
    num_rows, n = array.shape
    fig, ax = plt.subplots(
        figsize=(max(5.5, 0.35 * n + 3.5), max(rows.min_height, 0.3 * num_rows + 1.8)), dpi=DPI
    )
    image = imshow_masked(ax, array, rows.cmap, *value_range)
    _mark_crossings(ax, first, n, rows.marker)
    _layer_axis(ax, layer_names)
    ax.set_xlim(-0.5, n + 0.6)
    ax.set_yticks(np.arange(num_rows))
    ax.set_yticklabels(list(rows.labels), fontsize=7)
    ax.set_xlabel("layer")
    ax.set_ylabel(rows.name)
    bar = fig.colorbar(image, ax=ax, label=cbar_label)
    bar.ax.axhline(threshold, color="white", linewidth=2)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_pair_matrices(
    matrices: Sequence[tuple[str, Any]],
    *,
    class_labels: Sequence[str],
    title: str = "",
    cbar_label: str = "pair entanglement (1 = random mixing)",
) -> Figure:
    """C × C pair-entanglement matrices at chosen layers, side by side on one colour scale.

    Args:
        matrices: ``(panel title, (C, C) matrix)`` per chosen layer (NaN diagonal blank).
        class_labels: C tick labels.
        title: Figure title.
        cbar_label: Colour-bar label.

    Returns:
        The figure.
    """
    panels = len(matrices)
    c = len(class_labels)
    vmax = max([1.0] + [float(np.nanmax(np.asarray(m, dtype=float))) for _, m in matrices if c > 1])
    size = max(2.6, 0.22 * c + 1.2)
    fig, axes = plt.subplots(
        1, max(1, panels), figsize=(size * panels + 1.2, size + 0.8), dpi=DPI, squeeze=False
    )
    image = None
    step = max(1, int(np.ceil(c / 20)))
    ticks = np.arange(c)[::step]
    for ax, (name, matrix) in zip(axes[0], matrices, strict=False):
        image = ax.imshow(
            np.ma.masked_invalid(np.asarray(matrix, dtype=float)),
            cmap="magma",
            vmin=0.0,
            vmax=vmax,
            interpolation="nearest",
        )
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.set_xticklabels([class_labels[i] for i in ticks], rotation=60, ha="right", fontsize=7)
        ax.set_yticklabels([class_labels[i] for i in ticks], fontsize=7)
        ax.set_title(name, fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=list(axes[0]), label=cbar_label, fraction=0.03, pad=0.02)
    if title:
        fig.suptitle(title)
    return fig


def plot_pair_separation(
    values: Any,
    *,
    layer_names: Sequence[str],
    pair_labels: Sequence[str],
    threshold: float,
    first: Sequence[int],
    title: str = "",
) -> Figure:
    """When do they come apart: pair × layer entanglement, the first layer ≤ ``threshold`` marked.

    Args:
        values: (P, L) entanglement of P pairs (rows, most entangled at the last layer first).
        layer_names: L column labels.
        pair_labels: P row labels (``"3/8"``, ``"cat/dog"``).
        threshold: The "apart" level.
        first: (P,) 0-based first layer with entanglement ≤ ``threshold``, -1 for never.
        title: Axes title.

    Returns:
        The figure.
    """
    array = np.asarray(values, dtype=float)
    p, n = array.shape if array.ndim == 2 else (0, len(layer_names))
    vmax = max(1.0, float(np.nanmax(array)) if array.size else 1.0)
    title = title or f"when do they come apart (▲: first layer with entanglement ≤ {threshold:g})"
    fig = _row_layer_heatmap(
        array.reshape(p, n),
        layer_names,
        _Rows(pair_labels, "class pair", "^", "magma", 2.8),
        first,
        (0.0, vmax),
        threshold,
        "pair entanglement (1 = random mixing)",
        title,
    )
    return fig


#: Line styles of :func:`plot_separability_curves` by curve name.
_CURVE_STYLE = {
    "modularity": {"label": "modularity Q", "color": "#1f77b4"},
    "M": {"label": "class-separation M", "color": "#9467bd", "linestyle": "-."},
    "knn_accuracy": {"label": "k-NN accuracy (leave-one-out)", "color": "#2ca02c"},
    "probe_accuracy": {"label": "linear-probe accuracy", "color": "#d62728", "linestyle": "--"},
}


def plot_separability_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float] | None]],
    *,
    layer_names: Sequence[str],
    spearman: Mapping[str, Mapping[str, float]] | None = None,
    title: str = "",
    figsize: tuple[float, float] = (7.0, 4.2),
) -> Figure:
    """Q, M, k-NN accuracy and linear-probe accuracy per layer, mean ± std bands.

    Args:
        curves: Name (``modularity``, ``M``, ``knn_accuracy``, ``probe_accuracy`` or any) ->
            ``((L,) means, (L,) stds or None)``.
        layer_names: L tick labels.
        spearman: Optional ``rho[a][b]`` over layers; ρ of Q with each other curve goes into the
            legend.
        title: Axes title.
        figsize: Figure size in inches.

    Returns:
        The figure.
    """
    fig, ax = plt.subplots(figsize=figsize, dpi=DPI)
    for name, (mean, std) in curves.items():
        style = dict(_CURVE_STYLE.get(name, {"label": name}))
        label = style.pop("label")
        rho = (spearman or {}).get("modularity", {}).get(name)
        if rho is not None and name != "modularity" and np.isfinite(rho):
            label += f" (Spearman ρ with Q {rho:+.2f})"
        draw_curve(ax, mean, std, marker="o", markersize=3, label=label, **style)
    layer_ticks(ax, len(layer_names), layer_names)
    ax.set_xlabel("layer")
    ax.set_ylabel("value")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig
