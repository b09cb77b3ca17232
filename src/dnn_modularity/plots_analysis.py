"""Figures of the analyses (paper 1 Figs. 4-8, B11-B13; paper 2 Figs. 2-10), matplotlib only.

Every function returns a :class:`matplotlib.figure.Figure` of a fixed size (``figsize`` in
inches times ``dpi``) and never saves it: callers save with
:func:`dnn_modularity.io.atomic_save_figure` (PNG + PDF) and close it. Kept apart from
``plots.py`` (training figures) because the ring graph and GIF code is large.
"""

from __future__ import annotations

import io as _io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg", force=False)

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colors import hsv_to_rgb, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

__all__ = [
    "DPI",
    "CurveSeries",
    "RingLayer",
    "class_palette",
    "plot_adversarial",
    "plot_curve_series",
    "plot_difference_vs_cka",
    "plot_dynamics",
    "plot_m_vs_q",
    "plot_ring",
    "plot_ring_grid",
    "plot_similarity_histograms",
    "ring_gif_bytes",
]

#: Resolution of every figure here: pixel size = figsize x DPI.
DPI = 100
#: Colour of inter-class ("wrong") edges in ring graphs (paper 2, Sec. 4.2).
INTER_CLASS_COLOR = "#d62728"


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


def _new_figure(
    figsize: tuple[float, float], nrows: int = 1, ncols: int = 1, **kwargs: Any
) -> tuple[Figure, Any]:
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, dpi=DPI, squeeze=False, **kwargs)
    return fig, axes


def _draw_series(ax: Any, series: Sequence[CurveSeries]) -> None:
    for s in series:
        y = np.asarray(s.y, dtype=float)
        x = np.arange(1, len(y) + 1) if s.x is None else np.asarray(s.x, dtype=float)
        style = {"marker": "o", "markersize": 3, "linewidth": 1.5, **s.style}
        (line,) = ax.plot(x, y, label=s.label, **style)
        if s.std is not None:
            std = np.asarray(s.std, dtype=float)
            ax.fill_between(x, y - std, y + std, color=line.get_color(), alpha=0.2, linewidth=0)


def _layer_ticks(ax: Any, layer_names: Sequence[str] | None, n: int) -> None:
    if layer_names is None or n == 0:
        ax.xaxis.get_major_locator().set_params(integer=True)
        return
    step = max(1, int(np.ceil(n / 24)))  # keep labels readable on deep nets
    ticks = np.arange(1, n + 1)[::step]
    ax.set_xticks(ticks)
    ax.set_xticklabels([layer_names[i - 1] for i in ticks], rotation=60, ha="right", fontsize=7)


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
    fig, axes = _new_figure(figsize)
    ax = axes[0, 0]
    _draw_series(ax, series)
    n = max((len(s.y) for s in series), default=0)
    _layer_ticks(ax, layer_names, n)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_adversarial(
    series: Sequence[CurveSeries],
    success_rates: Mapping[str, float],
    *,
    title: str = "",
    layer_names: Sequence[str] | None = None,
    figsize: tuple[float, float] = (10.0, 4.0),
) -> Figure:
    """Clean vs adversarial modularity curves and attack success rates (paper 1 Fig. 6a).

    Args:
        series: Curves (clean first, then one per attack).
        success_rates: Attack name -> success rate in [0, 1] (NaN for an attack that failed).
        title: Figure title.
        layer_names: Tick labels for the curve panel.
        figsize: Figure size in inches.

    Returns:
        The figure (left: curves, right: success-rate bars).
    """
    fig, axes = _new_figure(figsize, 1, 2, gridspec_kw={"width_ratios": [2.2, 1]})
    ax, bar_ax = axes[0, 0], axes[0, 1]
    _draw_series(ax, series)
    _layer_ticks(ax, layer_names, max((len(s.y) for s in series), default=0))
    ax.set_xlabel("layer")
    ax.set_ylabel("modularity Q")
    ax.set_title("clean vs adversarial samples")
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)
    names = list(success_rates)
    rates = np.array([success_rates[n] for n in names], dtype=float)
    shown = np.nan_to_num(rates, nan=0.0) * 100
    bars = bar_ax.bar(names, shown, color="#4c72b0")
    for rect, rate in zip(bars, rates, strict=True):
        text = "failed" if np.isnan(rate) else f"{rate * 100:.0f}%"
        bar_ax.annotate(
            text,
            (rect.get_x() + rect.get_width() / 2, rect.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    bar_ax.set_ylim(0, 110)
    bar_ax.set_ylabel("attack success rate (%)")
    bar_ax.set_title("success rate")
    bar_ax.tick_params(axis="x", labelrotation=45)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_dynamics(
    epochs: Sequence[float],
    per_layer: Mapping[str, Sequence[float]],
    accuracy: Sequence[float] | None = None,
    *,
    accuracy_epochs: Sequence[float] | None = None,
    accuracy_label: str = "test accuracy",
    title: str = "",
    ylabel: str = "modularity Q",
    figsize: tuple[float, float] = (7.2, 4.2),
) -> Figure:
    """Modularity of each layer vs epoch beside test accuracy (paper 1 Fig. 6b).

    Args:
        epochs: ``(T,)`` epochs of the modularity values.
        per_layer: Layer label -> ``(T,)`` values (NaN where missing), in layer order.
        accuracy: ``(T',)`` accuracy in [0, 1] per epoch, drawn on a second y-axis.
        accuracy_epochs: Epochs of ``accuracy`` (default: ``epochs``).
        accuracy_label: Legend and axis label of the accuracy curve (e.g. ``val/acc``).
        title: Axes title.
        ylabel: Left y-axis label.
        figsize: Figure size in inches.

    Returns:
        The figure. Shallow layers are light, deep layers dark (viridis), as in Fig. 6b.
    """
    fig, axes = _new_figure(figsize)
    ax = axes[0, 0]
    cmap = plt.get_cmap("viridis")
    n = len(per_layer)
    for i, (name, values) in enumerate(per_layer.items()):
        color = cmap(1.0 - i / max(1, n - 1)) if n > 1 else cmap(0.3)
        ax.plot(epochs, np.asarray(values, float), color=color, linewidth=1.2, label=name)
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if accuracy is not None:
        acc_ax = ax.twinx()
        x_acc = epochs if accuracy_epochs is None else accuracy_epochs
        (acc_line,) = acc_ax.plot(
            x_acc,
            np.asarray(accuracy, float) * 100,
            "k--",
            marker="o",
            linewidth=2,
            label=accuracy_label,
        )
        acc_ax.set_ylabel(f"{accuracy_label} (%)")
        handles.append(acc_line)
        labels.append(accuracy_label)
    if n > 12:  # too many layers for a readable legend: keep first, middle, last
        keep = sorted({0, n // 2, n - 1} | ({len(handles) - 1} if accuracy is not None else set()))
        handles = [handles[i] for i in keep]
        labels = [labels[i] for i in keep]
    ax.legend(handles, labels, fontsize=7, ncol=2, loc="upper left")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_difference_vs_cka(
    difference: np.ndarray,
    cka: np.ndarray,
    *,
    layer_names: Sequence[str] | None = None,
    title: str = "",
    figsize: tuple[float, float] = (11.0, 4.8),
) -> Figure:
    """|M_i - M_j| heatmap beside the linear-CKA heatmap of the same layers (paper 1 Fig. 8).

    Args:
        difference: ``(L, L)`` modularity differences.
        cka: ``(L, L)`` linear CKA similarities in [0, 1].
        layer_names: Axis labels (default 1-based indices).
        title: Figure title.
        figsize: Figure size in inches.

    Returns:
        The figure. Both panels use dark = *more different* so block structures line up
        (CKA is a similarity, hence its reversed colour map, as in the paper's Fig. 8b).
    """
    fig, axes = _new_figure(figsize, 1, 2)
    n = difference.shape[0]
    labels = list(layer_names) if layer_names is not None else [str(i) for i in range(1, n + 1)]
    panels = [
        (axes[0, 0], difference, "|M_i - M_j|", "magma_r", None),
        (axes[0, 1], cka, "linear CKA", "magma", (0.0, 1.0)),
    ]
    for ax, matrix, name, cmap, limits in panels:
        vmin, vmax = limits if limits else (0.0, max(float(np.nanmax(matrix)), 1e-12))
        image = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax, origin="lower")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label=name)
        step = max(1, int(np.ceil(n / 16)))
        ticks = np.arange(n)[::step]
        ax.set_xticks(ticks)
        ax.set_yticks(ticks)
        ax.set_xticklabels([labels[i] for i in ticks], rotation=60, ha="right", fontsize=7)
        ax.set_yticklabels([labels[i] for i in ticks], fontsize=7)
        ax.set_xlabel("layer")
        ax.set_ylabel("layer")
        ax.set_title(name)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_similarity_histograms(
    histograms: Sequence[Mapping[str, Any]],
    *,
    ncols: int = 4,
    title: str = "",
    panel_size: tuple[float, float] = (3.0, 2.4),
) -> Figure:
    """Grid of per-layer similarity histograms (paper 2 Figs. 2-5).

    Args:
        histograms: One mapping per layer with keys ``label`` (str), ``edges`` ``(B+1,)``,
            ``counts`` ``(B,)``, ``underflow`` and ``overflow`` (pair counts outside the range).
        ncols: Panels per row.
        title: Figure title.
        panel_size: Inches per panel.

    Returns:
        The figure; bars show the percentage of all pairs in each bin; the share below the
        range (negative similarities) is written in each panel.
    """
    n = max(1, len(histograms))
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig, axes = _new_figure(
        (panel_size[0] * ncols, panel_size[1] * nrows), nrows, ncols, sharey=True
    )
    for i, ax in enumerate(axes.flat):
        if i >= len(histograms):
            ax.set_visible(False)
            continue
        h = histograms[i]
        edges = np.asarray(h["edges"], float)
        counts = np.asarray(h["counts"], float)
        total = counts.sum() + float(h.get("underflow", 0)) + float(h.get("overflow", 0))
        share = counts / total * 100 if total > 0 else counts
        ax.bar(
            edges[:-1],
            share,
            width=np.diff(edges),
            align="edge",
            color="#4c72b0",
            edgecolor="white",
            linewidth=0.5,
        )
        ax.set_title(h["label"], fontsize=9)
        ax.set_xlim(edges[0], edges[-1])
        below = float(h.get("underflow", 0)) / total * 100 if total > 0 else 0.0
        ax.text(
            0.97,
            0.95,
            f"<{edges[0]:g}: {below:.1f}%",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=7,
        )
        if i % ncols == 0:
            ax.set_ylabel("pairs (%)")
        if i // ncols == nrows - 1:
            ax.set_xlabel("similarity")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


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
    fig, axes = _new_figure(figsize)
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
    fig, axes = _new_figure((panel_size * ncols, panel_size * nrows + 0.5), nrows, ncols)
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
    from PIL import Image

    from dnn_modularity.progress import track

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
    buffer = _io.BytesIO()
    frames[0].save(
        buffer,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=int(frame_seconds * 1000),
        loop=0,
    )
    return buffer.getvalue()


def plot_m_vs_q(
    m: Sequence[float],
    q_curves: Mapping[str, Sequence[float]],
    *,
    layer_names: Sequence[str] | None = None,
    title: str = "",
    figsize: tuple[float, float] = (6.4, 4.0),
) -> Figure:
    """Paper 2's modularity M beside Newman Q curves over layers (paper 2 Fig. 10).

    Args:
        m: ``(L,)`` M = r x AQ x (1 - EQ) per layer (left axis, red as in the paper).
        q_curves: Name -> ``(L,)`` Newman modularity curves (right axis, blue shades), e.g.
            paper 1's k-NN Q and Q of the same top-|E| graph.
        layer_names: Tick labels.
        title: Axes title.
        figsize: Figure size in inches.

    Returns:
        The figure.
    """
    fig, axes = _new_figure(figsize)
    ax = axes[0, 0]
    x = np.arange(1, len(m) + 1)
    (m_line,) = ax.plot(
        x, np.asarray(m, float), color="#d62728", marker="o", markersize=3, label="M (paper 2)"
    )
    ax.set_xlabel("layer")
    ax.set_ylabel("M = r·AQ·(1-EQ)", color="#d62728")
    q_ax = ax.twinx()
    blues = ["#1f77b4", "#17becf", "#393b79", "#6baed6"]
    lines = [m_line]
    for i, (name, values) in enumerate(q_curves.items()):
        (line,) = q_ax.plot(
            x,
            np.asarray(values, float),
            color=blues[i % len(blues)],
            marker="s",
            markersize=3,
            linestyle="-" if i == 0 else "--",
            label=name,
        )
        lines.append(line)
    q_ax.set_ylabel("Newman Q", color="#1f77b4")
    _layer_ticks(ax, layer_names, len(m))
    ax.grid(alpha=0.3)
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="upper left")
    ax.set_title(title)
    fig.tight_layout()
    return fig
