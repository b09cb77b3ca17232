"""Run folders, checkpoints and loggers: no mixed runs, no code from checkpoints, no lost rows."""

from __future__ import annotations

import csv
import os
import threading
import time
import warnings
from datetime import datetime
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from dnn_modularity import rundir
from dnn_modularity.callbacks import ModularityMonitor
from dnn_modularity.checkpoints import NotACheckpointError, load_checkpoint
from dnn_modularity.loggers import (
    WANDB_CONNECT_TIMEOUT,
    RunCSVLogger,
    make_wandb_logger,
    wandb_unreachable,
)
from dnn_modularity.models.classifier import ImageClassifier, load_classifier
from dnn_modularity.rundir import RunDirInUseError, claim_run_dir, run_stamp
from dnn_modularity.runtime import CONF_DIR, resolve_run_dir

NET = {"name": "resnet20", "num_classes": 10, "in_channels": 1}


# --- run folders -----------------------------------------------------------------------------
class _FrozenClock(datetime):
    @classmethod
    def now(cls, tz=None):  # every call in "the same instant"
        return cls(2026, 11, 21, 14, 3, 7, 123456)


def test_runs_started_at_the_same_instant_get_different_default_folders(monkeypatch) -> None:
    monkeypatch.setattr(rundir, "datetime", _FrozenClock)
    stamps = {run_stamp() for _ in range(50)}
    assert len(stamps) == 50
    assert all(s.startswith("2026-11-21_14-03-07.123_") for s in stamps)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for name in ("train", "analyze", "prune", "report"):
            extra = ["dir=/sweep"] if name == "report" else []
            runs, sweeps = set(), set()
            for _ in range(2):
                cfg = compose(name, overrides=extra, return_hydra_config=True)
                # One config reads one name (Lightning's DDP re-launch reads it again).
                assert cfg.hydra.run.dir == cfg.hydra.run.dir
                runs.add(cfg.hydra.run.dir)
                sweeps.add(cfg.hydra.sweep.dir)
            assert len(runs) == 2, name
            assert name == "report" or len(sweeps) == 2, name  # (report has no sweeps)
    assert resolve_run_dir(cfg, None) != resolve_run_dir(cfg, None)  # without Hydra too


def test_a_used_folder_is_refused_unless_resumed_or_overwritten(tmp_path: Path) -> None:
    run = tmp_path / "run"
    claim_run_dir(run, config_text="first: 1\n")
    (run / "checkpoints" / "epochs").mkdir(parents=True)
    (run / "checkpoints" / "best.ckpt").write_bytes(b"old weights")
    (run / "checkpoints" / "epochs" / "epoch_001.ckpt").write_bytes(b"old epoch")
    with pytest.raises(
        RunDirInUseError, match=r"already holds another run's outputs.*checkpoints/"
    ):
        claim_run_dir(run, config_text="second: 2\n")
    assert (run / "config.yaml").read_text() == "first: 1\n"
    # Hydra's own files do not make a folder "used"; a run's files do.
    empty = tmp_path / "hydra_only"
    (empty / ".hydra").mkdir(parents=True)
    (empty / "train.log").write_text("log\n")
    claim_run_dir(empty)
    # Resuming from a checkpoint inside the folder continues that run.
    claim_run_dir(run, resume_from=run / "checkpoints" / "best.ckpt", config_text="resumed\n")
    assert (run / "checkpoints" / "epochs" / "epoch_001.ckpt").exists()
    # overwrite=true deletes what the earlier run left (stale best/epoch checkpoints included)...
    with pytest.raises(RunDirInUseError, match="would delete"):
        claim_run_dir(run, overwrite=True, inputs=[run / "checkpoints" / "best.ckpt"])
    claim_run_dir(run, overwrite=True, config_text="third: 3\n")
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml"]
    assert (run / "config.yaml").read_text() == "third: 3\n"


def test_two_runs_claiming_one_folder_at_the_same_moment_one_wins(tmp_path: Path) -> None:
    target, barrier = tmp_path / "shared", threading.Barrier(8)
    outcomes: list[str] = []

    def start() -> None:
        barrier.wait()
        try:
            claim_run_dir(target)
            outcomes.append("claimed")
        except RunDirInUseError as err:
            outcomes.append(str(err))

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outcomes.count("claimed") == 1
    assert all("another run" in o for o in outcomes if o != "claimed")


# --- checkpoints -----------------------------------------------------------------------------
def _checkpoint(path: Path, **extra) -> Path:
    module = ImageClassifier(NET, mean=[0.5], std=[0.25])
    torch.save(
        {
            "epoch": 1,
            "global_step": 6,
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            **extra,
        },
        path,
    )
    return path


def test_crafted_checkpoint_cannot_run_code_on_load(crafted_checkpoint) -> None:
    from dnn_modularity.analysis.context import load_model
    from dnn_modularity.analysis.dynamics import checkpoint_epoch

    path, marker = crafted_checkpoint
    torch.load(path, weights_only=False)  # the payload is real: a plain unpickle runs it
    assert marker.exists()
    marker.unlink()
    for load in (load_checkpoint, load_classifier, load_model, checkpoint_epoch):
        with pytest.raises(NotACheckpointError, match="could run code"):
            load(path)
        assert not marker.exists(), load.__name__


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"epoch,loss\n0,1.5\n", "not a PyTorch checkpoint file"),
        (os.urandom(2048), "not a PyTorch checkpoint file"),
        (b"", "empty or truncated"),
        (None, r"without state_dict and hyper_parameters.net_config; its keys: \['weights'\]"),
    ],
    ids=["text", "random_bytes", "empty", "torch_file_without_our_keys"],
)
def test_a_file_that_is_not_a_checkpoint_says_so(tmp_path: Path, content, why: str) -> None:
    from dnn_modularity.analysis.dynamics import checkpoint_epoch

    path = tmp_path / "last.ckpt"
    if content is None:
        torch.save({"weights": torch.ones(3)}, path)
    else:
        path.write_bytes(content)
    for load in (load_classifier, load_checkpoint):
        with pytest.raises(NotACheckpointError, match=f"is not a checkpoint written by.*{why}"):
            load(path)
    if content is not None:  # the dynamics analysis only needs the epoch of a checkpoint
        with pytest.raises(NotACheckpointError, match="not a checkpoint written by"):
            checkpoint_epoch(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_classifier(tmp_path / "missing.ckpt")


def test_older_hparams_key_loads_and_the_stored_recipe_is_never_built(tmp_path: Path) -> None:
    module = ImageClassifier(NET, mean=[0.5], std=[0.25])
    recipe = {"_target_": "os.system", "_partial_": True, "command": "touch pwned"}
    path = tmp_path / "old.ckpt"
    torch.save(
        {  # Lightning's old `hparams` key, without the options added later
            "state_dict": module.state_dict(),
            "hparams": {"net_config": NET, "mean": [0.5], "std": [0.25], "optimizer": recipe},
        },
        path,
    )
    loaded = load_classifier(path)
    assert loaded.hparams.optimizer is None and loaded.checkpoint_recipe["optimizer"] == recipe
    for key, value in module.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert not loaded.training


# --- resume: monitor settings ----------------------------------------------------------------
def _monitor_checkpoint(monitor: ModularityMonitor, drop_settings: bool = False) -> dict:
    state = monitor.state_dict()
    if drop_settings:  # a checkpoint written before the settings were stored
        del state["settings"]
    return {"epoch": 1, "callbacks": {monitor.state_key: state}}


def test_resume_with_other_monitor_settings_is_refused_naming_the_keys() -> None:
    old = ModularityMonitor(n=100, k=3, seed=0)
    old.history = [{"epoch": 0, "layer_index": 1, "seed": 0, "N": 100}]
    for drop in (False, True):
        checkpoint = _monitor_checkpoint(old, drop_settings=drop)
        assert ModularityMonitor(n=100, k=3, seed=0).resume_differences(checkpoint) == {}
        changed = ModularityMonitor(n=60, k=3, seed=1)
        assert changed.resume_differences(checkpoint) == {"n": (100, 60), "seed": (0, 1)}
        with pytest.raises(
            ValueError, match=r"probe.n: checkpoint 100, this run 60.*probe.seed.*probe.n=100"
        ):
            changed.check_resume(checkpoint, "last.ckpt")
    other = ModularityMonitor(n=100, strategy="sequential", on_resume_change="new_record")
    assert other.check_resume(_monitor_checkpoint(old)) is True  # continues into a new file
    assert ModularityMonitor(n=100).check_resume({"epoch": 1, "callbacks": {}}) is False


# --- metrics.csv -----------------------------------------------------------------------------
def test_csv_logger_appends_to_an_existing_metrics_file_without_warning(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("run: 1\n")  # the run folder is never empty
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Lightning's "... will be deleted" warning
        first = RunCSVLogger(tmp_path, name="", version="")
        first.log_metrics({"val/acc": 0.5}, step=2)
        first.log_metrics({"val/acc": 0.6}, step=5)
        first.save()
        resumed = RunCSVLogger(tmp_path, name="", version="")
        assert resumed.drop_rows_after(3) == 1  # a crashed run's row after the checkpoint
        resumed.log_metrics({"val/acc": 0.7, "train/loss": 1.0}, step=5)
        resumed.save()
    with open(resumed.metrics_file, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["step"], r["val/acc"], r["train/loss"]) for r in rows] == [
        ("2", "0.5", ""),
        ("5", "0.7", "1.0"),
    ]


# --- W&B without network ---------------------------------------------------------------------
def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_wandb_without_network_logs_offline_with_one_line(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)  # a key, but no reachable server
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    start = time.perf_counter()
    assert wandb_unreachable() is not None
    with caplog.at_level("WARNING", logger="dnn_modularity.loggers"):
        logger = make_wandb_logger(save_dir=tmp_path, mode="auto")
    assert time.perf_counter() - start < 2 * WANDB_CONNECT_TIMEOUT + 2
    assert logger._offline
    (line,) = [r.getMessage() for r in caplog.records]
    assert "W&B server unreachable (127.0.0.1:" in line and "wandb sync" in line


def test_wandb_run_that_cannot_start_online_falls_back_offline(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    import wandb

    from dnn_modularity import loggers

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.setattr(loggers, "wandb_unreachable", lambda: None)  # the server answers, but
    real_init = wandb.init

    def init(*args, **kwargs):  # ... the online run cannot start (bad key, server error)
        if os.environ.get("WANDB_MODE") != "dryrun":  # Lightning's offline switch
            raise wandb.errors.CommError("401 unauthorized")
        return real_init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", init)
    with caplog.at_level("WARNING", logger="dnn_modularity.loggers"):
        logger = make_wandb_logger(save_dir=tmp_path, mode="online")
    assert logger._offline
    assert any("could not start online" in r.getMessage() for r in caplog.records)
