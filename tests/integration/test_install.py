"""A non-editable install in a fresh virtual environment finds its configs and trains."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import dnn_modularity

REPO = Path(dnn_modularity.__file__).resolve().parents[2]
PIP = [sys.executable, "-m", "pip"]
#: The venv borrows pip from the system site (no ensurepip, no older bundled setuptools).
VENV_FLAGS = ["--system-site-packages", "--without-pip"]
ONE_STEP = [
    "data=digits",
    "model=resnet20",
    "logger=csv",
    "callbacks=none",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.num_sanity_val_steps=0",
    "trainer.enable_progress_bar=false",
]


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert proc.returncode == 0, f"{args}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_config_dir_prefers_the_environment_then_the_checkout(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("DNN_MODULARITY_CONF", raising=False)
    assert dnn_modularity.config_dir() == REPO / "conf"
    monkeypatch.setenv("DNN_MODULARITY_CONF", str(tmp_path))
    assert dnn_modularity.config_dir() == tmp_path.resolve()


@pytest.mark.slow
def test_wheel_installed_in_a_fresh_venv_composes_and_trains_outside_the_checkout(
    tmp_path: Path,
) -> None:
    # Build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
    source = _mkdir(tmp_path / "source")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(REPO / "src", source / "src", ignore=ignore)
    shutil.copytree(REPO / "conf", source / "conf", ignore=ignore)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DNN_MODULARITY_CONF")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INDEX="1", OMP_NUM_THREADS="1")
    wheels = tmp_path / "wheels"
    _run(
        [*PIP, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(source)],
        tmp_path,
        env,
    )
    (wheel,) = wheels.glob("dnn_modularity-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", *VENV_FLAGS, str(venv)], tmp_path, env)
    python = str(venv / "bin" / "python")
    _run([python, "-m", "pip", "install", "--no-deps", "-q", str(wheel)], tmp_path, env)
    elsewhere = _mkdir(tmp_path / "elsewhere")
    where = _run(
        [python, "-c", "import dnn_modularity as d; print(d.__file__); print(d.config_dir())"],
        elsewhere,
        env,
    ).stdout.split()
    assert Path(where[0]).is_relative_to(venv), where  # the wheel, not the checkout
    assert Path(where[1]) == Path(where[0]).parent / "conf"
    # The Hydra plugin behind model=torchvision:<name> ships too (a namespace package).
    plugin = _run(
        [
            python,
            "-c",
            "import hydra_plugins.dnn_modularity_external_models as m; print(m.__file__)",
        ],
        elsewhere,
        env,
    ).stdout.strip()
    assert Path(plugin).is_relative_to(venv), plugin
    run_dir = tmp_path / "run"
    _run(
        [python, "-m", "dnn_modularity.train", *ONE_STEP, f"run_dir={run_dir}"],
        elsewhere,
        env,
    )
    results = json.loads((run_dir / "results.json").read_text())
    assert "test/acc" in results["test"]
    assert (run_dir / "config.yaml").is_file()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
