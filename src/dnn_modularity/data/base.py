"""Shared LightningDataModule plumbing: loaders, held-out validation split, metadata checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import lightning.pytorch as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset

__all__ = ["ImageDataModule", "check_fixed_metadata", "stratified_holdout"]


def check_fixed_metadata(name: str, **pairs: tuple[int | None, int]) -> None:
    """Check user-given metadata (e.g. `num_classes` from the config) against fixed values.

    The data configs carry `num_classes`/`in_channels`/`image_size` so that model configs can
    interpolate them (`num_classes: ${data.num_classes}`); a mismatching override is a mistake
    that would otherwise surface later as a shape error.

    Args:
        name: Dataset name for the message.
        **pairs: `key=(given, expected)`; `given=None` means "not specified".

    Raises:
        ValueError: When a given value differs from the dataset's fixed one.
    """
    for key, (given, expected) in pairs.items():
        if given is not None and int(given) != int(expected):
            raise ValueError(
                f"data={name}: {key}={given} does not match the dataset ({key}={expected}); "
                f"remove the override or use data={name} with {key}={expected}"
            )


def stratified_holdout(
    labels: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices `0..M-1` into (keep, held-out) with `fraction` of every class held out.

    Args:
        labels: (M,) integer labels.
        fraction: Share of each class to hold out, in [0, 1).
        seed: Seed of the per-class permutations.

    Returns:
        Two sorted LongTensors of indices: kept (M - H,) and held out (H,).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction={fraction} must be in [0, 1)")
    generator = torch.Generator().manual_seed(int(seed))
    keep, held = [], []
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(members.numel(), generator=generator)]
        n_held = round(fraction * members.numel())
        held.append(members[:n_held])
        keep.append(members[n_held:])
    return torch.sort(torch.cat(keep)).values, torch.sort(torch.cat(held)).values


class ImageDataModule(L.LightningDataModule):
    """Base class: images in [0, 1] (normalisation happens inside the model, `Normalized`).

    Subclasses set the class attributes / instance fields `name`, `num_classes`, `in_channels`,
    `image_size`, `mean`, `std` and implement `_make_datasets()` returning the train, val and test
    datasets, and `_test_targets()`.

    Attributes:
        train_set, val_set, test_set: Datasets after `setup()`; items are `(image (C, H, W) in
            [0, 1], label int)`.
    """

    name: str = "base"
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    #: This data set's defaults of the loader options left unset (None): the in-memory data
    #: sets load fastest in the main process, the ones read from disk override them.
    loader_defaults: ClassVar[dict[str, Any]] = {
        "num_workers": 0,
        "pin_memory": False,
        "persistent_workers": False,
    }

    def __init__(
        self,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        persistent_workers: bool | None = None,
        drop_last: bool = False,
        num_classes: int | None = None,
        in_channels: int | None = None,
        image_size: int | None = None,
    ) -> None:
        """Options every data module takes (subclasses pass them on as ``**options``).

        Args:
            batch_size: Training batch size.
            eval_batch_size: Batch size of val/test loaders (default ``batch_size``).
            num_workers: DataLoader workers (None: :attr:`loader_defaults`).
            pin_memory: Pinned host memory (None: :attr:`loader_defaults`).
            persistent_workers: Keep workers between epochs (None: :attr:`loader_defaults`;
                off without workers).
            drop_last: Drop the last incomplete training batch.
            num_classes: The config's value, checked against the data set's
                (:meth:`check_declared`; None: not given).
            in_channels: As ``num_classes``.
            image_size: As ``num_classes``.
        """
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        given = {
            "num_workers": num_workers,
            "pin_memory": pin_memory,
            "persistent_workers": persistent_workers,
        }
        options = {k: self.loader_defaults[k] if v is None else v for k, v in given.items()}
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(options["num_workers"])
        self.pin_memory = bool(options["pin_memory"])
        self.persistent_workers = bool(options["persistent_workers"]) and self.num_workers > 0
        self.drop_last = bool(drop_last)
        self._declared = {
            "num_classes": num_classes,
            "in_channels": in_channels,
            "image_size": image_size,
        }
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def check_declared(self) -> None:
        """Check the config's ``num_classes``/``in_channels``/``image_size`` against the data set.

        Subclasses call it once their own values are set.

        Raises:
            ValueError: A given value that differs (:func:`check_fixed_metadata`).
        """
        check_fixed_metadata(
            self.name,
            **{k: (v, getattr(self, k)) for k, v in self._declared.items() if v is not None},
        )

    # --- to implement -------------------------------------------------------------------------
    def _make_datasets(self) -> tuple[Dataset, Dataset, Dataset]:
        raise NotImplementedError(f"{type(self).__name__} must implement _make_datasets()")

    def _test_targets(self) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} must implement _test_targets()")

    # --- Lightning hooks ----------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        """Build the three datasets once (idempotent; every stage uses the same objects)."""
        if self.train_set is None:
            self.train_set, self.val_set, self.test_set = self._make_datasets()

    def _loader(self, dataset: Dataset | None, *, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}: dataset missing after setup()")
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=self.drop_last and train,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented training batches."""
        self.setup()
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches (unaugmented, in order)."""
        self.setup()
        return self._loader(self.val_set, train=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches (unaugmented, in order)."""
        self.setup()
        return self._loader(self.test_set, train=False)

    # --- probe-set access ---------------------------------------------------------------------
    def probe_dataset(self) -> Dataset:
        """The unaugmented test split: where probe sets are drawn from (paper 1 Sec. 3.2)."""
        self.setup()
        assert self.test_set is not None
        return self.test_set

    def test_labels(self) -> torch.Tensor:
        """(M,) LongTensor: the labels of `probe_dataset()`, in its order (no image decoding)."""
        self.setup()
        return self._test_targets().long()

    def describe(self) -> dict[str, object]:
        """Metadata for run records."""
        fixed = ("name", "num_classes", "in_channels", "image_size")
        return {
            **{key: getattr(self, key) for key in fixed},
            "mean": list(self.mean),
            "std": list(self.std),
        }


def subset(dataset: Dataset, indices: Sequence[int] | torch.Tensor) -> Subset:
    """`torch.utils.data.Subset` taking a tensor or a sequence of indices."""
    if isinstance(indices, torch.Tensor):
        indices = indices.tolist()
    return Subset(dataset, list(indices))
