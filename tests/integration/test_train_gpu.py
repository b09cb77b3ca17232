"""`train(cfg)` with ``trainer=gpu``: the monitor measures CUDA features; records and checkpoints
are those of a CPU run (skipped without CUDA)."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from test_train import FAST

from dnn_modularity.models.classifier import load_classifier
from dnn_modularity.train import CONF_DIR, train

FAST_GPU = [*FAST, "trainer=gpu"]  # the quick CPU runs of test_train, on the GPU


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_gpu_run_measures_every_layer_and_saves_a_cpu_loadable_checkpoint(
    tmp_path: Path, precision: str
) -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train", overrides=[*FAST_GPU, f"trainer.precision={precision}", f"run_dir={tmp_path}"]
        )
    result = train(cfg)
    assert 0.0 <= result["test"]["test/acc"] <= 1.0
    with (tmp_path / "modularity.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert Counter(r["epoch"] for r in rows) == {"0": 10, "1": 10, "2": 10}
    values = [float(r["modularity"]) for r in rows]
    assert all(math.isfinite(v) and -0.5 <= v <= 1.0 for v in values)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["test"] == pytest.approx(result["test"])
    module = load_classifier(tmp_path / "checkpoints" / "last.ckpt")  # onto the CPU
    assert next(module.parameters()).device.type == "cpu"
    assert torch.isfinite(module(torch.rand(2, 1, 8, 8))).all()
