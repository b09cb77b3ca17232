"""A probe set of N <= C samples is refused, with one message, by train, analyze and prune."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as L
import pytest
from hydra import compose, initialize_config_dir

from dnn_modularity.data import DigitsDataModule
from dnn_modularity.data.probe import ProbeSizeError
from dnn_modularity.models.classifier import ImageClassifier
from dnn_modularity.runtime import CONF_DIR

MESSAGE = r"probe\.n=5 must be larger than the number of classes \(10, data=digits\)"


def _compose(config: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config, overrides=["data=digits", *overrides])


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    """An (almost untrained) ResNet-20 checkpoint for digits: one training step."""
    out = tmp_path_factory.mktemp("tiny")
    dm = DigitsDataModule(batch_size=32)
    module = ImageClassifier(
        {"name": "resnet20", "num_classes": 10, "in_channels": 1}, dm.mean, dm.std
    )
    trainer = L.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(out),
    )
    trainer.fit(module, datamodule=dm)
    trainer.save_checkpoint(str(out / "tiny.ckpt"))
    return out / "tiny.ckpt"


def test_train_refuses_probe_below_class_count_before_training(tmp_path: Path) -> None:
    from dnn_modularity.train import train

    cfg = _compose("train", "model=resnet20", "probe.n=5", f"run_dir={tmp_path}")
    with pytest.raises(ProbeSizeError, match=MESSAGE):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "modularity.csv").exists()


@pytest.mark.parametrize("analysis", ["curve", "adversarial"])
def test_analyze_refuses_probe_below_class_count(tiny_ckpt: Path, tmp_path: Path, analysis) -> None:
    from dnn_modularity.analyze import analyze

    cfg = _compose(
        "analyze", f"ckpt_path={tiny_ckpt}", f"analysis={analysis}", "probe.n=5",
        f"run_dir={tmp_path}",
    )  # fmt: skip
    with pytest.raises(ProbeSizeError, match=MESSAGE):
        analyze(cfg)
    assert not list(tmp_path.glob(f"{analysis}*.csv"))


def test_prune_refuses_probe_below_class_count_before_training(
    tiny_ckpt: Path, tmp_path: Path
) -> None:
    from dnn_modularity.prune import prune

    cfg = _compose("prune", f"ckpt_path={tiny_ckpt}", "probe.n=5", f"run_dir={tmp_path}")
    with pytest.raises(ProbeSizeError, match=MESSAGE):
        prune(cfg)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "pruning_table.csv").exists()
