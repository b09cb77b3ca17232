"""Random images (torchvision `FakeData`) of any size/channels/classes: tests and benchmarks."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset
from torchvision import datasets, transforms

from dnn_modularity.data.base import ImageDataModule

__all__ = ["FakeDataModule"]


class FakeDataModule(ImageDataModule):
    """torchvision `FakeData` splits: deterministic per index, labels uniform at random.

    The images carry no class information, so accuracy stays at chance and modularity near 0:
    use it for plumbing, shapes and timing, not for results.

    Args:
        num_classes: Number of classes C.
        in_channels: Image channels.
        image_size: Square image side.
        train_size, val_size, test_size: Split sizes.
        batch_size: Training batch size.
        seed: Offset of the generator seeds (splits use disjoint index ranges).
        mean, std: Normalisation statistics reported to the model (default 0.5 / 0.25 per channel:
            roughly those of `FakeData`'s images).
        **loader: DataLoader options of :class:`~dnn_modularity.data.base.ImageDataModule`
            (``eval_batch_size``, ``num_workers``, ``pin_memory``, ``persistent_workers``,
            ``drop_last``).
    """

    name = "fake"

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        train_size: int = 256,
        val_size: int = 64,
        test_size: int = 128,
        batch_size: int = 32,
        seed: int = 0,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        **loader: Any,
    ) -> None:
        super().__init__(batch_size, **loader)
        for key, value in (
            ("num_classes", num_classes),
            ("in_channels", in_channels),
            ("image_size", image_size),
            ("train_size", train_size),
            ("val_size", val_size),
            ("test_size", test_size),
        ):
            if int(value) < 1:
                raise ValueError(f"data=fake: {key}={value} must be >= 1")
        if int(num_classes) < 2:
            raise ValueError(f"data=fake: num_classes={num_classes} must be >= 2")
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.image_size = int(image_size)
        self.sizes = {"train": int(train_size), "val": int(val_size), "test": int(test_size)}
        self.seed = int(seed)
        self.mean = tuple(mean) if mean is not None else (0.5,) * self.in_channels
        self.std = tuple(std) if std is not None else (0.25,) * self.in_channels
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise ValueError(
                f"data=fake: mean={self.mean} and std={self.std} need in_channels="
                f"{self.in_channels} entries"
            )
        self._test_labels: torch.Tensor | None = None

    def _split(self, name: str, offset: int) -> datasets.FakeData:
        return datasets.FakeData(
            size=self.sizes[name],
            image_size=(self.in_channels, self.image_size, self.image_size),
            num_classes=self.num_classes,
            transform=transforms.ToTensor(),
            random_offset=self.seed + offset,
        )

    def _make_datasets(self) -> tuple[Dataset, Dataset, Dataset]:
        # Disjoint seed ranges: FakeData seeds each item with `index + random_offset`.
        n_train, n_val = self.sizes["train"], self.sizes["val"]
        return (
            self._split("train", 0),
            self._split("val", n_train),
            self._split("test", n_train + n_val),
        )

    def _test_targets(self) -> torch.Tensor:
        if self._test_labels is None:
            assert self.test_set is not None
            dataset = self.test_set
            # FakeData draws item i's image, then its label, from a generator seeded with
            # i + random_offset: drawing the same numbers here gives the labels without building
            # the images (~100x faster; ProbeSet.from_datamodule checks the two agree).
            shape, offset = dataset.image_size, dataset.random_offset  # type: ignore[attr-defined]
            labels = []
            for index in range(len(dataset)):  # type: ignore[arg-type]
                generator = torch.Generator().manual_seed(index + offset)
                torch.randn(*shape, generator=generator)
                labels.append(torch.randint(0, self.num_classes, (1,), generator=generator))
            self._test_labels = torch.cat(labels) if labels else torch.empty(0, dtype=torch.long)
        return self._test_labels
