"""CIFAR-10 / CIFAR-100 via torchvision, with the official code's augmentation.

Official code of paper 1 (`Data/load_data.py`): training images get `RandomCrop(32, padding=4)` and
`RandomHorizontalFlip()` (CIFAR-100 also `RandomRotation(15)`); the statistics below are the ones it
normalises with. Here the loaders yield [0, 1] images and the model normalises (`Normalized`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.utils.data import Dataset
from torchvision import datasets, transforms

from dnn_modularity.data.base import (
    ImageDataModule,
    stratified_holdout,
    subset,
)

__all__ = ["CIFAR10DataModule", "CIFAR100DataModule"]


class _CIFARDataModule(ImageDataModule):
    """Common CIFAR logic; see the subclasses.

    Args:
        data_dir: Folder holding (or receiving) torchvision's `cifar-10-batches-py` /
            `cifar-100-python`.
        download: Let torchvision download the archive (rank 0 only, in `prepare_data`).
        batch_size: Training batch size (paper 1: 256).
        val_fraction: 0 (default) validates on the test split, like the official code (which picks
            the checkpoint with the best test accuracy); > 0 holds out that share of each training
            class instead, so that model selection never sees the test split.
        seed: Seed of the held-out split.
        rotation: Degrees of `RandomRotation` in training (official: 0 for CIFAR-10, 15 for
            CIFAR-100).
        augment: Use the training augmentation at all.
        **options: :class:`~dnn_modularity.data.base.ImageDataModule`'s options: DataLoader
            settings (``eval_batch_size``, ``num_workers``, ``pin_memory``,
            ``persistent_workers``, ``drop_last``) and ``num_classes``/``in_channels``/
            ``image_size``, checked against the data set's fixed values.
            Read from disk: 4 workers, pinned memory by default.
    """

    in_channels = 3
    image_size = 32
    _tv_class: type[datasets.CIFAR10]
    _folder: str
    _default_rotation = 0.0
    loader_defaults: ClassVar[dict[str, Any]] = {
        "num_workers": 4,
        "pin_memory": True,
        "persistent_workers": True,
    }

    def __init__(
        self,
        data_dir: str | os.PathLike[str] = "data/cifar",
        download: bool = True,
        batch_size: int = 256,
        val_fraction: float = 0.0,
        seed: int = 0,
        rotation: float | None = None,
        augment: bool = True,
        **options: Any,
    ) -> None:
        super().__init__(batch_size, **options)
        self.check_declared()
        self.data_dir = Path(data_dir)
        self.download = bool(download)
        self.val_fraction = float(val_fraction)
        self.seed = int(seed)
        self.rotation = float(self._default_rotation if rotation is None else rotation)
        self.augment = bool(augment)
        if not self.download and not (self.data_dir / self._folder).is_dir():
            raise FileNotFoundError(
                f"{self.name} not found: {self.data_dir / self._folder} does not exist. Set "
                f"data.download=true to let torchvision download it into {self.data_dir}, or point "
                f"data.data_dir at the folder that contains '{self._folder}' "
                "(https://www.cs.toronto.edu/~kriz/cifar.html)."
            )

    def train_transform(self) -> transforms.Compose:
        """Official augmentation: RandomCrop(32, 4), RandomHorizontalFlip (+ rotation), ToTensor."""
        ops: list[object] = []
        if self.augment:
            ops += [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
            if self.rotation:
                ops.append(transforms.RandomRotation(self.rotation))
        ops.append(transforms.ToTensor())
        return transforms.Compose(ops)

    def prepare_data(self) -> None:
        """Download both splits (Lightning calls this on one process per node)."""
        if self.download:
            for train in (True, False):
                self._tv_class(root=str(self.data_dir), train=train, download=True)

    def _make_datasets(self) -> tuple[Dataset, Dataset, Dataset]:
        plain = transforms.ToTensor()
        train = self._tv_class(
            root=str(self.data_dir), train=True, transform=self.train_transform()
        )
        test = self._tv_class(root=str(self.data_dir), train=False, transform=plain)
        if self.val_fraction <= 0:
            return train, test, test
        labels = torch.as_tensor(train.targets)
        keep, held = stratified_holdout(labels, self.val_fraction, self.seed)
        # The held-out images are evaluated without augmentation: a second view of the files.
        train_plain = self._tv_class(root=str(self.data_dir), train=True, transform=plain)
        return subset(train, keep), subset(train_plain, held), test

    def _test_targets(self) -> torch.Tensor:
        assert self.test_set is not None
        return torch.as_tensor(self.test_set.targets)  # type: ignore[attr-defined]


class CIFAR10DataModule(_CIFARDataModule):
    """CIFAR-10: 50k train / 10k test, 32x32x3, 10 classes. Statistics of the official code."""

    name = "cifar10"
    num_classes = 10
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2023, 0.1994, 0.2010)
    _tv_class = datasets.CIFAR10
    _folder = "cifar-10-batches-py"


class CIFAR100DataModule(_CIFARDataModule):
    """CIFAR-100: 50k train / 10k test, 32x32x3, 100 classes; official code rotates by 15°."""

    name = "cifar100"
    num_classes = 100
    mean = (0.49139968, 0.48215827, 0.44653124)
    std = (0.24703233, 0.24348505, 0.26158768)
    _tv_class = datasets.CIFAR100
    _folder = "cifar-100-python"
    _default_rotation = 15.0
