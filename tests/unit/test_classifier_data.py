"""A checkpoint records the data its network was trained on; analyze/prune check it."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from dnn_modularity.models.classifier import (
    ImageClassifier,
    check_model_fits_data,
    data_identity,
    load_classifier,
)

NET = {"name": "resnet20", "num_classes": 10, "in_channels": 1}


def _data(name: str = "cluttered_digits", image_size: int = 32, **kw) -> SimpleNamespace:
    return SimpleNamespace(
        name=name, num_classes=kw.get("num_classes", 10), in_channels=1, image_size=image_size
    )


def test_the_checkpoint_keeps_what_the_network_was_trained_on(tmp_path: Path) -> None:
    module = ImageClassifier(NET, [0.5], [0.25], data=data_identity(_data()))
    path = tmp_path / "x.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    loaded = load_classifier(path)
    assert loaded.hparams.data == {
        "name": "cluttered_digits",
        "num_classes": 10,
        "in_channels": 1,
        "image_size": 32,
    }


def test_classes_or_channels_that_differ_are_refused_naming_the_training_data() -> None:
    trained_on = data_identity(_data())
    with pytest.raises(
        ValueError, match=r"num_classes=10 but data=cifar100.*data=cluttered_digits"
    ):
        check_model_fits_data(NET, _data("cifar100", num_classes=100), "checkpoint 'x'", trained_on)


def test_other_data_of_the_same_shape_runs_with_a_warning(caplog) -> None:
    trained_on = data_identity(_data())
    with caplog.at_level(logging.WARNING):
        check_model_fits_data(NET, _data("digits", image_size=8), "checkpoint 'x'", trained_on)
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    text = record.getMessage()
    assert "'cluttered_digits' (now 'digits')" in text and "image_size 32 (now 8)" in text
    assert "Pass data=cluttered_digits" in text
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # the same data, or an older checkpoint: silent
        check_model_fits_data(NET, _data(), "checkpoint 'x'", trained_on)
        check_model_fits_data(NET, _data("digits", image_size=8), "checkpoint 'x'", None)
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
