"""plots.plot_curves / plot_heatmap: labelled, readable figures with the right content."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

from dnn_modularity.plots.curves import MAX_LEGEND_ENTRIES, plot_curves, plot_heatmap


def test_plot_curves_lines_legend_and_band() -> None:
    curves = np.array([[0.1, 0.2, 0.3], [0.2, 0.4, 0.6]])
    fig = plot_curves(curves, labels=["a", "b"], std=np.full_like(curves, 0.05), title="t")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["a", "b"]
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [0.2, 0.4, 0.6])
    np.testing.assert_allclose(ax.lines[0].get_xdata(), [1, 2, 3])  # layers are 1-based
    assert len(ax.collections) == 2  # one ±std band per curve
    assert ax.get_legend() is not None
    assert (
        ax.get_xlabel() == "layer" and ax.get_ylabel() == "modularity Q" and ax.get_title() == "t"
    )
    plt.close(fig)


def test_plot_curves_many_epochs_use_a_colorbar() -> None:
    n = MAX_LEGEND_ENTRIES + 3
    curves = np.linspace(0, 1, n * 4).reshape(n, 4)
    fig = plot_curves(curves, color_values=list(range(n)), layer_names=["s", "l1", "l2", "fc"])
    ax = fig.axes[0]
    assert ax.get_legend() is None and len(fig.axes) == 2  # main axes + colour bar
    assert fig.axes[1].get_ylabel() == "epoch"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["s", "l1", "l2", "fc"]
    first, last = ax.lines[0].get_color(), ax.lines[-1].get_color()
    assert first != last  # colours follow the epoch
    plt.close(fig)


def test_plot_curves_single_curve_and_errors() -> None:
    fig = plot_curves([0.1, 0.5])
    assert len(fig.axes[0].lines) == 1
    plt.close(fig)
    with pytest.raises(ValueError, match="2 labels for 1 curves"):
        plot_curves([0.1, 0.5], labels=["a", "b"])
    with pytest.raises(ValueError, match="std shape"):
        plot_curves([[0.1, 0.5]], std=[[0.1]])
    with pytest.raises(ValueError, match="3 layer names for 2 layers"):
        plot_curves([0.1, 0.5], layer_names=["a", "b", "c"])


def test_plot_heatmap_values_labels_and_nan() -> None:
    values = np.array([[0.1, np.nan, 0.3], [0.4, 0.5, 0.6]])
    fig = plot_heatmap(values, row_labels=[0, 5], col_labels=["a", "b", "c"], title="h")
    ax, cbar = fig.axes
    image = ax.images[0]
    data = image.get_array()
    assert data.shape == (2, 3) and bool(data.mask[0, 1]) and float(data[1, 2]) == 0.6
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0", "5"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert ax.get_xlabel() == "layer" and ax.get_ylabel() == "epoch"
    assert cbar.get_ylabel() == "modularity Q"
    plt.close(fig)
    with pytest.raises(ValueError, match="1 row labels for 2 rows"):
        plot_heatmap(values, row_labels=[0])
