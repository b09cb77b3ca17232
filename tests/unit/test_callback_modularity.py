"""ModularityMonitor on a small ResNet and the digits: rows, epochs, values, modes, state."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from dnn_modularity.callbacks import ModularityMonitor, rows_to_matrix
from dnn_modularity.callbacks.modularity import CSV_COLUMNS
from dnn_modularity.data import DigitsDataModule
from dnn_modularity.graph import knn_modularity
from dnn_modularity.models.classifier import ImageClassifier
from dnn_modularity.taps import LayerTaps


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    dm = DigitsDataModule(batch_size=64)
    dm.setup()
    return dm


def _module(dm: DigitsDataModule, seed: int = 0) -> ImageClassifier:
    torch.manual_seed(seed)
    return ImageClassifier(
        {"name": "resnet20", "num_classes": 10, "in_channels": 1}, dm.mean, dm.std
    )


def _trainer(tmp_path: Path, monitor: ModularityMonitor, epochs: int, **kwargs) -> L.Trainer:
    options = {"limit_train_batches": 3, "limit_val_batches": 1, **kwargs}
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        num_sanity_val_steps=0,
        callbacks=[monitor],
        logger=CSVLogger(tmp_path, name="", version=""),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        log_every_n_steps=1,
        **options,
    )


def _read(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_rows_epochs_values_logs_and_figures(digits: DigitsDataModule, tmp_path: Path) -> None:
    monitor = ModularityMonitor(n=100, k=3, seed=1)
    module = _module(digits)
    trainer = _trainer(tmp_path, monitor, epochs=2)
    trainer.fit(module, datamodule=digits)

    rows = _read(tmp_path / "modularity.csv")
    assert tuple(rows[0]) == CSV_COLUMNS
    layers = len({r["layer"] for r in rows})
    assert layers == 10  # ResNet-20 block taps: stem + 9 blocks
    assert sorted({int(r["epoch"]) for r in rows}) == [0, 1, 2]  # 0 = initialisation
    assert len(rows) == 3 * layers
    assert all(
        math.isfinite(float(r["modularity"])) and -0.5 <= float(r["modularity"]) <= 1 for r in rows
    )
    assert {(r["N"], r["k"], r["metric"], r["tap"], r["seed"], r["M"]) for r in rows} == {
        ("100", "3", "cosine", "block", "1", "")
    }
    assert [int(r["layer_index"]) for r in rows[:layers]] == list(range(1, layers + 1))

    # The last epoch's values are the modularity of the final weights on the same probe set.
    probe = monitor.probes[0]
    module.eval()
    with torch.no_grad(), LayerTaps(module.model, "block") as taps:
        module.model(probe.images)
    expected = [knn_modularity(f, probe.labels, k=3) for f in taps.features.values()]
    final = [float(r["modularity"]) for r in rows if r["epoch"] == "2"]
    assert final == pytest.approx(expected, abs=1e-6)

    logged = _read(tmp_path / "metrics.csv")
    values = [float(r["modularity/layer_07"]) for r in logged if r.get("modularity/layer_07")]
    assert len(values) == 3 and values[-1] == pytest.approx(final[6], abs=1e-6)
    assert any(r.get("modularity/overhead_s") for r in logged)

    for name in ("modularity_curves", "modularity_heatmap"):
        for suffix in ("png", "pdf"):
            assert (tmp_path / "figures" / f"{name}.{suffix}").stat().st_size > 1000
    summary = monitor.overhead_summary()
    assert summary["measurements"] == 3 and summary["overhead"] > 0


def test_every_n_epochs_keeps_first_and_last(digits: DigitsDataModule, tmp_path: Path) -> None:
    monitor = ModularityMonitor(
        n=50, k=3, every_n_epochs=2, figures=False, compute_M=True, num_edges=200
    )
    trainer = _trainer(tmp_path, monitor, epochs=3, limit_val_batches=0)
    trainer.fit(_module(digits), datamodule=digits)
    rows = _read(tmp_path / "modularity.csv")
    assert sorted({int(r["epoch"]) for r in rows}) == [0, 2, 3]
    assert all(math.isfinite(float(r["M"])) for r in rows)  # paper 2's M is filled in
    assert not (tmp_path / "figures").exists()


def test_measure_restores_mode_and_leaves_weights_and_stats(digits: DigitsDataModule) -> None:
    monitor = ModularityMonitor(n=60, k=3, feature_mode="per_layer")
    monitor.setup_probes(digits)
    module = _module(digits).train()
    frozen = next(m for m in module.net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    frozen.eval()  # a deliberately frozen BN must stay in eval mode
    before = {k: v.clone() for k, v in module.state_dict().items()}
    rows = monitor.measure(module)
    assert module.training and not frozen.training
    assert all(m.training for m in module.model.modules() if m is not frozen)
    after = module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats untouched
    assert all(p.grad is None for p in module.parameters())
    assert len(rows) == 10 and monitor.resolved_mode == "per_layer"


def test_feature_modes_give_identical_rows(digits: DigitsDataModule) -> None:
    module = _module(digits)
    results, modes = {}, {}
    # 80 samples x 1024 dims x 4 bytes = 0.3125 MiB per early layer: a 1 MiB budget groups them.
    for mode, budget in (("per_layer", 1024), ("all_layers", 1024), ("auto", 1.0)):
        monitor = ModularityMonitor(
            n=80, k=5, metric="pearson", feature_mode=mode, feature_memory_mb=budget, batch_size=32
        )
        monitor.setup_probes(digits)
        results[mode] = [r["modularity"] for r in monitor.measure(module)]
        modes[mode] = monitor.resolved_mode
    assert modes == {"per_layer": "per_layer", "all_layers": "all_layers", "auto": "3_groups"}
    assert results["per_layer"] == pytest.approx(results["all_layers"], abs=1e-7)
    assert results["auto"] == pytest.approx(results["all_layers"], abs=1e-7)
    auto = ModularityMonitor(n=80, k=5, feature_memory_mb=1e-3)  # a tiny budget -> per_layer
    auto.setup_probes(digits)
    auto.measure(module)
    assert auto.resolved_mode == "per_layer"


def test_repeats_are_rows_and_scalars_are_their_mean(digits: DigitsDataModule) -> None:
    monitor = ModularityMonitor(n=50, k=3, repeats=2)
    monitor.setup_probes(digits)
    first, second = (set(p.indices.tolist()) for p in monitor.probes)
    assert not first & second  # disjoint repeats by default
    rows = [{"epoch": 0, **r} for r in monitor.measure(_module(digits))]
    assert sorted({r["repeat"] for r in rows}) == [0, 1]
    epochs, layers, matrix = rows_to_matrix(rows)
    assert epochs == [0] and len(layers) == 10
    layer1 = [r["modularity"] for r in rows if r["layer_index"] == 1]
    assert float(matrix[0, 0]) == pytest.approx(sum(layer1) / 2)


def test_state_dict_round_trip() -> None:
    monitor = ModularityMonitor(n=10, k=3)
    monitor.history = [{"epoch": 0, "layer_index": 1, "modularity": 0.5}]
    other = ModularityMonitor(n=10, k=3)
    other.load_state_dict(monitor.state_dict())
    assert other.history == monitor.history and other.state_key == monitor.state_key
    assert ModularityMonitor(n=10, k=4).state_key != monitor.state_key


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 3, "k": 3}, "probe.n=3 must be larger than graph.k=3"),
        ({"metric": "euclid"}, "'euclid' is not one of"),
        ({"strategy": "random"}, "'random' is not one of"),
        ({"feature_mode": "all"}, "feature_mode 'all'"),
        ({"every_n_epochs": 0}, "every_n_epochs=0"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ModularityMonitor(**kwargs)


def test_num_edges_is_clamped_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="num_edges=40000 exceeds the 45 pairs"):
        monitor = ModularityMonitor(n=10, k=3, compute_M=True, num_edges=40000)
    assert monitor.num_edges == 45


def test_rows_to_matrix_handles_strings_and_gaps() -> None:
    rows = [
        {"epoch": "0", "layer_index": "1", "layer": "a", "modularity": "0.1"},
        {"epoch": "0", "layer_index": "2", "layer": "b", "modularity": ""},
        {"epoch": "3", "layer_index": "2", "layer": "b", "modularity": "0.4"},
    ]
    epochs, layers, matrix = rows_to_matrix(rows)
    assert epochs == [0, 3] and layers == ["a", "b"]
    assert float(matrix[0, 0]) == pytest.approx(0.1) and math.isnan(float(matrix[0, 1]))
    assert math.isnan(float(matrix[1, 0])) and float(matrix[1, 1]) == pytest.approx(0.4)
