"""Figures (matplotlib; save them with `dnn_modularity.io.atomic_save_figure` as PNG + PDF).

TRAIN's functions come first: `plot_curves` (modularity vs layer, one line per epoch or a
mean ± std band, as paper 1 Fig. 4 and 6b) and `plot_heatmap` (epoch x layer). Other functions are
appended below by the analyses.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

__all__ = ["plot_curves", "plot_heatmap"]

#: Above this many curves a colour bar replaces the legend (a 150-entry legend is unreadable).
MAX_LEGEND_ENTRIES = 12


def _as_2d(values: object) -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2:
        raise ValueError(f"expected curves of shape (C, L) or (L,), got {array.shape}")
    return array


def _layer_ticks(ax: plt.Axes, num_layers: int, layer_names: Sequence[str] | None) -> None:
    positions = np.arange(1, num_layers + 1)
    # Thin the ticks so that ~20 labels at most are drawn (ResNet-152 has 50 blocks).
    step = max(1, int(np.ceil(num_layers / 20)))
    ax.set_xticks(positions[::step])
    if layer_names is not None:
        if len(layer_names) != num_layers:
            raise ValueError(f"{len(layer_names)} layer names for {num_layers} layers")
        ax.set_xticklabels(list(layer_names)[::step], rotation=60, ha="right", fontsize=7)
    ax.set_xlim(0.5, num_layers + 0.5)


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
        ax.plot(x, values[i], marker="o", markersize=3, linewidth=1.4, color=color, label=label)
        if spread is not None:
            line_color = ax.lines[-1].get_color()
            ax.fill_between(
                x,
                values[i] - spread[i],
                values[i] + spread[i],
                color=line_color,
                alpha=0.2,
                linewidth=0,
            )
    reference_line = None
    if reference is not None and len(reference[1]) == num_layers:
        (reference_line,) = ax.plot(
            x, np.asarray(reference[1], dtype=float), linestyle="--", color="black",
            linewidth=1.4, label=reference[0], zorder=5,
        )  # fmt: skip
    _layer_ticks(ax, num_layers, layer_names)
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
    image = ax.imshow(
        np.ma.masked_invalid(array),
        aspect="auto",
        origin="lower",
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
    )
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
