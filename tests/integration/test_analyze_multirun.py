"""multirun.sh: valid bash, lists its steps, refuses `all` without --yes, and every preset and
config group option its commands name exists."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from hydra import compose, initialize_config_dir

from dnn_modularity.analyze import CONF_DIR

REPO = CONF_DIR.parent
SCRIPT = REPO / "multirun.sh"


def _run(*args: str, dry: bool = False) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OUT="/tmp/paper")
    if dry:
        env["DRY_RUN"] = "1"
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=60
    )


def test_script_is_valid_bash_and_lists_its_steps() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    listed = _run("list")
    assert listed.returncode == 0
    for step in ("train_cifar10", "fig4", "fig6a", "fig7", "p2_ring", "prune", "report"):
        assert re.search(rf"^\s+{step}\s", listed.stdout, re.M), step
    refused = _run("all")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert _run("no_such_step").returncode == 2


def test_every_command_names_existing_presets_and_composes() -> None:
    dry = _run("all", dry=True)
    assert dry.returncode == 0, dry.stderr
    commands = [line[2:] for line in dry.stderr.splitlines() if line.startswith("+ ")]
    assert len(commands) > 20
    experiments = set()
    for command in commands:
        experiments |= {e for m in re.findall(r"experiment=(\S+)", command) for e in m.split(",")}
    missing = [
        e for e in sorted(experiments) if not (CONF_DIR / "experiment" / f"{e}.yaml").exists()
    ]
    assert not missing, missing
    # Every analysis command composes (sweep lists replaced by their first value).
    for command in commands:
        if "dnn_modularity.analyze" not in command:
            continue
        overrides = [
            re.sub(r"=([^=,]+),.*$", r"=\1", token)
            for token in command.split()[3:]
            if "=" in token and not token.startswith("hydra.")
        ]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("analyze", overrides=overrides)
        assert cfg.analysis.name in (
            "curve",
            "adversarial",
            "dynamics",
            "difference",
            "histograms",
            "ring",
        )


@pytest.mark.parametrize(
    "preset",
    sorted(
        p.stem
        for p in (CONF_DIR / "experiment").glob("*.yaml")
        if p.stem.startswith(("fig", "p2_"))
    ),
)
def test_figure_presets_compose(preset: str) -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("analyze", overrides=[f"experiment={preset}"], return_hydra_config=True)
    assert cfg.name == preset
    assert cfg.analysis.fn.startswith("dnn_modularity.analysis.")
