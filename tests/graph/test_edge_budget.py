"""|E| keeps paper 2's edge density when N differs from 4,000; explicit |E| wins; recorded."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from dnn_modularity.callbacks import ModularityMonitor
from dnn_modularity.data.probe import ProbeSet
from dnn_modularity.graph import class_separation, resolve_num_edges, top_edges_graph
from dnn_modularity.graph.edge_budget import PAPER2_EDGE_DENSITY
from dnn_modularity.metrics import ClassSeparationModularity
from dnn_modularity.models import Normalized, build_model


def test_paper2_density_by_default_explicit_wins():
    assert resolve_num_edges(4000).num_edges == 40000  # paper 2's setting exactly
    assert abs(PAPER2_EDGE_DENSITY - 40000 / (4000 * 3999 / 2)) < 1e-15
    for n in (540, 500, 100):
        budget = resolve_num_edges(n)
        assert budget.density == pytest.approx(PAPER2_EDGE_DENSITY, rel=0.02)
        assert budget.source == "paper2_density"
    # the fixed 40,000 used to keep 27 % of the digits test split's pairs and 32 % at N = 500
    assert resolve_num_edges(540).num_edges == 728
    assert resolve_num_edges(500, 40000).density == pytest.approx(0.3206, abs=1e-4)
    assert resolve_num_edges(500, 1000).num_edges == 1000
    with pytest.warns(UserWarning, match="num_edges=40000 exceeds the 45 pairs"):
        assert resolve_num_edges(10, 40000).num_edges == 45
    with pytest.raises(ValueError, match="positive integer or null"):
        resolve_num_edges(100, 0)


def test_metric_keeps_the_density_of_its_n():
    gen = torch.Generator().manual_seed(0)
    feats, labels = torch.randn(300, 16, generator=gen), torch.arange(300) % 5
    metric = ClassSeparationModularity()
    metric.update(feats, labels)
    expected = class_separation(top_edges_graph(feats, resolve_num_edges(300).num_edges), labels)
    assert float(metric.compute()) == pytest.approx(expected.m, abs=1e-15)


def test_monitor_records_num_edges_and_density(digits):
    monitor = ModularityMonitor(n=100, k=3, compute_M=True, feature_mode="per_layer")
    monitor.setup_probes(digits)
    from dnn_modularity.models.classifier import ImageClassifier

    module = ImageClassifier(
        {"name": "resnet20", "num_classes": 10, "in_channels": 1}, digits.mean, digits.std
    )
    rows = monitor.measure(module)
    assert {r["num_edges"] for r in rows} == {resolve_num_edges(100).num_edges}  # 25, not 4950
    assert [r["edge_density"] for r in rows] == pytest.approx([25 / 4950] * len(rows))
    plain = ModularityMonitor(n=100, k=3)  # no M: nothing to record
    plain.setup_probes(digits)
    assert all(r["num_edges"] is None for r in plain.measure(module))


def test_ring_and_m_curve_records_carry_the_density(digits):
    from dnn_modularity.analysis.ring import ring_analysis
    from dnn_modularity.analysis.settings import AnalysisSettings
    from dnn_modularity.pruning.curves import _m_curve_rows

    torch.manual_seed(0)
    model = Normalized(build_model("resnet20", num_classes=10, in_channels=1), [0.3], [0.4])
    probe = ProbeSet.from_datamodule(digits, 200, seed=0)
    out = ring_analysis(model.eval(), probe.images, probe.labels, AnalysisSettings(k=3), gif=False)
    expected = resolve_num_edges(200)
    assert {r["num_edges"] for r in out.rows} == {expected.num_edges}
    assert [r["edge_density"] for r in out.rows] == pytest.approx(
        [expected.density] * len(out.rows)
    )
    edges = [r["value"] for r in out.rows if r["measure"] in ("intra_edges", "inter_edges")]
    assert sum(edges) == expected.num_edges * len(out.meta["layers"])
    assert out.meta["settings"]["num_edges_source"] == "paper2_density"
    explicit = ring_analysis(
        model, probe.images, probe.labels, AnalysisSettings(k=3), num_edges=300, gif=False
    )
    assert {r["num_edges"] for r in explicit.rows} == {300}

    cfg = OmegaConf.create({"graph": {"num_edges": None, "metric": "cosine"}, "batch_size": 256})
    rows = _m_curve_rows(model, [probe], cfg)
    assert {r["num_edges"] for r in rows} == {expected.num_edges}
    assert [r["edge_density"] for r in rows] == pytest.approx([expected.density] * len(rows))
