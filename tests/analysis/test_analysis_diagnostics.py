"""analysis=diagnostics as a plain function on a small user network: records, notes, figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from dnn_modularity.analysis.diagnostics import (
    chosen_layers,
    closing_lines,
    diagnostics_analysis,
)
from dnn_modularity.analysis.measure import save_output
from dnn_modularity.analysis.settings import AnalysisSettings
from dnn_modularity.graph import knn_modularity
from dnn_modularity.records import read_csv_rows
from dnn_modularity.taps import LayerTaps

TAPS = ["body.1", "body.3", "head"]


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, padding=1), nn.ReLU()
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 8 * 8, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def _probe(seed: int, n: int = 60, classes: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    patterns = torch.rand(classes, 1, 8, 8, generator=torch.Generator().manual_seed(99))
    images = (patterns[labels] + 0.3 * torch.rand(n, 1, 8, 8, generator=gen)).clamp(0, 1)
    return images, labels


def test_chosen_layers_first_middle_last_and_largest_rise() -> None:
    assert chosen_layers([0.1, 0.2, 0.6, 0.65, 0.7]) == {
        "first": 0,
        "middle": 2,
        "last": 4,
        "largest rise": 2,
    }
    assert chosen_layers([0.3]) == {"first": 0, "middle": 0, "last": 0}
    assert chosen_layers([]) == {}


def test_records_notes_and_figures(tmp_path) -> None:
    torch.manual_seed(0)
    model = SmallNet().eval()
    probes = [_probe(0), _probe(1)]
    names = ["c0", "c1", "c2", "c3", "c4"]
    out = diagnostics_analysis(
        model,
        probes,
        AnalysisSettings(k=3, taps=TAPS),
        num_edges=200,
        top_pairs=4,
        class_names=names,
        title="small",
    )
    assert out.name == "diagnostics"
    measures = {r["measure"] for r in out.rows}
    assert measures == {
        "modularity",
        "M",
        "knn_accuracy",
        "probe_accuracy",
        "class_q",
        "purity",
        "class_knn_accuracy",
        "pair_weight",
        "pair_entanglement",
    }
    # Q of every (repeat, layer) is the engine's value on that layer's features
    with torch.no_grad(), LayerTaps(model, TAPS) as taps:
        model(probes[1][0])
    q = [r["value"] for r in out.rows if r["measure"] == "modularity" and r["repeat"] == 1]
    expected = [knn_modularity(f, probes[1][1], k=3) for f in taps.features.values()]
    assert q == pytest.approx(expected, abs=1e-12)
    # summary: one row per (measure, layer, class, pair) with mean/std over the 2 repeats
    q_summary = [r for r in out.summary if r["measure"] == "modularity"]
    assert len(q_summary) == 3 and all(r["n"] == 2 for r in q_summary)
    assert len([r for r in out.summary if r["measure"] == "pair_entanglement"]) == 3 * 10
    meta = out.meta
    assert meta["layers"] == TAPS and meta["class_names"] == names
    assert set(meta["spearman"]) == {"modularity", "M", "knn_accuracy", "probe_accuracy"}
    assert meta["settings"]["linear_probe"]["split"] == "stratified"
    assert set(meta["pair_matrix_layers"]) == {"first", "middle", "last", "largest rise"}
    assert len(meta["last_layer_pairs"]) == 4
    assert meta["last_layer_pairs"][0]["pair"].startswith("c")
    note = meta["per_layer"][-1]
    assert note["layer"] == "head" and len(note["most_entangled"]) == 3
    assert 0.0 <= note["probe_accuracy"] <= 1.0
    assert set(out.figures) == {
        "purity_heatmap",
        "pair_matrices",
        "pair_separation",
        "separability_curves",
    }
    assert "knn_accuracy/layer_03" in out.metrics and "modularity/layer_01" in out.metrics
    lines = closing_lines(meta)
    assert lines[-1].startswith("  Spearman") and "most entangled: c" in lines[-2]
    written = save_output(out, tmp_path)
    rows = read_csv_rows(tmp_path / "diagnostics.csv")
    assert len(rows) == len(out.rows) and rows[0]["analysis"] == "diagnostics"
    assert all(p.stat().st_size > 1000 for paths in written["figures"].values() for p in paths)


def test_only_q_and_knn_and_a_training_set_for_the_probe() -> None:
    model = SmallNet().eval()
    out = diagnostics_analysis(
        model, [_probe(0)], AnalysisSettings(k=3, taps=TAPS), which=["knn_acc"], compute_m=False
    )
    assert {r["measure"] for r in out.rows} == {"modularity", "knn_accuracy", "class_knn_accuracy"}
    assert set(out.figures) == {"separability_curves"}
    train = _probe(5, n=100)
    out = diagnostics_analysis(
        model,
        [_probe(0)],
        AnalysisSettings(taps=TAPS),
        which=["linear_probe"],
        compute_m=False,
        probe_train=train,
    )
    probe_rows = [r for r in out.rows if r["measure"] == "probe_accuracy"]
    assert {r["probe_split"] for r in probe_rows} == {"given"}
    assert {r["probe_num_train"] for r in probe_rows} == {100}
    assert {r["probe_num_test"] for r in probe_rows} == {60}
    assert out.meta["settings"]["linear_probe"]["split"] == "given"
    assert np.isfinite([r["value"] for r in probe_rows]).all()
    with pytest.raises(ValueError, match="valid choices"):
        diagnostics_analysis(model, [_probe(0)], AnalysisSettings(taps=TAPS), which=["accuracy"])
