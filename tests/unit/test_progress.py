"""Progress as log lines: start, periodic progress with an ETA, end with the duration."""

from __future__ import annotations

import logging
import threading
import time

import lightning.pytorch as L
import pytest
from lightning.pytorch.demos.boring_classes import BoringModel

from dnn_modularity.callbacks.progress import EpochProgress
from dnn_modularity.progress import Progress, format_seconds, track


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "dnn_modularity.progress"]


def test_start_periodic_progress_with_eta_and_end(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with Progress("CW attack", 4, unit="images", interval_s=0.05) as progress:
        progress.advance(1)
        time.sleep(0.3)  # longer than the interval: the timer reports without an advance
        progress.advance(3)
    lines = _lines(caplog)
    assert lines[0] == "CW attack: started (4 images)"
    periodic = [line for line in lines[1:-1] if line.startswith("CW attack: 1/4 images (25%)")]
    assert periodic and "elapsed, ETA" in periodic[0]
    assert lines[-1].startswith("CW attack: done in ") and lines[-1].endswith("s (4 images)")
    assert progress.seconds >= 0.3
    assert not any(t.name.startswith("progress: ") for t in threading.enumerate())  # timer gone


def test_quiet_progress_logs_only_long_work(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with Progress("short", 2, quiet=True, interval_s=5.0) as progress:
        progress.advance(2)
    assert _lines(caplog) == []
    with Progress("long", 2, quiet=True, interval_s=0.05):
        time.sleep(0.2)
    lines = _lines(caplog)
    assert lines[0].startswith("long: 0/2 steps (0%)") and "no ETA yet" in lines[0]
    assert lines[-1].startswith("long: done in")


def test_only_the_innermost_block_reports(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with Progress("outer", 2, interval_s=0.05), Progress("inner", 1, interval_s=0.05):
        time.sleep(0.3)
    lines = _lines(caplog)
    while_inner = lines[: next(i for i, x in enumerate(lines) if x.startswith("inner: done"))]
    periodic = [line for line in while_inner if "elapsed" in line]
    assert periodic and all(line.startswith("inner:") for line in periodic)


def test_failure_and_early_stop_are_reported(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with pytest.raises(KeyError), Progress("pass", 3, unit="layers", interval_s=5.0):
        raise KeyError("x")
    last = _lines(caplog)[-1]
    assert last.startswith("pass: failed after") and last.endswith("(KeyError)")
    for item in track(range(5), "loop", interval_s=5.0):
        if item == 1:
            break
    assert _lines(caplog)[-1].startswith("loop: stopped after")


def test_track_counts_items_and_disabled_is_silent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    assert list(track([1, 2, 3], "frames", unit="frames", interval_s=5.0)) == [1, 2, 3]
    assert _lines(caplog)[0] == "frames: started (3 frames)"
    assert _lines(caplog)[-1].endswith("(3 frames)")
    caplog.clear()
    assert list(track([1, 2], "off", enabled=False, interval_s=0.01)) == [1, 2]
    assert _lines(caplog) == []


def test_interval_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DNN_MODULARITY_PROGRESS_S", "2.5")
    assert Progress("x").interval_s == 2.5
    monkeypatch.setenv("DNN_MODULARITY_PROGRESS_S", "soon")
    with pytest.raises(ValueError, match="DNN_MODULARITY_PROGRESS_S='soon'"):
        Progress("x")


def test_format_seconds() -> None:
    assert format_seconds(4.24) == "4.2 s"
    assert format_seconds(185) == "3 min 05 s"
    assert format_seconds(7620) == "2 h 07 min"
    assert format_seconds(float("nan")) == "?"


def test_epoch_progress_callback_logs_a_fit(caplog: pytest.LogCaptureFixture, tmp_path) -> None:
    caplog.set_level(logging.INFO)
    trainer = L.Trainer(
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        callbacks=[EpochProgress("fine-tune", interval_s=5.0)],
    )
    trainer.fit(BoringModel())
    lines = _lines(caplog)
    assert lines[0] == "fine-tune: started (2 epochs)"
    assert lines[-1].startswith("fine-tune: done in") and lines[-1].endswith("(2 epochs)")
