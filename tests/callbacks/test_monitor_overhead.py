"""The monitor's logged overhead counts all it adds to a fit (setup, measurements, figures)."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as L
import pytest
import torch

from dnn_modularity.callbacks import ModularityMonitor
from dnn_modularity.callbacks import modularity as monitor_module
from dnn_modularity.callbacks import overhead as overhead_module
from dnn_modularity.callbacks.overhead import OverheadClock, timed_hook
from dnn_modularity.data import DigitsDataModule
from dnn_modularity.models.classifier import ImageClassifier


class _FakeTime:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_clock_sums_the_parts_against_the_fit(monkeypatch):
    clock_time = _FakeTime()
    monkeypatch.setattr(overhead_module.time, "perf_counter", clock_time)
    clock = OverheadClock()
    assert clock.summary()["overhead"] != clock.summary()["overhead"]  # NaN: no fit timed
    clock.start_fit()
    with clock.timed("setup"):
        clock_time.now += 1.0
    clock_time.now += 10.0  # training, not the callback's
    for _ in range(2):
        with clock.timed("measure"):
            clock_time.now += 2.0
    with pytest.raises(RuntimeError), clock.timed("figures"):
        clock_time.now += 3.0
        raise RuntimeError("a failing hook still counts")
    clock.end_fit()
    clock_time.now += 50.0  # after the fit (e.g. testing): not counted
    summary = clock.summary()
    assert summary["setup_seconds"] == 1.0 and summary["measure_seconds"] == 4.0
    assert summary["figures_seconds"] == 3.0 and summary["own_seconds"] == 8.0
    assert summary["fit_seconds"] == 18.0
    assert summary["overhead"] == pytest.approx(8.0 / 10.0)


def test_timed_hook_counts_a_method_as_a_part():
    class Callback:
        def __init__(self) -> None:
            self.overhead_clock = OverheadClock()

        @timed_hook("measure")
        def on_train_epoch_end(self, value: int) -> int:
            """Docstring kept."""
            return value + 1

    callback = Callback()
    assert callback.on_train_epoch_end(1) == 2
    assert callback.on_train_epoch_end.__doc__ == "Docstring kept."
    assert callback.overhead_clock.parts["measure"] >= 0.0


def test_logged_overhead_counts_setup_measurements_and_end_figures(tmp_path: Path):
    dm = DigitsDataModule(batch_size=64)
    dm.setup()
    torch.manual_seed(0)
    module = ImageClassifier(
        {"name": "resnet20", "num_classes": 10, "in_channels": 1}, dm.mean, dm.std
    )
    monitor = ModularityMonitor(n=100, k=3, seed=1)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        limit_train_batches=2,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        callbacks=[monitor],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=dm)
    summary = monitor.overhead_summary()
    parts = {key: summary[f"{key}_seconds"] for key in ("setup", "measure", "figures")}
    assert all(value > 0 for value in parts.values())
    # the end figures (drawn after the last measurement) are part of the logged overhead
    assert (tmp_path / "figures" / "modularity_curves.png").exists()
    assert summary["own_seconds"] == pytest.approx(sum(parts.values()))
    assert summary["measure_seconds"] >= summary["total_seconds"]  # measurements + records
    assert summary["fit_seconds"] > summary["own_seconds"]
    own, fit = summary["own_seconds"], summary["fit_seconds"]
    assert summary["overhead"] == pytest.approx(own / (fit - own))


class _FakeDevice:
    """An asynchronous device on a fake clock: launches queue work, synchronize waits for it."""

    def __init__(self, clock_time: _FakeTime) -> None:
        self.clock_time, self.queued = clock_time, 0.0

    def launch(self, seconds: float) -> None:
        self.queued += seconds  # the host returns at once

    def synchronize(self, device: torch.device | None = None) -> None:
        self.clock_time.now += self.queued
        self.queued = 0.0


@pytest.mark.parametrize("watched", [True, False])
def test_clock_on_a_gpu_bills_each_part_the_kernels_it_queued(monkeypatch, watched):
    clock_time = _FakeTime()
    device = _FakeDevice(clock_time)
    monkeypatch.setattr(overhead_module.time, "perf_counter", clock_time)
    monkeypatch.setattr(torch.cuda, "synchronize", device.synchronize)
    clock = OverheadClock()
    clock.watch_device(torch.device("cuda", 0) if watched else torch.device("cpu"))
    clock.start_fit()
    device.launch(5.0)  # a training step's kernels, still running when the callback's hook starts
    with clock.timed("measure"):
        device.launch(2.0)  # the callback's forward pass, queued
        device.synchronize()  # reading its result (float(Q)) waits for everything queued
        clock_time.now += 0.5  # host-side work
        device.launch(1.0)  # kernels queued after its last read (e.g. freeing, copying back)
    device.synchronize()  # the training's next host read waits for whatever is left
    clock.end_fit()
    summary = clock.summary()
    assert summary["fit_seconds"] == 8.5
    if watched:  # exactly the callback's own 2 + 1 s of kernels and 0.5 s on the host
        assert summary["measure_seconds"] == 3.5
        assert summary["overhead"] == pytest.approx(3.5 / 5.0)
    else:  # without waiting: the training's 5 s billed to it, its last 1 s to the training
        assert summary["measure_seconds"] == 7.5


def test_device_synchronizer_per_device_type(monkeypatch):
    calls: list[object] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: calls.append(device))
    assert overhead_module.device_synchronizer(None) is None
    assert overhead_module.device_synchronizer("cpu") is None
    assert overhead_module.device_synchronizer(torch.device("meta")) is None
    wait = overhead_module.device_synchronizer("cuda:1")
    assert wait is not None
    wait()
    assert calls == [torch.device("cuda", 1)]
    assert overhead_module.device_synchronizer("mps") is torch.mps.synchronize


def test_monitor_watches_the_device_it_trains_on(tmp_path: Path):
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, default_root_dir=tmp_path)
    module = torch.nn.Linear(2, 2)
    assert monitor_module._fit_device(trainer, module) == torch.device("cpu")


@pytest.mark.gpu
def test_clock_counts_the_cuda_kernels_a_part_queues():
    device = torch.device("cuda")
    x = torch.randn(4096, 4096, device=device)
    x @ x  # first use: cuBLAS set-up outside the timed parts
    torch.cuda.synchronize(device)
    clock = OverheadClock()
    clock.watch_device(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with clock.timed("measure"):
        start.record()
        for _ in range(50):  # ~0.1 s of kernels; the host returns after queueing them
            x @ x
        end.record()
    kernel_seconds = start.elapsed_time(end) / 1000.0
    assert clock.parts["measure"] >= kernel_seconds
