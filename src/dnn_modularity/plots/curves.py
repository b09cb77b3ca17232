"""Per-layer curve figures: one curve-with-band drawer for every command, heatmaps.

`draw_curve` draws one per-layer curve with its mean ± std band and `layer_ticks` labels the
layer axis; everything that draws curves uses them: `plot_curves` (modularity vs layer, one line
per epoch or a mean ± std band, as paper 1 Fig. 4 and 6b: `train`'s monitor), `plot_curve_series`
(the analyses' curves), the report's comparison panels and the pruning figures.
`plot_heatmap` draws epoch x layer. Figures are returned, never saved: callers save them with
`dnn_modularity.records.atomic_save_figure` (PNG + PDF).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

__all__ = [
    "DPI",
    "CurveSeries",
    "draw_curve",
    "draw_series",
    "layer_ticks",
    "new_figure",
    "plot_curve_series",
    "plot_curves",
    "plot_heatmap",
]

#: Above this many curves a colour bar replaces the legend (a 150-entry legend is unreadable).
MAX_LEGEND_ENTRIES = 12


def _as_2d(values: object) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"expected curves of shape (C, L) or (L,), got {array.shape}")
    return array


def layer_ticks(ax: Any, num_layers: int, layer_names: Sequence[str] | None = None) -> None:
    """Layer ticks 1..L on the x axis, thinned to ~20 labels (ResNet-152 has 50 blocks).

    Args:
        ax: The axes.
        num_layers: L.
        layer_names: L tick labels (module names); None: the layer indices.
    """
    if num_layers == 0:
        return
    positions = np.arange(1, num_layers + 1)
    step = max(1, int(np.ceil(num_layers / 20)))
    ax.set_xticks(positions[::step])
    if layer_names is not None:
        if len(layer_names) != num_layers:
            raise ValueError(f"{len(layer_names)} layer names for {num_layers} layers")
        ax.set_xticklabels(list(layer_names)[::step], rotation=60, ha="right", fontsize=7)
    ax.set_xlim(0.5, num_layers + 0.5)


def draw_curve(
    ax: Any,
    y: Sequence[float] | np.ndarray,
    std: Sequence[float] | np.ndarray | None = None,
    *,
    x: Sequence[float] | np.ndarray | None = None,
    band_alpha: float = 0.2,
    **style: Any,
) -> Any:
    """One per-layer curve with its mean ± std band: the line every curve figure draws.

    Args:
        ax: The axes.
        y: ``(L,)`` values (the mean over repeats).
        std: ``(L,)`` standard deviations, drawn as a shaded ±1 std band (paper 1, Fig. 4);
            None: no band.
        x: ``(L,)`` x positions (default ``1..L``, the 1-based layer index).
        band_alpha: Opacity of the band.
        **style: `Axes.plot` arguments (fmt string as `fmt`, color, label, marker ...).

    Returns:
        The line.
    """
    y = np.asarray(y, dtype=float)
    x = np.arange(1, len(y) + 1) if x is None else np.asarray(x, dtype=float)
    fmt = style.pop("fmt", None)
    (line,) = ax.plot(x, y, *([fmt] if fmt else []), **style)
    if std is not None:
        std = np.asarray(std, dtype=float)
        ax.fill_between(x, y - std, y + std, color=line.get_color(), alpha=band_alpha, linewidth=0)
    return line


def plot_curves(
    curves: object,
    *,
    labels: Sequence[str] | None = None,
    std: object | None = None,
    layer_names: Sequence[str] | None = None,
    color_values: Sequence[float] | None = None,
    color_label: str = "epoch",
    title: str | None = None,
    xlabel: str = "layer",
    ylabel: str = "modularity Q",
    cmap: str = "viridis",
    ax: plt.Axes | None = None,
    reference: tuple[str, Sequence[float]] | None = None,
) -> Figure:
    """Modularity (or any per-layer value) against layer index, one line per curve.

    Args:
        curves: (C, L) values (or (L,) for one curve): C curves over L layers (layer 1 = first tap).
        labels: C legend labels (e.g. "epoch 3", "VGG16"); default "curve i".
        std: Optional (C, L) standard deviations, drawn as a shaded ±1 std band (paper 1 Fig. 4).
        layer_names: Optional L tick labels (module names); default: layer indices 1..L.
        color_values: Optional C numbers (e.g. epochs) mapped through `cmap`; with more than
            `MAX_LEGEND_ENTRIES` curves a colour bar labelled `color_label` replaces the legend.
        color_label: Colour-bar label.
        title: Axes title.
        xlabel: X-axis label.
        ylabel: Y-axis label.
        cmap: Colormap for `color_values`.
        ax: Axes to draw into (default: a new figure).
        reference: Optional ``(label, (L,) values)`` drawn as a dashed black line, e.g. the
            authors' published curve (:mod:`dnn_modularity.reference`); it is always in the
            legend. Ignored when its length differs from L.

    Returns:
        The figure.
    """
    values = _as_2d(curves)
    num_curves, num_layers = values.shape
    spread = None if std is None else _as_2d(std)
    if spread is not None and spread.shape != values.shape:
        raise ValueError(f"std shape {spread.shape} differs from curves shape {values.shape}")
    if labels is not None and len(labels) != num_curves:
        raise ValueError(f"{len(labels)} labels for {num_curves} curves")
    if color_values is not None and len(color_values) != num_curves:
        raise ValueError(f"{len(color_values)} color_values for {num_curves} curves")
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(6.0, 0.18 * num_layers + 3.0), 4.0))
    else:
        fig = ax.figure
    x = np.arange(1, num_layers + 1)
    mapper = None
    if color_values is not None:
        norm = matplotlib.colors.Normalize(
            vmin=min(color_values), vmax=max(max(color_values), min(color_values) + 1e-9)
        )
        mapper = matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap)
    for i in range(num_curves):
        color = (
            mapper.to_rgba(color_values[i])
            if mapper is not None and color_values is not None
            else None
        )
        label = labels[i] if labels is not None else f"curve {i + 1}"
        draw_curve(
            ax,
            values[i],
            None if spread is None else spread[i],
            marker="o",
            markersize=3,
            linewidth=1.4,
            color=color,
            label=label,
        )
    reference_line = None
    if reference is not None and len(reference[1]) == num_layers:
        (reference_line,) = ax.plot(
            x, np.asarray(reference[1], dtype=float), linestyle="--", color="black",
            linewidth=1.4, label=reference[0], zorder=5,
        )  # fmt: skip
    layer_ticks(ax, num_layers, layer_names)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title)
    if mapper is not None and num_curves > MAX_LEGEND_ENTRIES:
        integer = color_values is not None and all(float(v).is_integer() for v in color_values)
        ticks = matplotlib.ticker.MaxNLocator(integer=True) if integer else None
        fig.colorbar(mapper, ax=ax, label=color_label, ticks=ticks)
        if reference_line is not None:
            ax.legend(handles=[reference_line], fontsize=8, loc="best", frameon=False)
    else:
        ax.legend(fontsize=8, loc="best", frameon=False)
    fig.tight_layout()
    return fig


def imshow_masked(
    ax: Any, array: Any, cmap: str, vmin: float | None, vmax: float | None, **options: Any
) -> Any:
    """``ax.imshow`` of a (rows, cols) array as blocks, NaN cells left blank.

    Returns:
        The image (for a colour bar).
    """
    return ax.imshow(
        np.ma.masked_invalid(np.asarray(array, dtype=float)),
        aspect="auto",
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
        **options,
    )


def plot_heatmap(
    values: object,
    *,
    row_labels: Sequence[object] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str | None = None,
    xlabel: str = "layer",
    ylabel: str = "epoch",
    cbar_label: str = "modularity Q",
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    ax: plt.Axes | None = None,
) -> Figure:
    """A (rows x layers) heatmap, e.g. modularity per epoch (rows) and layer (columns).

    Args:
        values: (R, L) values; NaN cells (e.g. not measured) are left blank.
        row_labels: R row tick labels (e.g. epochs 0, 1, ...); default 0..R-1.
        col_labels: L column tick labels (layer names); default 1..L.
        title: Axes title.
        xlabel: X-axis label.
        ylabel: Y-axis label.
        cbar_label: Colour-bar label.
        cmap: Colormap.
        vmin: Lower end of the colour range (default: data minimum).
        vmax: Upper end of the colour range (default: data maximum).
        ax: Axes to draw into (default: a new figure).

    Returns:
        The figure.
    """
    array = _as_2d(values)
    num_rows, num_cols = array.shape
    if row_labels is not None and len(row_labels) != num_rows:
        raise ValueError(f"{len(row_labels)} row labels for {num_rows} rows")
    if col_labels is not None and len(col_labels) != num_cols:
        raise ValueError(f"{len(col_labels)} column labels for {num_cols} columns")
    if ax is None:
        fig, ax = plt.subplots(
            figsize=(max(5.0, 0.22 * num_cols + 3.0), max(3.0, min(12.0, 0.12 * num_rows + 2.5)))
        )
    else:
        fig = ax.figure
    image = imshow_masked(ax, array, cmap, vmin, vmax, origin="lower")
    col_step = max(1, int(np.ceil(num_cols / 20)))
    ax.set_xticks(np.arange(num_cols)[::col_step])
    ax.set_xticklabels(
        (list(col_labels) if col_labels is not None else [str(i + 1) for i in range(num_cols)])[
            ::col_step
        ],
        rotation=60 if col_labels is not None else 0,
        ha="right" if col_labels is not None else "center",
        fontsize=7,
    )
    row_step = max(1, int(np.ceil(num_rows / 15)))
    ax.set_yticks(np.arange(num_rows)[::row_step])
    ax.set_yticklabels(
        [str(r) for r in (row_labels if row_labels is not None else range(num_rows))][::row_step],
        fontsize=7,
    )
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    fig.colorbar(image, ax=ax, label=cbar_label)
    fig.tight_layout()
    return fig


#: Resolution of every figure here: pixel size = figsize x DPI.
DPI = 100


@dataclass
class CurveSeries:
    """One line of a per-layer curve figure.

    Attributes:
        label: Legend entry.
        y: ``(L,)`` mean value per layer.
        std: ``(L,)`` standard deviation per layer, drawn as a mean ± std band; None for no band.
        x: ``(L,)`` x positions (default ``1..L``, the 1-based layer index).
        style: Extra ``Axes.plot`` keyword arguments (color, linestyle, marker ...).
    """

    label: str
    y: Sequence[float]
    std: Sequence[float] | None = None
    x: Sequence[float] | None = None
    style: dict[str, Any] = field(default_factory=dict)


def new_figure(
    figsize: tuple[float, float], nrows: int = 1, ncols: int = 1, **kwargs: Any
) -> tuple[Figure, Any]:
    """A figure of `figsize` inches at :data:`DPI` and its (nrows, ncols) array of axes."""
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, dpi=DPI, squeeze=False, **kwargs)
    return fig, axes


def draw_series(ax: Any, series: Sequence[CurveSeries]) -> None:
    """Draw each series with `draw_curve` (markers, mean ± std band)."""
    for s in series:
        style = {"marker": "o", "markersize": 3, "linewidth": 1.5, **s.style}
        draw_curve(ax, s.y, s.std, x=s.x, label=s.label, **style)


def plot_curve_series(
    series: Sequence[CurveSeries],
    *,
    title: str = "",
    xlabel: str = "layer",
    ylabel: str = "modularity Q",
    layer_names: Sequence[str] | None = None,
    figsize: tuple[float, float] = (6.4, 4.0),
) -> Figure:
    """Per-layer curves with mean ± std bands (paper 1 Figs. 4, 5, 7, B11-B13).

    Args:
        series: Lines to draw.
        title: Axes title.
        xlabel: x-axis label.
        ylabel: y-axis label.
        layer_names: Tick labels (layer names, length L) instead of indices.
        figsize: Figure size in inches (pixels = figsize x :data:`DPI`).

    Returns:
        The figure.
    """
    fig, axes = new_figure(figsize)
    ax = axes[0, 0]
    draw_series(ax, series)
    n = max((len(s.y) for s in series), default=0)
    layer_ticks(ax, n, layer_names)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
