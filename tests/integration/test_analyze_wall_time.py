"""The duration an analysis reports is the command's wall time, figure writing included."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import dnn_modularity.analysis.common as common
from dnn_modularity.analyze import CONF_DIR, analyze


def test_reported_seconds_cover_figure_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_save = common.atomic_save_figure

    def slow_save(*args, **kwargs):  # a figure that takes a second to write (like a ring grid)
        time.sleep(1.0)
        return real_save(*args, **kwargs)

    monkeypatch.setattr(common, "atomic_save_figure", slow_save)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "analyze",
            overrides=[
                "model=resnet20",  # untrained: no checkpoint needed
                "analysis=curve",
                "analysis.repeats=1",
                "analysis.random_init=false",
                "probe.n=30",
                f"run_dir={tmp_path}",
            ],
        )
    start = time.perf_counter()
    result = analyze(cfg)
    wall = time.perf_counter() - start
    assert wall - 0.25 <= result["seconds"] <= wall
    recorded = json.loads((tmp_path / "curve.json").read_text())["total_seconds"]
    assert recorded >= 1.0 and recorded >= result["seconds"] - 0.5
