"""`ImageClassifier`: the one LightningModule (cross-entropy classification of [0, 1] images).

It knows nothing about modularity: the `ModularityMonitor` callback reads its `.model` (the
normalising wrapper around the tapped network `.net`). Paper 1's recipe (Sec. 4: SGD, lr 0.01,
momentum 0.9, weight decay 5e-3, batch 256, 150 epochs; the official code steps the LR by 0.1 at
epochs 50 and 100) is the default optimizer and lives in the experiment presets.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from dnn_modularity.models import Normalized, build_model

__all__ = [
    "DATA_KEYS",
    "DEFAULT_OPTIMIZER",
    "ImageClassifier",
    "check_model_fits_data",
    "data_identity",
    "load_classifier",
]

log = logging.getLogger(__name__)

#: What a checkpoint records of the data its network was trained on (`ImageClassifier(data=...)`).
DATA_KEYS = ("name", "num_classes", "in_channels", "image_size")

#: Paper 1, Sec. 4: SGD with lr 0.01, momentum 0.9, weight decay 5e-3.
DEFAULT_OPTIMIZER: dict[str, Any] = {
    "_target_": "torch.optim.SGD",
    "_partial_": True,
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 5e-3,
}


def _plain(value: Any) -> Any:
    """OmegaConf containers -> plain dict/list, so hyperparameters pickle and load anywhere."""
    if type(value).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _build_partial(spec: Mapping[str, Any] | Callable[..., Any], what: str) -> Callable[..., Any]:
    """A Hydra `_target_` mapping (partial or not) or a callable -> a callable taking the rest."""
    if callable(spec):
        return spec
    if isinstance(spec, Mapping) and "_target_" in spec:
        from hydra.utils import instantiate

        return instantiate(dict(spec), _partial_=True)
    raise ValueError(
        f"{what} must be a callable (e.g. functools.partial(torch.optim.SGD, lr=0.1)) or a "
        f"mapping with a '_target_' key, got {spec!r}"
    )


class ImageClassifier(L.LightningModule):
    """Cross-entropy classifier around a tapped network; inputs are images in [0, 1].

    Args:
        net_config: `{"name": <model name>, **kwargs}` for `dnn_modularity.models.build_model`
            (the `arch_config()` format), e.g. `{"name": "resnet56", "num_classes": 10}`.
        mean: Per-channel normalisation mean (the datamodule's `mean`).
        std: Per-channel normalisation std (the datamodule's `std`).
        optimizer: Optimizer factory taking the parameters: a Hydra mapping
            (`{"_target_": "torch.optim.SGD", "lr": 0.01, ...}`) or a callable; default paper 1's
            SGD (`DEFAULT_OPTIMIZER`).
        scheduler: LR-scheduler factory taking the optimizer (Hydra mapping or callable); None for
            a constant LR. A mapping with `total_steps: null` (e.g. `OneCycleLR`) gets the run's
            length in scheduler steps (`trainer.estimated_stepping_batches` with interval
            "step", `max_epochs` with "epoch").
        scheduler_interval: "epoch" or "step": when the scheduler steps.
        label_smoothing: Cross-entropy label smoothing.
        channels_last: Keep weights and inputs in channels-last memory format (faster convs on
            tensor cores with bf16/fp16).
        compile: `torch.compile` the forward used for training/eval (the uncompiled `.model`
            shares the weights and serves forward hooks, e.g. the modularity taps); a mapping is
            passed to `torch.compile` as keyword arguments.
        data: What the network is trained on (`data_identity(datamodule)`: name, classes,
            channels, image size), stored in the checkpoint so that analyses and pruning can
            tell when they are given other data.

    Attributes:
        net: The bare tapped network (logits from normalised inputs).
        model: `Normalized(net, mean, std)`: [0, 1] images -> logits.
    """

    def __init__(
        self,
        net_config: Mapping[str, Any],
        mean: Sequence[float],
        std: Sequence[float],
        optimizer: Mapping[str, Any] | Callable[..., Any] | None = None,
        scheduler: Mapping[str, Any] | Callable[..., Any] | None = None,
        scheduler_interval: str = "epoch",
        label_smoothing: float = 0.0,
        channels_last: bool = False,
        compile: bool | Mapping[str, Any] = False,
        data: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        net_config = _plain(net_config)
        if not isinstance(net_config, Mapping) or "name" not in net_config:
            raise ValueError(f"net_config must be a mapping with a 'name' key, got {net_config!r}")
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval={scheduler_interval!r} is not 'epoch' or 'step'")
        self.save_hyperparameters(
            {
                "net_config": dict(net_config),
                "mean": [float(m) for m in _plain(mean)],
                "std": [float(s) for s in _plain(std)],
                "optimizer": _plain(optimizer) if optimizer is not None else None,
                "scheduler": _plain(scheduler) if scheduler is not None else None,
                "scheduler_interval": scheduler_interval,
                "label_smoothing": float(label_smoothing),
                "channels_last": bool(channels_last),
                "compile": _plain(compile),
                "data": {k: _plain(v) for k, v in data.items()} if data else None,
            }
        )
        self.net: nn.Module = build_model(**net_config)
        self.model = Normalized(self.net, mean, std)
        self.num_classes = int(net_config.get("num_classes", 10))
        self.train_acc = MulticlassAccuracy(self.num_classes, top_k=1, average="micro")
        self.val_acc = MulticlassAccuracy(self.num_classes, top_k=1, average="micro")
        self.test_acc = MulticlassAccuracy(self.num_classes, top_k=1, average="micro")
        # Top-5 accuracy is only defined (and only informative) with at least 5 classes.
        # With 5 classes or fewer, top-5 accuracy is 100 % by construction: not reported.
        self.has_top5 = self.num_classes > 5
        if self.has_top5:
            self.val_acc_top5 = MulticlassAccuracy(self.num_classes, top_k=5, average="micro")
            self.test_acc_top5 = MulticlassAccuracy(self.num_classes, top_k=5, average="micro")
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        # Kept out of the module tree (plain __dict__ entry): registering the compiled wrapper would
        # duplicate every weight in the state_dict under `_orig_mod.`.
        self.__dict__["_compiled_model"] = None
        if compile:
            kwargs = dict(compile) if isinstance(compile, Mapping) else {}
            self.__dict__["_compiled_model"] = torch.compile(self.model, **kwargs)

    # --- forward -------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) images in [0, 1] -> (B, num_classes) logits."""
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        compiled = self.__dict__.get("_compiled_model")
        return compiled(x) if compiled is not None else self.model(x)

    def _step(self, batch: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        images, labels = batch[0], batch[1]
        logits = self(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.hparams.label_smoothing)
        return loss, logits, labels

    def training_step(self, batch: Sequence[Tensor], batch_idx: int) -> Tensor:
        """Cross-entropy on a training batch; logs `train/loss`, `train/acc` per epoch."""
        loss, logits, labels = self._step(batch)
        self.train_acc(logits, labels)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        """Logs `val/loss`, `val/acc` (and `val/acc_top5` with >= 5 classes)."""
        loss, logits, labels = self._step(batch)
        self.val_acc(logits, labels)
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, sync_dist=True)
        self.log("val/acc", self.val_acc, on_epoch=True, prog_bar=True)
        if self.has_top5:
            self.val_acc_top5(logits, labels)
            self.log("val/acc_top5", self.val_acc_top5, on_epoch=True)

    def test_step(self, batch: Sequence[Tensor], batch_idx: int) -> None:
        """Logs `test/loss`, `test/acc` (and `test/acc_top5` with >= 5 classes)."""
        loss, logits, labels = self._step(batch)
        self.test_acc(logits, labels)
        self.log("test/loss", loss, on_epoch=True, sync_dist=True)
        self.log("test/acc", self.test_acc, on_epoch=True)
        if self.has_top5:
            self.test_acc_top5(logits, labels)
            self.log("test/acc_top5", self.test_acc_top5, on_epoch=True)

    def predict_step(self, batch: Sequence[Tensor] | Tensor, batch_idx: int) -> Tensor:
        """Logits of a batch (images, or (images, labels))."""
        images = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self(images)

    # --- optimisation --------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        """Optimizer (and scheduler) from the factories given at construction."""
        spec = self.hparams.optimizer if self.hparams.optimizer is not None else DEFAULT_OPTIMIZER
        optimizer = _build_partial(spec, "optimizer")(self.parameters())
        if self.hparams.scheduler is None:
            return optimizer
        spec = self.hparams.scheduler
        if isinstance(spec, Mapping) and "total_steps" in spec and spec["total_steps"] is None:
            # `total_steps: null` (e.g. OneCycleLR): the whole run, counted in scheduler steps
            # (optimizer steps with interval "step": epochs, batch limits, accumulation and DDP
            # shards included).
            spec = {**spec, "total_steps": self._run_length()}
        scheduler = _build_partial(spec, "scheduler")(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.hparams.scheduler_interval},
        }

    def _run_length(self) -> int:
        """Scheduler steps in the whole run: optimizer steps ("step") or epochs ("epoch")."""
        trainer = self._trainer
        if trainer is None:
            raise RuntimeError("scheduler total_steps=null needs a Trainer (the run's length)")
        if self.hparams.scheduler_interval == "step":
            return int(trainer.estimated_stepping_batches)
        if trainer.max_epochs is None or trainer.max_epochs < 1:
            raise ValueError(
                f"scheduler total_steps=null with interval 'epoch' needs trainer.max_epochs >= 1, "
                f"got {trainer.max_epochs}"
            )
        return int(trainer.max_epochs)


def load_classifier(
    ckpt_path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> ImageClassifier:
    """Load an `ImageClassifier` checkpoint written by `dnn_modularity.train`, in eval mode.

    The file is read with `weights_only=True` (tensors and plain containers only; see
    `dnn_modularity.checkpoints`), and the module is rebuilt from the stored architecture dict,
    normalisation and loss options. The training recipe stored beside them (the optimizer and
    scheduler `_target_` mappings) is kept as plain data in `module.checkpoint_recipe` and never
    instantiated: the loaded module has no optimizer of its own (`hparams.optimizer` is None).
    Checkpoints whose hyperparameters sit under an older Lightning key (`hparams`,
    `module_arguments`) load too.

    Args:
        ckpt_path: A Lightning `.ckpt` file.
        map_location: Device to load the weights onto.

    Returns:
        The classifier (`.net` the tapped network, `.model` the normalising wrapper).

    Raises:
        FileNotFoundError: When the file does not exist.
        NotACheckpointError: When it is not a checkpoint written by this package (a text file,
            random bytes, a torch file without a classifier, or one holding code objects).
    """
    from dnn_modularity.checkpoints import NotACheckpointError, checkpoint_hparams, load_checkpoint

    checkpoint = load_checkpoint(ckpt_path, map_location=map_location)
    hparams = checkpoint_hparams(checkpoint)
    missing = [key for key in ("mean", "std") if key not in hparams]
    if missing:
        raise NotACheckpointError(
            f"{os.fspath(ckpt_path)!r} is not a checkpoint written by dnn_modularity: its "
            f"hyperparameters lack {missing} (has {sorted(hparams)})"
        )
    module = ImageClassifier(
        net_config=dict(hparams["net_config"]),
        mean=hparams["mean"],
        std=hparams["std"],
        optimizer=None,
        scheduler=None,
        scheduler_interval=str(hparams.get("scheduler_interval", "epoch")),
        label_smoothing=float(hparams.get("label_smoothing", 0.0)),
        channels_last=bool(hparams.get("channels_last", False)),
        compile=False,  # analysis and pruning forward through `.model` (hooks need it uncompiled)
        data=hparams.get("data"),  # None in checkpoints written before it was recorded
    )
    module.checkpoint_recipe = {
        "optimizer": hparams.get("optimizer"),
        "scheduler": hparams.get("scheduler"),
    }
    try:
        module.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as err:
        raise NotACheckpointError(
            f"the weights in {os.fspath(ckpt_path)!r} do not fit the network its "
            f"hyperparameters describe ({hparams['net_config']}): {err}"
        ) from None
    return module.to(torch.device(map_location)).eval()


def data_identity(datamodule: Any) -> dict[str, Any]:
    """What identifies a datamodule's data for a network: name, classes, channels, image size.

    Args:
        datamodule: One of `dnn_modularity.data`'s modules (attributes named in `DATA_KEYS`).

    Returns:
        `{key: value}` for the `DATA_KEYS` the datamodule has (plain str/int values).
    """
    out: dict[str, Any] = {}
    for key in DATA_KEYS:
        value = getattr(datamodule, key, None)
        if value is not None:
            out[key] = str(value) if key == "name" else int(value)
    return out


def check_model_fits_data(
    arch: Mapping[str, Any],
    datamodule: Any,
    where: str,
    trained_on: Mapping[str, Any] | None = None,
) -> None:
    """Refuse data the network cannot take; warn about data other than it was trained on.

    The one check that `analyze` and `prune` run before any work: classes and input channels
    must match the network's (`arch`, its `arch_config()`), else the run cannot work. A
    checkpoint that records its training data (`trained_on`) and names another dataset or image
    size still runs (a user may study other data on purpose), with a warning that says which
    `data=` the network was trained on.

    Args:
        arch: The network's `arch_config()` (`num_classes`, `in_channels`).
        datamodule: The data the command will use.
        where: What the network is, for messages (e.g. `checkpoint 'x.ckpt'`).
        trained_on: The checkpoint's `hparams.data` (`data_identity` at training), if recorded.

    Raises:
        ValueError: Classes or input channels differ, naming both values and the fix.
    """
    data_name = getattr(datamodule, "name", "?")
    trained_name = (trained_on or {}).get("name")
    fix = f"data={trained_name}" if trained_name else "the data the network was trained on"
    for key in ("num_classes", "in_channels"):
        want, got = getattr(datamodule, key, None), arch.get(key)
        if want is not None and got is not None and int(want) != int(got):
            raise ValueError(
                f"{where} has {key}={got} but data={data_name} has {key}={want}; pass {fix} "
                "(e.g. data=cifar10 for a CIFAR-10 network)"
            )
    if not trained_on:
        return
    here = data_identity(datamodule)
    differ = [
        f"{key} {trained_on[key]!r} (now {here[key]!r})"
        for key in ("name", "image_size")
        if key in trained_on and key in here and trained_on[key] != here[key]
    ]
    if differ:
        log.warning(
            "%s was trained on other data: %s; its curves on data=%s may say little about it. "
            "Pass %s to measure it on its own data.",
            where,
            ", ".join(differ),
            data_name,
            fix,
        )
