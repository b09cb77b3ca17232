"""`dnn_modularity.analyze` on a checkpoint trained by `dnn_modularity.train` (digits, ResNet-20).

One short training run (3 epochs, a checkpoint per epoch, the modularity callback on) feeds the
analyses through their Hydra configs, as a user would run them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from dnn_modularity.analyze import CONF_DIR, analyze
from dnn_modularity.io import read_csv_rows

pytestmark = pytest.mark.slow

REPO = CONF_DIR.parent


def _compose(config: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        # digits: the quick checkpoint (the no-argument default data is cluttered_digits)
        return compose(config, overrides=["data=digits", *overrides])


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    from dnn_modularity.train import train

    run_dir = tmp_path_factory.mktemp("train")
    cfg = _compose(
        "train",
        [
            "experiment=train_demo_digits",
            "model=resnet20",
            "trainer.max_epochs=3",
            "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            "callbacks.epoch_checkpoints.every_n_epochs=1",
            "callbacks.epoch_checkpoints.save_init=true",
            "probe.n=100",
            "logger=csv",
            f"run_dir={run_dir}",
        ],
    )
    train(cfg)
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    return run_dir


def test_curve_of_a_trained_checkpoint_rises_more_than_random_init(trained_run, tmp_path):
    cfg = _compose(
        "analyze",
        [
            f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}",
            "analysis=curve",
            "probe.n=100",
            "analysis.repeats=3",
            f"run_dir={tmp_path}",
        ],
    )
    result = analyze(cfg)
    summary = read_csv_rows(tmp_path / "curve_summary.csv")
    curves = {
        v: np.array([float(r["mean"]) for r in summary if r["variant"] == v])
        for v in ("trained", "random_init", "shuffled")
    }
    third = len(curves["trained"]) // 3
    assert curves["trained"][-third:].mean() > curves["trained"][:third].mean()
    rise = {v: c[-third:].mean() - c[:third].mean() for v, c in curves.items()}
    assert rise["trained"] > rise["random_init"]
    assert np.abs(curves["shuffled"]).max() < 0.05
    meta = json.loads((tmp_path / "curve.json").read_text())
    assert meta["model"] == "resnet20" and meta["data"] == "digits"
    assert meta["settings"]["disjoint_repeats"] is True  # 3 x 100 fits 54 test images per class
    assert (tmp_path / "config.yaml").exists()
    assert Image.open(result["figures"]["curve"][0]).size[0] > 500


def test_dynamics_from_history_and_from_checkpoints(trained_run, tmp_path):
    base = [f"analysis.run_dir={trained_run}", "analysis=dynamics", "probe.n=100"]
    hist = analyze(_compose("analyze", [*base, f"run_dir={tmp_path / 'h'}"]))
    rows = read_csv_rows(tmp_path / "h" / "dynamics.csv")
    epochs = sorted({int(r["epoch"]) for r in rows if r["measure"] == "modularity"})
    assert epochs == [0, 1, 2, 3]  # epoch 0 = the initialisation (callback)
    assert any(r["measure"] == "accuracy" for r in rows)
    ckpt = analyze(
        _compose("analyze", [*base, "analysis.source=checkpoints", f"run_dir={tmp_path / 'c'}"])
    )
    rows = read_csv_rows(tmp_path / "c" / "dynamics.csv")
    acc = {int(r["epoch"]): float(r["value"]) for r in rows if r["measure"] == "accuracy"}
    assert sorted(acc) == [0, 1, 2, 3]
    assert acc[3] > acc[0] + 0.3  # trained vs initialisation
    for result in (hist, ckpt):
        assert Path(result["figures"]["dynamics"][0]).stat().st_size > 0


def test_cli_adversarial_runs_all_six_attacks(trained_run, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "dnn_modularity.analyze",
            f"ckpt_path={trained_run / 'checkpoints' / 'last.ckpt'}",
            "analysis=adversarial",
            "data=digits",
            "probe.n=40",
            "attack_iteration_cap=2",
            "analysis.cpu_caps.jsma.max_images=20",
            "num_threads=1",
            f"run_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = {r["attack"]: r for r in read_csv_rows(tmp_path / "adversarial_summary.csv")}
    assert set(summary) == {"fgsm", "pgd", "jsma", "cw", "onepixel", "localsearch"}
    for name, row in summary.items():
        assert row["status"] in ("ok", "too_few_samples"), (name, row["reason"])
        assert 0.0 <= float(row["success_rate"]) <= 1.0
    assert summary["fgsm"]["status"] == "ok" and float(summary["fgsm"]["success_rate"]) > 0.5
    keys = {r["key"] for r in read_csv_rows(tmp_path / "adversarial.csv")}
    assert "adv_fgsm/modularity/layer_07" in keys and "modularity/layer_07" in keys
    assert (tmp_path / "figures" / "adversarial.png").exists()
    # On a CPU the slow attacks are capped, and the log and the record say so.
    console = proc.stdout + proc.stderr
    assert "CW on CPU: capped binary_search_steps 9 -> 5, max_iterations 10000 -> 100" in console
    assert "JSMA on CPU: capped max_images 40 -> 20" in console
    capped = json.loads((tmp_path / "adversarial.json").read_text())["capped"]
    assert capped["cw"]["max_iterations"] == {"original": 10000, "used": 100}
    assert capped["jsma"] == {"max_images": {"original": 40, "used": 20}}
    assert "fgsm" not in capped and summary["fgsm"]["capped"] == ""
    assert "max_iterations" in summary["cw"]["capped"] and summary["jsma"]["n_images"] == "20"
    # Each attack logs its start and its end with the duration (a log file sees it).
    for name in ("FGSM", "PGD", "JSMA", "CW", "OnePixel", "LocalSearch"):
        assert f"{name} attack: started" in console and f"{name} attack: done in" in console
