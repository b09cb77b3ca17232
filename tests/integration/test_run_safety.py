"""Runs never lose, mix or fake results: run folders, resume, missing checkpoints, bad files.

In-process `train(cfg)` runs on digits (ResNet-20, N = 100, 1-4 short epochs) and two quick
command-line runs that are refused before any training.
"""

from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from dnn_modularity.checkpoints import NotACheckpointError
from dnn_modularity.rundir import RunDirInUseError
from dnn_modularity.runtime import OutputsMissingError
from dnn_modularity.train import CONF_DIR, train

FAST = [
    "data=digits",  # the quick digits runs (the no-argument default is cluttered_digits)
    "model=resnet20",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "probe.n=100",
]

#: Console messages of Lightning that a default run must not print.
NOISE = ("Experiment logs directory", "will be deleted", "`weights_only` was not set")


def make_cfg(run_dir: Path, *overrides: str, config: str = "train"):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config, overrides=[*FAST, *overrides, f"run_dir={run_dir}"])


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


class _Messages(logging.Handler):
    """Collects Lightning's log lines (its loggers do not propagate to pytest's caplog)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def train_and_listen(cfg) -> tuple[dict, list[str]]:
    """`train(cfg)` returning its result and every warning and Lightning log line."""
    handler = _Messages()
    # `lightning.pytorch` does not propagate to `lightning` (each may hold its own handler).
    loggers = [logging.getLogger(n) for n in ("lightning", "lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = train(cfg)
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(handler)
            lg.setLevel(level)
    return result, [str(w.message) for w in caught] + handler.lines


def test_second_run_into_a_used_folder_is_refused_and_overwrite_clears_stale_files(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    train(make_cfg(run, "trainer.max_epochs=1", "callbacks.epoch_checkpoints.every_n_epochs=1"))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert (run / "checkpoints" / "epochs" / "epoch_001.ckpt") in before

    with pytest.raises(RunDirInUseError, match="already holds another run's outputs") as info:
        train(make_cfg(run, "trainer.max_epochs=1", "seed=1"))
    assert "overwrite=true" in str(info.value) and "ckpt_path=" in str(info.value)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before  # untouched

    # overwrite=true: the earlier run's files go first, so no stale best.ckpt / epochs/*.ckpt
    # (which analysis=dynamics source=checkpoints would read as this run's) remain.
    result = train(make_cfg(run, "trainer.max_epochs=1", "seed=1", "overwrite=true"))
    assert not (run / "checkpoints" / "epochs").exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert (run / "checkpoints" / "best.ckpt").read_bytes() != before[
        run / "checkpoints" / "best.ckpt"
    ]
    assert result["paths"]["best_checkpoint"] == str(run / "checkpoints" / "best.ckpt")


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="0")
    return subprocess.run(
        [sys.executable, "-m", "dnn_modularity.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
@pytest.mark.parametrize("folder_key", ["hydra.run.dir", "run_dir"])
def test_cli_refuses_a_used_hydra_run_dir_before_hydra_writes_into_it(
    tmp_path: Path, folder_key: str
) -> None:
    run = tmp_path / "earlier"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- seed=7\n")
    (run / "results.json").write_text('{"test": {"test/acc": 0.9}}\n')
    proc = _cli(tmp_path, f"{folder_key}={run}")
    assert proc.returncode != 0
    assert "Error: run folder" in proc.stderr
    assert "already holds another run's outputs (results.json)" in proc.stderr
    # Nothing of the refused run reached the folder: not Hydra's files, not its log.
    assert (run / ".hydra" / "overrides.yaml").read_text() == "- seed=7\n"
    assert sorted(p.name for p in run.iterdir()) == [".hydra", "results.json"]

    # overwrite=true deletes the old contents before Hydra writes (here the run then stops at
    # a missing data folder, right after claiming the folder).
    proc = _cli(
        tmp_path,
        f"{folder_key}={run}",
        "overwrite=true",
        "data=cifar10",
        f"data.data_dir={tmp_path / 'no_data'}",
        "data.download=false",
    )
    assert proc.returncode != 0 and "no_data" in proc.stderr + proc.stdout
    assert not (run / "results.json").exists()
    assert "overwrite=true" in (run / ".hydra" / "overrides.yaml").read_text()
    assert (run / "config.yaml").is_file()
    assert not (tmp_path / "outputs").exists()  # no second folder for Hydra's own files


@pytest.mark.slow
def test_run_dir_holds_the_runs_log_and_hydra_files(tmp_path: Path) -> None:
    """`run_dir=` is the run's one folder: its log and `.hydra/` too, nothing under outputs/."""
    run = tmp_path / "mine"
    proc = _cli(
        tmp_path,
        f"run_dir={run}",
        "data=digits",
        "model=resnet20",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        "test=false",
        "probe.n=100",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = (run / "train.log").read_text()
    assert "done:" in log
    assert "ModularityMonitor: 2 measurements" in log  # the monitor's cost, in the log file too
    assert "run_dir=" in (run / ".hydra" / "overrides.yaml").read_text()
    assert (run / "results.json").is_file()
    assert not (tmp_path / "outputs").exists()


def test_resume_in_place_keeps_every_row_and_refuses_other_monitor_settings(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    save_init = [
        "callbacks.epoch_checkpoints.every_n_epochs=1",
        "callbacks.epoch_checkpoints.save_init=true",
    ]
    _, messages = train_and_listen(make_cfg(run, *save_init))
    # Lightning's notices about the run folder and checkpoint saving are gone at their cause;
    # its real warnings stay visible.
    assert not [m for m in messages if any(n in m for n in NOISE)]
    assert any("smaller than the logging interval" in m for m in messages)
    assert any("GPU available" in m for m in messages)  # Lightning's log lines are heard
    metrics = read_csv(run / "metrics.csv")
    modularity = read_csv(run / "modularity.csv")
    last = run / "checkpoints" / "last.ckpt"

    result, messages = train_and_listen(
        make_cfg(run, *save_init, "trainer.max_epochs=3", f"ckpt_path={last}")
    )
    assert not [m for m in messages if any(n in m for n in NOISE)]
    resumed = read_csv(run / "metrics.csv")
    assert [{k: r[k] for k in metrics[0]} for r in resumed[: len(metrics)]] == metrics
    val_epochs = Counter(r["epoch"] for r in resumed if r.get("val/acc"))
    assert val_epochs == {"0": 1, "1": 1, "2": 1}  # all epochs, none twice
    rows = read_csv(run / "modularity.csv")
    assert rows[: len(modularity)] == modularity
    assert Counter(r["epoch"] for r in rows) == {"0": 10, "1": 10, "2": 10, "3": 10}
    assert result["paths"]["metrics_csv"] == str(run / "metrics.csv")

    # Other monitor settings (probe.n forgotten, another seed): refused before anything runs.
    records = {p: p.read_bytes() for p in (run / "metrics.csv", run / "modularity.csv")}
    last = run / "checkpoints" / "last.ckpt"
    with pytest.raises(
        ValueError, match=r"probe.n: checkpoint 100, this run 60.*probe.seed"
    ) as info:
        train(
            make_cfg(run, "trainer.max_epochs=4", "probe.n=60", "probe.seed=3", f"ckpt_path={last}")
        )
    assert "on_resume_change=new_record" in str(info.value)
    assert {p: p.read_bytes() for p in records} == records

    # ... or, asked for, continued into a new record file beside the untouched old one.
    result = train(
        make_cfg(
            run,
            "trainer.max_epochs=4",
            "probe.n=60",
            f"ckpt_path={last}",
            "callbacks.modularity.on_resume_change=new_record",
        )
    )
    assert (run / "modularity.csv").read_bytes() == records[run / "modularity.csv"]
    new = run / "modularity_resumed_epoch003.csv"
    assert result["paths"]["modularity_csv"] == str(new)
    assert {(r["epoch"], r["N"]) for r in read_csv(new)} == {("3", "60"), ("4", "60")}
    assert (run / "figures" / "modularity_resumed_epoch003_modularity_curves.png").is_file()


def test_a_run_whose_checkpoints_cannot_be_written_fails(tmp_path: Path, monkeypatch) -> None:
    # An unwritable checkpoints/ folder: Lightning catches the PermissionError of the save and
    # carries on. (Tests run as root, where chmod does not stop writes, so the file system
    # refuses here the way it refuses a user without write permission.)
    from fsspec.implementations.local import LocalFileSystem

    real_open = LocalFileSystem._open

    def refuse(self, path, mode="rb", *args, **kwargs):
        if "w" in mode and f"{os.sep}checkpoints{os.sep}" in str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(self, path, mode, *args, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "_open", refuse)
    run = tmp_path / "run"
    with pytest.raises(OutputsMissingError, match=r"did not write .*best\.ckpt.*writable"):
        train(make_cfg(run, "trainer.max_epochs=1"))
    assert not (run / "results.json").exists()  # nothing claims weights that do not exist


def test_crafted_checkpoint_is_refused_by_resume_and_prune(
    tmp_path: Path, crafted_checkpoint
) -> None:
    from dnn_modularity.prune import prune

    evil, marker = crafted_checkpoint
    with pytest.raises(NotACheckpointError, match="could run code"):
        train(make_cfg(tmp_path / "resumed", f"ckpt_path={evil}"))
    assert not (tmp_path / "resumed").exists()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("prune", overrides=[f"ckpt_path={evil}", f"run_dir={tmp_path / 'p'}"])
    with pytest.raises(NotACheckpointError, match="could run code"):
        prune(cfg)
    assert not marker.exists() and not (tmp_path / "p").exists()
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(NotACheckpointError, match="is not a checkpoint written by dnn_modularity"):
        train(make_cfg(tmp_path / "resumed", f"ckpt_path={text}"))
