"""What a default training run prints: progress a log file sees, none of the known noise."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

NOISE = ("litlogger", "litmodels", "LeafSpec")


@pytest.mark.slow
def test_default_run_console_and_log_hold_progress_but_no_noise(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline", MPLBACKEND="Agg")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dnn_modularity.train",
            "model=resnet20",
            "trainer.max_epochs=2",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            "probe.n=100",
            "callbacks.modularity.every_n_epochs=1",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    log = (run_dir / "train.log").read_text()
    for word in NOISE:
        assert word not in console, word
        assert word not in log, word
    # The run's log file (what a SLURM log or `| tee` sees) tells where the run is.
    assert "training: started (2 epochs)" in log and "training: done in" in log
    assert [line for line in log.splitlines() if "modularity after epoch" in line][-1].count(
        "epoch 2: Q"
    ) == 1
    assert len([line for line in log.splitlines() if "modularity after epoch" in line]) == 3
