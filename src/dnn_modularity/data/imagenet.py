"""ImageNet (ILSVRC-2012) from an ImageFolder tree, and paper 1's 50-class subset ImageNet50."""

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

__all__ = ["IMAGENET50_WNIDS", "ImageNet50DataModule", "ImageNetDataModule"]

#: The 50 ImageNet classes of paper 1, appendix B.1 ("ImageNet50"), in the paper's order.
IMAGENET50_WNIDS: tuple[str, ...] = (
    "n01443537", "n01484850", "n01491361", "n01494475", "n01496331",
    "n01498041", "n01514668", "n01514859", "n01518878", "n01530575",
    "n01531178", "n01532829", "n01534433", "n01537544", "n01558993",
    "n01560419", "n01580077", "n01582220", "n01592084", "n01601694",
    "n01608432", "n01614925", "n01616318", "n01632777", "n01667778",
    "n01688243", "n01728920", "n01773157", "n01795545", "n01847000",
    "n07768694", "n07802026", "n07831146", "n07836838", "n07860988",
    "n07871810", "n07873807", "n09193705", "n09229709", "n09246464",
    "n09256479", "n09288635", "n09332890", "n09399592", "n09421951",
    "n09428293", "n09468604", "n09472597", "n09835506", "n10148035",
)  # fmt: skip

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_HOW_TO_GET = (
    "Download ILSVRC-2012 from https://image-net.org (train and val archives), extract it as "
    "<data_dir>/train/<wnid>/*.JPEG and <data_dir>/val/<wnid>/*.JPEG (sort the validation images "
    "into class folders, e.g. with the widely used valprep.sh), then set data.data_dir=<data_dir>."
)


class _SubsetImageFolder(datasets.ImageFolder):
    """ImageFolder restricted to the given class folders; labels 0..C-1 in the given order."""

    def __init__(self, root: str, wnids: tuple[str, ...], **kwargs: object) -> None:
        self._wnids = wnids
        super().__init__(root, **kwargs)  # type: ignore[arg-type]

    def find_classes(self, directory: str | os.PathLike[str]) -> tuple[list[str], dict[str, int]]:
        present = {entry.name for entry in os.scandir(directory) if entry.is_dir()}
        missing = [w for w in self._wnids if w not in present]
        if missing:
            raise FileNotFoundError(
                f"{directory} lacks {len(missing)} of the {len(self._wnids)} ImageNet50 class "
                f"folders, e.g. {missing[:5]}. {_HOW_TO_GET}"
            )
        classes = list(self._wnids)
        return classes, {wnid: i for i, wnid in enumerate(classes)}


class ImageNetDataModule(ImageDataModule):
    """ImageNet from `<data_dir>/train` and `<data_dir>/val` ImageFolder trees (1000 classes).

    ImageNet's test labels are not public, so the official validation set is the test split (and,
    with `val_fraction=0`, also the validation split); `val_fraction > 0` holds out a stratified
    share of the training images for validation instead.

    Training: RandomResizedCrop(224) + RandomHorizontalFlip; evaluation: Resize(256) +
    CenterCrop(224) (torchvision's reference recipe). Images in [0, 1].

    Args:
        data_dir: Root holding `train/` and `val/` class folders.
        batch_size: Training batch size (paper 1: 256).
        val_fraction: See above.
        seed: Seed of the held-out split.
        image_size: Crop size (default 224).
        resize_size: Evaluation resize before the centre crop (default 256).
        **options: :class:`~dnn_modularity.data.base.ImageDataModule`'s options: DataLoader
            settings (``eval_batch_size``, ``num_workers``, ``pin_memory``,
            ``persistent_workers``, ``drop_last``) and ``num_classes``/``in_channels``/
            ``image_size``, checked against the data set's fixed values.
            Read from disk: 8 workers, pinned memory by default.

    Raises:
        FileNotFoundError: When `data_dir/train` or `data_dir/val` is missing (says how to get it).
    """

    name = "imagenet"
    num_classes = 1000
    in_channels = 3
    mean = IMAGENET_MEAN
    std = IMAGENET_STD
    _wnids: tuple[str, ...] | None = None
    loader_defaults: ClassVar[dict[str, Any]] = {
        "num_workers": 8,
        "pin_memory": True,
        "persistent_workers": True,
    }

    def __init__(
        self,
        data_dir: str | os.PathLike[str] = "data/imagenet",
        batch_size: int = 256,
        val_fraction: float = 0.0,
        seed: int = 0,
        image_size: int = 224,
        resize_size: int = 256,
        **options: Any,
    ) -> None:
        super().__init__(batch_size, **options)
        self.check_declared()
        self.data_dir = Path(data_dir)
        for split in ("train", "val"):
            if not (self.data_dir / split).is_dir():
                raise FileNotFoundError(
                    f"{self.name}: folder {self.data_dir / split} does not exist. {_HOW_TO_GET}"
                )
        self.image_size = int(image_size)
        self.resize_size = int(resize_size)
        self.val_fraction = float(val_fraction)
        self.seed = int(seed)

    def _folder(self, split: str, transform: transforms.Compose) -> datasets.ImageFolder:
        root = str(self.data_dir / split)
        if self._wnids is None:
            return datasets.ImageFolder(root, transform=transform)
        return _SubsetImageFolder(root, self._wnids, transform=transform)

    def train_transform(self) -> transforms.Compose:
        """RandomResizedCrop + horizontal flip, [0, 1] tensor."""
        return transforms.Compose(
            [
                transforms.RandomResizedCrop(self.image_size),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
            ]
        )

    def eval_transform(self) -> transforms.Compose:
        """Resize + centre crop, [0, 1] tensor."""
        return transforms.Compose(
            [
                transforms.Resize(self.resize_size),
                transforms.CenterCrop(self.image_size),
                transforms.ToTensor(),
            ]
        )

    def _make_datasets(self) -> tuple[Dataset, Dataset, Dataset]:
        train = self._folder("train", self.train_transform())
        test = self._folder("val", self.eval_transform())
        if self.val_fraction <= 0:
            return train, test, test
        keep, held = stratified_holdout(
            torch.as_tensor(train.targets), self.val_fraction, self.seed
        )
        train_plain = self._folder("train", self.eval_transform())
        return subset(train, keep), subset(train_plain, held), test

    def _test_targets(self) -> torch.Tensor:
        assert self.test_set is not None
        return torch.as_tensor(self.test_set.targets)  # type: ignore[attr-defined]


class ImageNet50DataModule(ImageNetDataModule):
    """ImageNet50 (paper 1, appendix B.1): the 50 listed classes read from an ImageNet folder.

    Labels are 0..49 in the order of `IMAGENET50_WNIDS`. Same transforms and arguments as
    `ImageNetDataModule`; a missing class folder raises `FileNotFoundError` naming it.
    """

    name = "imagenet50"
    num_classes = 50
    _wnids = IMAGENET50_WNIDS
