"""ModularityMonitor(diagnostics=[...]): diagnostics.csv, scalars, figures; modularity.csv kept."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from dnn_modularity.callbacks import ModularityMonitor
from dnn_modularity.callbacks.modularity import CSV_COLUMNS
from dnn_modularity.callbacks.monitor_diagnostics import DEFAULT_DIAGNOSTICS, MonitorDiagnostics
from dnn_modularity.data import DigitsDataModule
from dnn_modularity.models.classifier import ImageClassifier


def _read(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _fit(tmp_path: Path, dm: DigitsDataModule, **monitor_kwargs) -> ModularityMonitor:
    monitor = ModularityMonitor(n=60, k=3, seed=1, **monitor_kwargs)
    torch.manual_seed(0)
    module = ImageClassifier(
        {"name": "resnet20", "num_classes": 10, "in_channels": 1}, dm.mean, dm.std
    )
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        callbacks=[monitor],
        logger=CSVLogger(tmp_path, name="", version=""),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        log_every_n_steps=1,
    )
    trainer.fit(module, datamodule=dm)
    return monitor


def test_monitor_diagnostics_rows_scalars_figures_and_unchanged_q(tmp_path: Path) -> None:
    dm = DigitsDataModule(batch_size=64)
    dm.setup()
    _fit(tmp_path / "all", dm, diagnostics=["purity", "pairs", "knn_acc", "linear_probe"])
    _fit(tmp_path / "none", dm, diagnostics=[], figures=False)
    full, plain = (
        _read(tmp_path / "all" / "modularity.csv"),
        _read(tmp_path / "none" / "modularity.csv"),
    )
    assert tuple(full[0]) == CSV_COLUMNS == tuple(plain[0])  # modularity.csv: same columns
    assert [r["modularity"] for r in full] == [r["modularity"] for r in plain]  # same Q, exactly
    assert not (tmp_path / "none" / "diagnostics.csv").exists()

    rows = _read(tmp_path / "all" / "diagnostics.csv")
    count: dict[tuple[str, str], int] = {}
    for row in rows:
        key = (row["epoch"], row["measure"])
        count[key] = count.get(key, 0) + 1
    for epoch in ("0", "1"):
        assert count[(epoch, "knn_accuracy")] == count[(epoch, "probe_accuracy")] == 10
        assert count[(epoch, "purity")] == count[(epoch, "class_q")] == 10 * 10
        assert count[(epoch, "pair_entanglement")] == 10 * 45
        assert (epoch, "modularity") not in count  # Q lives in modularity.csv
    assert {r["probe_split"] for r in rows if r["measure"] == "probe_accuracy"} == {"stratified"}
    # per-class Q terms of a layer add up to that layer's Q in modularity.csv
    q = {(r["epoch"], r["layer_index"]): float(r["modularity"]) for r in full}
    sums: dict[tuple[str, str], float] = {}
    for r in rows:
        if r["measure"] == "class_q":
            key = (r["epoch"], r["layer_index"])
            sums[key] = sums.get(key, 0.0) + float(r["value"])
    assert sums.keys() == q.keys()
    assert all(abs(sums[key] - q[key]) < 1e-9 for key in q)

    logged = _read(tmp_path / "all" / "metrics.csv")
    for key in ("knn_accuracy/layer_10", "probe_accuracy/layer_10", "purity/layer_10"):
        assert len([r for r in logged if r.get(key)]) == 2, key
    assert any(r.get("purity_min/layer_01") for r in logged)
    assert any(r.get("entanglement_max/layer_01") for r in logged)
    figures = tmp_path / "all" / "figures"
    for name in (
        "diagnostics_knn_accuracy_heatmap",
        "diagnostics_probe_accuracy_heatmap",
        "diagnostics_purity_heatmap",
        "diagnostics_pair_matrices",
    ):
        assert (figures / f"{name}.png").stat().st_size > 1000, name


def test_monitor_diagnostics_names_are_checked() -> None:
    with pytest.raises(ValueError, match=r"unknown diagnostics \['knn'\].*'knn_acc'"):
        ModularityMonitor(n=60, diagnostics=["knn"])
    assert ModularityMonitor(n=60, diagnostics=None)._diag is None
    assert ModularityMonitor(n=60)._diag.names == DEFAULT_DIAGNOSTICS
    assert MonitorDiagnostics.create("all", k=3, metric="cosine").names[-1] == "linear_probe"


def test_scalars_are_means_over_repeats_minima_and_maxima() -> None:
    diag = MonitorDiagnostics(["purity"], k=3, metric="cosine", log_prefix="adv/")
    rows = [
        {"layer_index": 2, "repeat": 0, "measure": "purity", "value": v} for v in (0.2, 0.6)
    ] + [{"layer_index": 2, "repeat": 1, "measure": "purity", "value": v} for v in (0.4, 0.8)]
    rows.append({"layer_index": 2, "repeat": 0, "measure": "knn_accuracy", "value": 0.5})
    rows.append({"layer_index": 2, "repeat": 0, "measure": "pair_entanglement", "value": 0.7})
    rows.append({"layer_index": 2, "repeat": 0, "measure": "pair_entanglement", "value": 0.9})
    assert diag.scalars(rows) == pytest.approx(
        {
            "adv/purity/layer_02": 0.5,  # (0.4 + 0.6) / 2
            "adv/purity_min/layer_02": 0.3,  # (0.2 + 0.4) / 2
            "adv/knn_accuracy/layer_02": 0.5,
            "adv/entanglement_max/layer_02": 0.9,
        }
    )


def test_restart_keeps_the_rows_up_to_the_resumed_epoch(tmp_path: Path) -> None:
    path = tmp_path / "diagnostics.csv"
    path.write_text(
        "epoch,layer_index,layer,measure,value\n"
        + "".join(f"{e},1,stem,knn_accuracy,0.{e}\n" for e in range(4))
    )
    diag = MonitorDiagnostics(["knn_acc"], k=3, metric="cosine")
    diag.restart(1, path, is_global_zero=True)
    assert [r["epoch"] for r in _read(path)] == ["0", "1"]
    assert diag.history[1] == {
        "epoch": 1,
        "layer_index": 1,
        "layer": "stem",
        "measure": "knn_accuracy",
        "value": 0.1,
    }
    diag.restart(5, tmp_path / "missing.csv", is_global_zero=True)
    assert diag.history == [] and not (tmp_path / "missing.csv").exists()


def test_the_diagnostics_file_follows_the_record_file(tmp_path: Path) -> None:
    default = ModularityMonitor(n=60, output_dir=tmp_path)
    other = ModularityMonitor(n=60, output_dir=tmp_path, csv_name="adv_pgd.csv")
    assert default.diagnostics_csv_path() == tmp_path / "diagnostics.csv"
    assert other.diagnostics_csv_path() == tmp_path / "adv_pgd_diagnostics.csv"
