"""Ring (circular) graphs of the important-relationship subgraph (paper 2, Sec. 4.2, Fig. 6).

Nodes sit on a circle grouped by class, intra-class edges take their class's colour and
inter-class edges are red; one panel per layer, a grid of layers, or a GIF over layers.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colors import hsv_to_rgb, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from PIL import Image

from dnn_modularity.plots.curves import new_figure
from dnn_modularity.progress import track

__all__ = [
    "INTER_CLASS_COLOR",
    "RingLayer",
    "class_palette",
    "plot_ring",
    "plot_ring_grid",
    "ring_gif_bytes",
]


#: Colour of inter-class ("wrong") edges in ring graphs (paper 2, Sec. 4.2).
INTER_CLASS_COLOR = "#d62728"


def class_palette(num_classes: int) -> list[tuple[float, float, float, float]]:
    """Distinct class colours that never look like the red of inter-class edges.

    Args:
        num_classes: Number of classes.

    Returns:
        ``num_classes`` RGBA tuples: tab20 without its two reds (dark shades first), then
        hues spread over the hue circle away from red.
    """
    tab20 = plt.get_cmap("tab20").colors
    base = [tab20[i] for i in range(0, 20, 2) if i != 6] + [
        tab20[i] for i in range(1, 20, 2) if i != 7
    ]
    colors = [to_rgba(c) for c in base[:num_classes]]
    extra = num_classes - len(colors)
    if extra > 0:
        hues = np.linspace(0.08, 0.92, extra)
        colors += [to_rgba(hsv_to_rgb((h, 0.75, 0.8))) for h in hues]
    return colors


@dataclass
class RingLayer:
    """What one ring-graph panel shows (paper 2 Sec. 4.2).

    Attributes:
        label: Panel title (layer name).
        src: ``(E,)`` edge endpoints (node indices into ``labels``).
        dst: ``(E,)`` other endpoints.
        labels: ``(N,)`` class of each node.
        subtitle: Second title line (e.g. ``M=0.31 r=0.92``).
    """

    label: str
    src: np.ndarray
    dst: np.ndarray
    labels: np.ndarray
    subtitle: str = ""


def _ring_positions(labels: np.ndarray, gap_fraction: float = 0.15) -> np.ndarray:
    """(N, 2) positions on the unit circle: classes contiguous, a small gap between classes."""
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    classes = labels[order]
    n = len(labels)
    n_classes = len(np.unique(labels))
    gap = gap_fraction * n / max(1, n_classes)  # in node slots
    boundaries = np.concatenate([[0], np.cumsum(classes[1:] != classes[:-1])])
    slots = np.arange(n) + boundaries * gap
    total = n + n_classes * gap
    angles = np.empty(n)
    angles[order] = np.pi / 2 - 2 * np.pi * slots / total  # clockwise from the top
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _bent_edges(a: np.ndarray, b: np.ndarray, pull: float = 0.35, points: int = 9) -> np.ndarray:
    """Quadratic Bézier curves (E, points, 2) from ``a`` to ``b`` (both (E, 2)).

    The control point is the chord's midpoint scaled by ``pull`` towards the circle's centre.
    """
    control = (a + b) / 2 * pull
    t = np.linspace(0.0, 1.0, points)[None, :, None]
    return (1 - t) ** 2 * a[:, None] + 2 * (1 - t) * t * control[:, None] + t**2 * b[:, None]


def _draw_ring(
    ax: Any,
    layer: RingLayer,
    class_names: Sequence[str] | None,
    max_edges_drawn: int | None,
    linewidth: float,
    alpha: float | None,
) -> None:
    labels = np.asarray(layer.labels)
    classes = np.unique(labels)
    palette = class_palette(len(classes))
    color_of = {c: palette[i] for i, c in enumerate(classes)}
    pos = _ring_positions(labels)
    src = np.asarray(layer.src)
    dst = np.asarray(layer.dst)
    if max_edges_drawn is not None and len(src) > max_edges_drawn:
        keep = np.linspace(0, len(src) - 1, max_edges_drawn).astype(int)
        src, dst = src[keep], dst[keep]
    intra = labels[src] == labels[dst]
    # Opacity falls with the number of edges so that overlapping edges do not saturate and
    # the share of red stays readable from 300 to 40000 edges.
    edge_alpha = alpha if alpha is not None else float(np.clip(600 / max(1, len(src)), 0.03, 0.6))
    # Red inter-class chords first (straight, faint), then the intra-class edges on top as
    # curves bent towards the centre: a chord between two nodes of the same class arc would hug
    # the rim and stay invisible, a bent one draws a coloured "petal" per class.
    # Edges and nodes are rasterized (rasterized=True) in vector formats: tens of thousands of
    # semi-transparent paths per panel made a 34 MB PDF that took minutes to write and to open;
    # as an image at the figure's dpi they look the same, and titles and legend stay vector text.
    if (~intra).any():
        chords = np.stack([pos[src[~intra]], pos[dst[~intra]]], axis=1)
        ax.add_collection(
            LineCollection(
                chords,
                colors=INTER_CLASS_COLOR,
                linewidths=linewidth,
                alpha=edge_alpha,
                zorder=1,
                rasterized=True,
            )
        )
    if intra.any():
        curves = _bent_edges(pos[src[intra]], pos[dst[intra]])
        colors = [color_of[c] for c in labels[src[intra]]]
        ax.add_collection(
            LineCollection(
                curves,
                colors=colors,
                linewidths=linewidth * 1.5,
                alpha=edge_alpha,
                zorder=2,
                rasterized=True,
            )
        )
    ax.scatter(
        pos[:, 0],
        pos[:, 1],
        s=1.5,
        c=[color_of[c] for c in labels],
        linewidths=0,
        zorder=3,
        rasterized=True,
    )
    ax.set_xlim(-1.08, 1.08)
    ax.set_ylim(-1.08, 1.08)
    ax.set_aspect("equal")
    ax.axis("off")
    n_inter = int((~intra).sum())
    subtitle = layer.subtitle or f"inter-class edges {n_inter}/{len(src)}"
    ax.set_title(f"{layer.label}\n{subtitle}", fontsize=8)


def _ring_legend(fig: Figure, classes: Sequence[Any], class_names: Sequence[str] | None) -> None:
    palette = class_palette(len(classes))
    names = [
        class_names[int(c)] if class_names is not None and int(c) < len(class_names) else str(c)
        for c in classes
    ]
    handles = [Line2D([0], [0], color=palette[i], lw=2) for i in range(len(classes))]
    handles.append(Line2D([0], [0], color=INTER_CLASS_COLOR, lw=2))
    names.append("inter-class")
    fig.legend(
        handles, names, loc="lower center", ncol=min(11, len(names)), fontsize=7, frameon=False
    )


def plot_ring(
    layer: RingLayer,
    *,
    class_names: Sequence[str] | None = None,
    figsize: tuple[float, float] = (5.0, 5.4),
    max_edges_drawn: int | None = None,
    linewidth: float = 0.15,
    alpha: float | None = None,
) -> Figure:
    """One ring graph (paper 2 Figs. 6-9).

    Nodes are grouped by class on a circle; intra-class edges are drawn in the class colour,
    inter-class edges in red.

    Args:
        layer: What to draw.
        class_names: Legend names indexed by label value.
        figsize: Figure size in inches.
        max_edges_drawn: Draw an evenly spaced subset of at most this many edges (None: all).
        linewidth: Edge line width.
        alpha: Edge opacity (None: from the number of edges, 600/E clipped to [0.03, 0.6]).

    Returns:
        The figure.
    """
    fig, axes = new_figure(figsize)
    _draw_ring(axes[0, 0], layer, class_names, max_edges_drawn, linewidth, alpha)
    _ring_legend(fig, np.unique(layer.labels), class_names)
    fig.subplots_adjust(left=0.02, right=0.98, top=0.9, bottom=0.1)
    return fig


def plot_ring_grid(
    layers: Sequence[RingLayer],
    *,
    ncols: int = 4,
    class_names: Sequence[str] | None = None,
    panel_size: float = 3.0,
    title: str = "",
    max_edges_drawn: int | None = None,
    linewidth: float = 0.15,
    alpha: float | None = None,
) -> Figure:
    """Grid of ring graphs, one per layer (paper 2 Figs. 6-9).

    Args:
        layers: One entry per layer, in layer order.
        ncols: Panels per row.
        class_names: Legend names indexed by label value.
        panel_size: Inches per (square) panel.
        title: Figure title.
        max_edges_drawn: Per-panel cap on drawn edges (None: all).
        linewidth: Edge line width.
        alpha: Edge opacity (None: from the number of edges, 600/E clipped to [0.03, 0.6]).

    Returns:
        The figure.
    """
    n = max(1, len(layers))
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = new_figure((panel_size * ncols, panel_size * nrows + 0.5), nrows, ncols)
    for i, ax in enumerate(axes.flat):
        if i < len(layers):
            _draw_ring(ax, layers[i], class_names, max_edges_drawn, linewidth, alpha)
        else:
            ax.set_visible(False)
    if layers:
        _ring_legend(
            fig, np.unique(np.concatenate([np.unique(x.labels) for x in layers])), class_names
        )
    if title:
        fig.suptitle(title)
    fig.subplots_adjust(
        left=0.01,
        right=0.99,
        top=0.93 if title else 0.96,
        bottom=0.5 / (panel_size * nrows + 0.5),
        wspace=0.05,
        hspace=0.25,
    )
    return fig


def ring_gif_bytes(
    layers: Sequence[RingLayer],
    *,
    class_names: Sequence[str] | None = None,
    frame_seconds: float = 0.8,
    figsize: tuple[float, float] = (5.0, 5.4),
    max_edges_drawn: int | None = None,
) -> bytes:
    """Animated GIF over layers: one ring graph per frame, looping (paper 2's dynamic graph).

    Args:
        layers: Frames in order.
        class_names: Legend names indexed by label value.
        frame_seconds: Display time per frame.
        figsize: Frame size in inches (pixels = figsize x :data:`DPI`).
        max_edges_drawn: Per-frame cap on drawn edges.

    Returns:
        The GIF file content.

    Raises:
        ValueError: No layers.
    """
    if not layers:
        raise ValueError("ring_gif_bytes needs at least one layer, got 0")
    frames = []
    for layer in track(layers, "ring: GIF frames", unit="frames"):
        fig = plot_ring(
            layer, class_names=class_names, figsize=figsize, max_edges_drawn=max_edges_drawn
        )
        fig.canvas.draw()
        rgba = np.asarray(fig.canvas.buffer_rgba())
        plt.close(fig)
        frames.append(Image.fromarray(rgba[..., :3].copy()).convert("P", palette=Image.ADAPTIVE))
    buffer = io.BytesIO()
    frames[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=int(frame_seconds * 1000),
        loop=0,
    )
    return buffer.getvalue()
