"""Figures of the analyses (paper 1 Figs. 4-8, B11-B13; paper 2 Figs. 2-10), matplotlib only.

Every function returns a :class:`matplotlib.figure.Figure` of a fixed size (``figsize`` in
inches times ``dpi``) and never saves it: callers save with
:func:`dnn_modularity.records.atomic_save_figure` (PNG + PDF) and close it. Curves are drawn with
:mod:`dnn_modularity.plots.curves`, ring graphs live in :mod:`dnn_modularity.plots.ring`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from dnn_modularity.plots.curves import CurveSeries, draw_series, layer_ticks, new_figure

__all__ = [
    "plot_adversarial",
    "plot_difference_vs_cka",
    "plot_dynamics",
    "plot_m_vs_q",
    "plot_similarity_histograms",
]


def _titled(fig: Figure, title: str) -> Figure:
    """``fig`` with ``title`` over all panels (none when empty), laid out tight."""
    if title:
        fig.suptitle(title)
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
    fig, axes = new_figure(figsize, 1, 2, gridspec_kw={"width_ratios": [2.2, 1]})
    ax, bar_ax = axes[0, 0], axes[0, 1]
    draw_series(ax, series)
    layer_ticks(ax, max((len(s.y) for s in series), default=0), layer_names)
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
    return _titled(fig, title)


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
    fig, axes = new_figure(figsize)
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
    fig, axes = new_figure(figsize, 1, 2)
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
    return _titled(fig, title)


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
    fig, axes = new_figure(
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
    return _titled(fig, title)


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
    fig, axes = new_figure(figsize)
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
    layer_ticks(ax, len(m), layer_names)
    ax.grid(alpha=0.3)
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize=8, loc="upper left")
    ax.set_title(title)
    fig.tight_layout()
    return fig
