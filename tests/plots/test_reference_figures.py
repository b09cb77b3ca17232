"""The authors' published curve is drawn dashed in the curve figures of matching runs only."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from dnn_modularity.analysis.curve import _authors_reference, curve_analysis
from dnn_modularity.analysis.settings import AnalysisSettings
from dnn_modularity.callbacks import ModularityMonitor
from dnn_modularity.callbacks.modularity import _arch_name
from dnn_modularity.models import Normalized, build_model
from dnn_modularity.models.classifier import ImageClassifier
from dnn_modularity.plots.curves import plot_curves
from dnn_modularity.reference import authors_curve

LABEL = "authors' curve"


def _reference_lines(fig) -> list:
    lines = [ln for ax in fig.axes for ln in ax.get_lines() if LABEL in str(ln.get_label())]
    plt.close(fig)
    return lines


def _monitor_with_history(model: str, data: str, num_layers: int) -> ModularityMonitor:
    monitor = ModularityMonitor(n=100, k=3)
    monitor.model_name, monitor.data_name = model, data
    monitor.history = [
        {"epoch": e, "layer_index": i + 1, "layer": f"l{i}", "modularity": 0.1 * e + 0.01 * i}
        for e in range(3)
        for i in range(num_layers)
    ]
    return monitor


def test_plot_curves_draws_a_dashed_reference_in_the_legend():
    ref = authors_curve("cifar10")
    many = np.random.default_rng(0).random((20, 28))  # > 12 curves: a colour bar, no legend...
    fig = plot_curves(many, color_values=list(range(20)), reference=(ref.label, ref.values))
    (line,) = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == ref.label]
    assert line.get_linestyle() == "--"
    assert list(line.get_ydata()) == pytest.approx(ref.values)
    legend = fig.axes[0].get_legend()  # ...but the reference is still named
    assert [t.get_text() for t in legend.get_texts()] == [ref.label]
    plt.close(fig)
    assert not _reference_lines(plot_curves(many[:, :10], reference=(ref.label, ref.values)))


@pytest.mark.parametrize(
    ("model", "data", "layers", "drawn"),
    [
        ("resnet56", "cifar10", 28, True),
        ("resnet56", "cifar100", 28, True),
        ("resnet56", "digits", 28, False),
        ("resnet20", "cifar10", 10, False),
        ("resnet56", "cifar10", 25, False),  # a pruned ResNet-56
    ],
)
def test_monitor_figure_has_the_reference_only_for_matching_runs(model, data, layers, drawn):
    figures = _monitor_with_history(model, data, layers).curve_figures()
    assert bool(_reference_lines(figures.pop("modularity_curves"))) is drawn
    for fig in figures.values():
        plt.close(fig)


def test_monitor_learns_model_and_data_names():
    module = ImageClassifier({"name": "resnet56", "num_classes": 10}, [0.5] * 3, [0.25] * 3)
    assert _arch_name(module) == "resnet56"
    assert _authors_reference("resnet56", "cifar10")[0].startswith(LABEL)
    assert _authors_reference("resnet56", "digits") is None
    assert _authors_reference("vgg16_bn", "cifar10") is None


def test_curve_analysis_figure_draws_the_reference_for_matching_runs():
    torch.manual_seed(0)
    model = Normalized(build_model("resnet56", num_classes=10), [0.5] * 3, [0.25] * 3).eval()
    probe = (torch.rand(20, 3, 32, 32), torch.arange(20) % 10)
    kw = {"shuffled_null": False, "random_init": False}
    settings = AnalysisSettings(k=3)
    ref = _authors_reference("resnet56", "cifar10")
    out = curve_analysis(model, [probe], settings, reference=ref, **kw)
    assert out.meta["reference"].startswith(LABEL)
    (line,) = _reference_lines(out.figures["curve"])
    assert line.get_linestyle() == "--"
    out = curve_analysis(model, [probe], settings, reference=None, **kw)
    assert out.meta["reference"] is None and not _reference_lines(out.figures["curve"])
