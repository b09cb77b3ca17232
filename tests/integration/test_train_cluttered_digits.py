"""The cluttered-digits demo preset end to end, and per-epoch training images inside a Trainer."""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dnn_modularity.data import ClutteredDigitsDataModule
from dnn_modularity.data.cluttered_digits import EpochSampler
from dnn_modularity.models.classifier import ImageClassifier
from dnn_modularity.train import CONF_DIR, train

PRESET = "experiment=train_demo_cluttered_digits"


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_demo_preset_trains_two_short_epochs(tmp_path: Path) -> None:
    overrides = [
        PRESET,
        "scheduler=onecycle",  # the one-cycle schedule, stepped per batch, on the same data
        "scheduler.max_lr=0.1",
        "module.scheduler_interval=step",
        "num_threads=1",  # the test process keeps its single thread
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=4",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "trainer.num_sanity_val_steps=0",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "probe.n=100",
        f"run_dir={tmp_path}",
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    result = train(cfg)
    assert math.isfinite(result["test"]["test/acc"])
    assert json.loads((tmp_path / "results.json").read_text())["fit_seconds"] > 0

    config = OmegaConf.load(tmp_path / "config.yaml")
    assert config.data.canvas_size == 32 and config.model.name == "resnet20"
    assert config.model.in_channels == 1
    rows = read_csv(tmp_path / "modularity.csv")
    epochs = Counter(int(r["epoch"]) for r in rows)
    assert set(epochs) == {0, 2} or set(epochs) == {0, 1, 2}  # initialisation and the last epoch
    assert len({r["layer"] for r in rows}) == 10  # ResNet-20 block taps: stem + 9 blocks
    assert all(math.isfinite(float(r["modularity"])) for r in rows)
    assert (tmp_path / "figures" / "modularity_curves.png").is_file()
    # The one-cycle schedule spans the run (total_steps: null -> 2 epochs x 4 batches): the LR
    # rises from max_lr / 25, then falls below it by the end.
    lrs = [float(r["lr-SGD"]) for r in read_csv(tmp_path / "metrics.csv") if r.get("lr-SGD")]
    max_lr = float(config.scheduler.max_lr)
    assert lrs and lrs[0] == pytest.approx(max_lr / 25) and lrs[-1] < max_lr


class _RecordBatches(L.Callback):
    """Keeps the first training batch and the sampler's epoch of every epoch."""

    def __init__(self) -> None:
        self.first: dict[int, torch.Tensor] = {}
        self.sampler_epochs: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            self.first[trainer.current_epoch] = batch[0].clone()
            sampler = trainer.train_dataloader.sampler
            assert isinstance(sampler, EpochSampler)
            self.sampler_epochs.append(sampler.epoch)


def test_trainer_feeds_new_canvases_every_epoch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    dm = ClutteredDigitsDataModule(batch_size=16)
    module = ImageClassifier(
        {"name": "resnet20", "num_classes": 10, "in_channels": 1}, dm.mean, dm.std
    )
    recorder = _RecordBatches()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=3,
        limit_train_batches=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=dm)
    assert recorder.sampler_epochs == [0, 1, 2]  # Lightning calls set_epoch on our sampler
    shown = [recorder.first[e] for e in range(3)]
    assert not torch.equal(shown[0], shown[1]) and not torch.equal(shown[1], shown[2])
    # The batch of epoch e is made of epoch e's canvases (decoded from the sampler's keys).
    sampler = EpochSampler(dm.train_set, seed=dm.seed)
    sampler.set_epoch(2)
    keys = list(sampler)[:16]
    assert torch.equal(shown[2], torch.stack([dm.train_set[k][0] for k in keys]))


def test_scheduler_total_steps_null_is_the_run_length() -> None:
    spec = {
        "_target_": "torch.optim.lr_scheduler.OneCycleLR",
        "_partial_": True,
        "max_lr": 0.1,
        "total_steps": None,
    }
    net = {"name": "resnet20", "num_classes": 10, "in_channels": 1}
    module = ImageClassifier(net, [0.5], [0.5], scheduler=spec, scheduler_interval="epoch")
    with pytest.raises(RuntimeError, match="total_steps=null needs a Trainer"):
        module.configure_optimizers()
    module.trainer = L.Trainer(accelerator="cpu", max_epochs=7, logger=False)
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert scheduler.total_steps == 7  # interval "epoch": one step per epoch
    assert module.hparams.scheduler["total_steps"] is None  # the stored spec stays generic
