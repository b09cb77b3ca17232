"""scikit-learn's bundled handwritten digits (8x8, 1 channel, 10 classes): the demo data."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset, TensorDataset

from dnn_modularity.data.base import ImageDataModule

__all__ = ["DigitsDataModule", "load_digits_tensors"]


def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as tensors.

    Returns:
        images: (1797, 1, 8, 8) float32 in [0, 1] (the raw 0..16 grey levels divided by 16).
        labels: (1797,) int64 in 0..9.
    """
    from sklearn.datasets import load_digits  # local: sklearn is slow to import

    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.as_tensor(bunch.target, dtype=torch.long)
    return images, labels


class DigitsDataModule(ImageDataModule):
    """The UCI/scikit-learn digits with a seeded, stratified train/val/test split.

    The three splits are disjoint (no test image is used for model selection). With the defaults
    (`val_fraction=0.1`, `test_fraction=0.3`) the test split holds 540 images (54 per class), enough
    for a class-balanced probe set of N = 500 (paper 1's N for CIFAR-10).

    Args:
        batch_size: Training batch size.
        val_fraction: Share of all images used for validation.
        test_fraction: Share of all images used for testing and probing.
        seed: Seed of the split (fixed: the split does not follow the training seed).
        **options: :class:`~dnn_modularity.data.base.ImageDataModule`'s options: DataLoader
            settings (``eval_batch_size``, ``num_workers``, ``pin_memory``,
            ``persistent_workers``, ``drop_last``) and ``num_classes``/``in_channels``/
            ``image_size``, checked against the data set's fixed values.
            In-memory tensors: no workers by default (fastest).
    """

    name = "digits"
    num_classes = 10
    in_channels = 1
    image_size = 8

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.1,
        test_fraction: float = 0.3,
        seed: int = 0,
        **options: Any,
    ) -> None:
        super().__init__(batch_size, **options)
        self.check_declared()
        if not (0.0 < test_fraction < 1.0 and 0.0 < val_fraction < 1.0):
            raise ValueError(
                f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in (0, 1)"
            )
        if val_fraction + test_fraction >= 0.9:
            raise ValueError(
                f"val_fraction + test_fraction = {val_fraction + test_fraction:.2f} leaves under "
                "10% of the digits for training; use smaller fractions"
            )
        self.val_fraction = float(val_fraction)
        self.test_fraction = float(test_fraction)
        self.seed = int(seed)
        self._split: dict[str, torch.Tensor] | None = None
        self._images, self._labels = load_digits_tensors()
        # Per-channel statistics of the training split only (no test leakage into the model).
        train_images = self._images[self.split_indices()["train"]]
        self.mean = (float(train_images.mean()),)
        self.std = (float(train_images.std()),)

    def split_indices(self) -> dict[str, torch.Tensor]:
        """Sorted indices of the `train`, `val` and `test` digits (disjoint, stratified)."""
        if self._split is None:
            # local: sklearn is slow to import (see load_digits_tensors)
            from sklearn.model_selection import train_test_split

            all_idx = torch.arange(self._labels.numel())
            rest, test = train_test_split(
                all_idx.numpy(),
                test_size=self.test_fraction,
                stratify=self._labels.numpy(),
                random_state=self.seed,
            )
            train, val = train_test_split(
                rest,
                test_size=self.val_fraction / (1.0 - self.test_fraction),
                stratify=self._labels.numpy()[rest],
                random_state=self.seed,
            )
            self._split = {
                name: torch.sort(torch.as_tensor(idx, dtype=torch.long)).values
                for name, idx in (("train", train), ("val", val), ("test", test))
            }
        return self._split

    def _make_datasets(self) -> tuple[Dataset, Dataset, Dataset]:
        split = self.split_indices()
        return tuple(  # type: ignore[return-value]
            TensorDataset(self._images[split[name]], self._labels[split[name]])
            for name in ("train", "val", "test")
        )

    def _test_targets(self) -> torch.Tensor:
        return self._labels[self.split_indices()["test"]]
