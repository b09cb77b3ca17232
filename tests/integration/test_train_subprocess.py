"""The real entry point in subprocesses: 2-process DDP (gloo), a 2x2 multirun, refused combos."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from dnn_modularity.callbacks import ModularityMonitor
from dnn_modularity.data import DigitsDataModule
from dnn_modularity.models.classifier import load_classifier

FAST = [
    "data=digits",  # the quick digits runs (the no-argument default is cluttered_digits)
    "model=resnet20",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=2",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def run_train(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK")
    }
    env.update(OMP_NUM_THREADS="1", WANDB_MODE="offline", MPLBACKEND="Agg", HYDRA_FULL_ERROR="1")
    return subprocess.run(
        [sys.executable, "-m", "dnn_modularity.train", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
@pytest.mark.ddp
def test_ddp_on_two_cpu_processes_equals_single_process_curve(tmp_path: Path) -> None:
    # The default run folder (a unique stamp): the re-launched rank gets the parent's folder.
    proc = run_train(
        [
            "trainer=ddp_cpu",
            *FAST,
            "probe.n=101",  # odd: the two shards differ in size
            "callbacks.epoch_checkpoints.every_n_epochs=1",
            "callbacks.epoch_checkpoints.save_init=true",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    (run_dir,) = (tmp_path / "outputs").glob("*/*")  # one folder for both processes
    assert (run_dir / "train_ddp_process_1.log").is_file()
    rows = read_csv(run_dir / "modularity.csv")
    # Each (epoch, layer) row exactly once although two processes measured.
    assert Counter((r["epoch"], r["layer_index"]) for r in rows).most_common(1)[0][1] == 1
    assert Counter(r["epoch"] for r in rows) == {"0": 10, "1": 10}
    assert json.loads((run_dir / "results.json").read_text())["test"]["test/acc"] >= 0

    digits = DigitsDataModule()
    for epoch in (0, 1):
        module = load_classifier(run_dir / "checkpoints" / "epochs" / f"epoch_{epoch:03d}.ckpt")
        monitor = ModularityMonitor(n=101, k=3)
        monitor.setup_probes(digits)
        single = [r["modularity"] for r in monitor.measure(module)]
        distributed = [float(r["modularity"]) for r in rows if r["epoch"] == str(epoch)]
        assert distributed == pytest.approx(single, abs=1e-6), f"epoch {epoch}"


@pytest.mark.slow
def test_multirun_2x2_writes_four_records(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    proc = run_train(
        ["-m", "graph.k=3,5", "probe.n=60,80", *FAST, "logger=csv", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    seen = set()
    for job in sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()):
        result = json.loads((job / "results.json").read_text())
        assert result["run_dir"] == str(job)
        rows = read_csv(job / "modularity.csv")
        assert {r["epoch"] for r in rows} == {"0", "1"}
        (setting,) = {(r["k"], r["N"]) for r in rows}
        seen.add(setting)
        assert (job / "config.yaml").is_file() and (
            job / "figures" / "modularity_curves.png"
        ).is_file()
    assert seen == {("3", "60"), ("3", "80"), ("5", "60"), ("5", "80")}
    assert (sweep / "multirun.yaml").is_file()


@pytest.mark.slow
def test_multirun_with_ddp_is_refused_with_a_hint(tmp_path: Path) -> None:
    proc = run_train(
        ["-m", "trainer=ddp_cpu", "graph.k=3,5", *FAST, f"hydra.sweep.dir={tmp_path / 's'}"],
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "is not supported by the BasicLauncher" in proc.stderr
    assert "torchrun" in proc.stderr and not list(tmp_path.glob("s/*/checkpoints"))
