"""``model=torchvision:<name>`` / ``model=timm:<name>`` on the command line (Hydra plugin)."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import MissingConfigException
from omegaconf import OmegaConf

from dnn_modularity.analyze import CONF_DIR, analyze


def _compose(config: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config, overrides=overrides)


def test_external_names_are_model_choices_of_every_command() -> None:
    for config in ("train", "analyze"):
        cfg = _compose(config, ["model=torchvision:resnet18", "data=digits"])
        assert OmegaConf.to_container(cfg.model, resolve=True) == {
            "name": "torchvision:resnet18",
            "num_classes": 10,
            "in_channels": 1,
        }
    assert _compose("train", ["model=timm:resnet18"]).model.name == "timm:resnet18"
    assert _compose("train", ["model=resnet20"]).model.name == "resnet20"  # zoo files still win
    with pytest.raises(MissingConfigException, match="model/keras:resnet18"):
        _compose("train", ["model=keras:resnet18"])


def test_diagnostics_of_an_untrained_torchvision_model_by_name(tmp_path) -> None:
    cfg = _compose(
        "analyze",
        [
            "model=torchvision:resnet18",
            "data=digits",
            "analysis=diagnostics",
            "analysis.which=[knn_acc]",
            "analysis.compute_M=false",
            "probe.n=60",
            "probe.taps='re:layer[34]\\.\\d'",
            f"run_dir={tmp_path}",
        ],
    )
    result = analyze(cfg)
    meta = OmegaConf.load(tmp_path / "config.yaml")
    assert meta.model.name == "torchvision:resnet18"
    assert list(result["figures"]) == ["separability_curves"]
    record = json.loads((tmp_path / "diagnostics.json").read_text())
    assert record["layers"] == ["layer3.0", "layer3.1", "layer4.0", "layer4.1"]
    assert (
        record["model"] == "torchvision:resnet18" and record["settings"]["variant"] == "random_init"
    )
