"""Cluttered digits: scikit-learn's digits, upscaled, placed on a noisy 32x32 canvas with clutter.

On the plain 8x8 digits the input is already nearly class-separated (the stem's modularity is
~0.85), so a modularity curve has little room to rise with depth. Here each image is a harder
recognition problem built from the same bundled digits (no download):

1. the 8x8 digit is upscaled (bilinear) to `digit_size` x `digit_size` (16x16);
2. it is placed at a uniformly random position on a black `canvas_size` x `canvas_size` canvas;
3. `num_fragments` (4) `fragment_size` x `fragment_size` (6x6) patches cut at random positions
   from upscaled digits of OTHER classes are overlaid (pixel-wise maximum) at random positions;
4. Gaussian noise (`noise_std`, 0.1) is added and the result clipped to [0, 1].

The source digits are split (seeded, stratified) into disjoint train / val / test pools, so test
images show handwriting never seen in training, and clutter is cut from the same pool only.

Training images are regenerated every epoch: image `i` of epoch `e` (source digit `i mod P` of the
P training digits) depends only on (`seed`, `e`, `i`). The training loader's sampler
(`EpochSampler`, a `DistributedSampler`) yields keys `e * len + i` and the dataset decodes the epoch
from the key, so every rank and every loader worker draws the same image for the same key, and a
resumed run sees the same images as an uninterrupted one. Validation and test images (one per
source digit) are generated once from the seed and never change: the probe set is fixed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, TensorDataset

from dnn_modularity.data.base import ImageDataModule, check_fixed_metadata
from dnn_modularity.data.digits import load_digits_tensors

__all__ = [
    "CanvasSpec",
    "ClutteredDigitsDataModule",
    "EpochCanvases",
    "EpochSampler",
    "render_canvases",
]

# Streams of the seed sequence: each split (and each training epoch) gets unrelated random numbers.
_TRAIN, _VAL, _TEST = 0, 1, 2


def _generator(seed: int, stream: int, epoch: int = 0) -> torch.Generator:
    # SeedSequence mixes the triple, so neighbouring seeds/epochs give unrelated draws.
    state = np.random.SeedSequence([int(seed), int(stream), int(epoch)]).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class CanvasSpec:
    """Geometry and corruption of the canvases (validated once).

    Args:
        canvas_size: Side of the square canvas (the image size).
        digit_size: Side of the upscaled digit (<= canvas_size).
        num_fragments: Clutter patches per image (>= 0).
        fragment_size: Side of a clutter patch (<= digit_size).
        noise_std: Standard deviation of the additive Gaussian noise (>= 0).
    """

    def __init__(
        self,
        canvas_size: int = 32,
        digit_size: int = 16,
        num_fragments: int = 4,
        fragment_size: int = 6,
        noise_std: float = 0.1,
    ) -> None:
        if not 8 <= int(digit_size) <= int(canvas_size):
            raise ValueError(
                f"data=cluttered_digits: digit_size={digit_size} must be in [8, canvas_size="
                f"{canvas_size}]"
            )
        if not 1 <= int(fragment_size) <= int(digit_size):
            raise ValueError(
                f"data=cluttered_digits: fragment_size={fragment_size} must be in [1, digit_size="
                f"{digit_size}]"
            )
        if int(num_fragments) < 0 or float(noise_std) < 0:
            raise ValueError(
                f"data=cluttered_digits: num_fragments={num_fragments} and noise_std={noise_std} "
                "must be >= 0"
            )
        self.canvas_size = int(canvas_size)
        self.digit_size = int(digit_size)
        self.num_fragments = int(num_fragments)
        self.fragment_size = int(fragment_size)
        self.noise_std = float(noise_std)

    def as_dict(self) -> dict[str, Any]:
        """The settings, for run records."""
        return dict(vars(self))


def _overlay(canvas: Tensor, patches: Tensor, top: Tensor, left: Tensor) -> None:
    """canvas[b, top_b:top_b+s, left_b:left_b+s] = max(itself, patches[b]) for every b, in place.

    Args:
        canvas: (B, H, W) canvases.
        patches: (B, s, s) patches.
        top: (B,) integer row of each patch's top-left corner (patches must fit).
        left: (B,) integer column of each patch's top-left corner.
    """
    size = patches.shape[-1]
    offsets = torch.arange(size)
    rows = (top[:, None] + offsets)[:, :, None]  # (B, s, 1)
    cols = (left[:, None] + offsets)[:, None, :]  # (B, 1, s)
    batch = torch.arange(canvas.shape[0])[:, None, None]
    canvas[batch, rows, cols] = torch.maximum(canvas[batch, rows, cols], patches)


def render_canvases(
    digits: Tensor,
    labels: Tensor,
    sources: Tensor,
    spec: CanvasSpec,
    generator: torch.Generator,
) -> Tensor:
    """Render one cluttered canvas per entry of `sources` (vectorised over the batch).

    Args:
        digits: (P, S, S) upscaled pool digits in [0, 1] (S = spec.digit_size).
        labels: (P,) their classes.
        sources: (B,) indices into the pool: the digit shown in each canvas.
        spec: Canvas geometry and corruption.
        generator: Seeded generator: the only source of randomness.

    Returns:
        (B, 1, H, H) float32 images in [0, 1] (H = spec.canvas_size).
    """
    n = int(sources.numel())
    h, s, f = spec.canvas_size, spec.digit_size, spec.fragment_size
    canvas = torch.zeros(n, h, h)
    top, left = torch.randint(0, h - s + 1, (2, n), generator=generator)
    _overlay(canvas, digits[sources], top, left)

    # Fragments of other classes: clutter carries no evidence for the label.
    classes, class_of = torch.unique(labels, return_inverse=True)
    order = torch.argsort(class_of, stable=True)  # pool indices grouped by class
    counts = torch.bincount(class_of, minlength=classes.numel())
    starts = torch.cumsum(counts, 0) - counts
    n_classes = classes.numel()
    own = class_of[sources]
    for _ in range(spec.num_fragments):
        if n_classes > 1:
            other = (own + torch.randint(1, n_classes, (n,), generator=generator)) % n_classes
        else:  # a one-class pool has no other class: cut from any digit
            other = own
        pick = (torch.rand(n, generator=generator) * counts[other]).long()
        donor = order[starts[other] + torch.minimum(pick, counts[other] - 1)]
        cut_top, cut_left = torch.randint(0, s - f + 1, (2, n), generator=generator)
        rows = (cut_top[:, None] + torch.arange(f))[:, :, None]
        cols = (cut_left[:, None] + torch.arange(f))[:, None, :]
        patches = digits[donor[:, None, None], rows, cols]  # (n, f, f)
        at_top, at_left = torch.randint(0, h - f + 1, (2, n), generator=generator)
        _overlay(canvas, patches, at_top, at_left)

    if spec.noise_std > 0:
        canvas += spec.noise_std * torch.randn(canvas.shape, generator=generator)
    return canvas.clamp_(0.0, 1.0).unsqueeze(1)


class EpochCanvases(Dataset):
    """Training canvases regenerated every epoch; the key `e * len(self) + i` is image i of epoch e.

    Keys below `len(self)` are epoch 0 (so a plain sequential loader works too). A whole epoch is
    rendered at once (vectorised, a few ms) on the first access to it and cached.

    Args:
        digits: (P, S, S) upscaled training-pool digits.
        labels: (P,) their labels.
        size: Images per epoch; image i shows pool digit `i mod P`.
        spec: Canvas geometry and corruption.
        seed: Data seed.
    """

    def __init__(
        self, digits: Tensor, labels: Tensor, size: int, spec: CanvasSpec, seed: int
    ) -> None:
        self.digits, self.pool_labels = digits, labels
        self.sources = torch.arange(int(size)) % digits.shape[0]
        self.labels = labels[self.sources]
        self.spec, self.seed = spec, int(seed)
        self._epoch: int | None = None
        self._images: Tensor | None = None

    def __len__(self) -> int:
        return int(self.sources.numel())

    def images(self, epoch: int) -> Tensor:
        """(len, 1, H, H) all images of `epoch` (deterministic given seed and epoch)."""
        if epoch < 0:
            raise ValueError(f"epoch={epoch} must be >= 0")
        if self._epoch != epoch:
            generator = _generator(self.seed, _TRAIN, epoch)
            self._images = render_canvases(
                self.digits, self.pool_labels, self.sources, self.spec, generator
            )
            self._epoch = epoch
        assert self._images is not None
        return self._images

    def __getitem__(self, key: int) -> tuple[Tensor, Tensor]:
        epoch, index = divmod(int(key), len(self))
        return self.images(epoch)[index], self.labels[index]


class EpochSampler(DistributedSampler):
    """A `DistributedSampler` over `EpochCanvases` yielding keys `epoch * len + i`.

    Lightning calls `set_epoch` on it at the start of every training epoch (with the true epoch,
    also after a resume) and, since it already is a `DistributedSampler`, does not replace it under
    DDP: rank r gets its own shard of a permutation seeded by (seed, epoch), and every rank
    decodes the same images for the same keys.

    Args:
        dataset: The training canvases.
        num_replicas: World size (1 without DDP).
        rank: This process's global rank.
        shuffle: Shuffle (seeded by seed + epoch).
        seed: Shuffle seed.
        drop_last: Drop the tail that does not divide evenly among ranks (else pad by repeating).
    """

    def __init__(
        self,
        dataset: EpochCanvases,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        super().__init__(
            dataset,
            num_replicas=num_replicas,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )

    def __iter__(self) -> Iterator[int]:
        size = len(self.dataset)  # type: ignore[arg-type]
        offset = self.epoch * size
        return (offset + int(i) for i in super().__iter__())


class ClutteredDigitsDataModule(ImageDataModule):
    """Cluttered, noisy 32x32 canvases of scikit-learn's digits (1 channel, 10 classes).

    Source digits are split like `DigitsDataModule` (seeded, stratified: with the defaults 1077
    train, 180 val and 540 test digits, 54 per class: enough for a class-balanced probe set of
    N = 500). Validation and test hold one fixed canvas per source digit; training draws
    `train_size` new canvases every epoch (see the module docstring).

    Args:
        batch_size: Training batch size.
        train_size: Training images per epoch (None: one per training digit).
        canvas_size, digit_size, num_fragments, fragment_size, noise_std: See `CanvasSpec`.
        val_fraction: Share of the source digits used for validation images.
        test_fraction: Share of the source digits used for test (and probe) images.
        seed: Seed of the split, of the fixed val/test canvases and of the training canvases.
        eval_batch_size: Batch size of val/test loaders (default `batch_size`).
        num_workers: DataLoader workers (0 is fastest: rendering an epoch takes milliseconds).
        num_classes, in_channels, image_size: Optional checks against 10 / 1 / canvas_size.
    """

    name = "cluttered_digits"
    num_classes = 10
    in_channels = 1

    def __init__(
        self,
        batch_size: int = 128,
        train_size: int | None = None,
        canvas_size: int = 32,
        digit_size: int = 16,
        num_fragments: int = 4,
        fragment_size: int = 6,
        noise_std: float = 0.1,
        val_fraction: float = 0.1,
        test_fraction: float = 0.3,
        seed: int = 0,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        num_classes: int | None = None,
        in_channels: int | None = None,
        image_size: int | None = None,
        **loader_kwargs: bool,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            **loader_kwargs,
        )
        self.spec = CanvasSpec(canvas_size, digit_size, num_fragments, fragment_size, noise_std)
        self.image_size = self.spec.canvas_size
        check_fixed_metadata(
            self.name,
            num_classes=(num_classes, 10),
            in_channels=(in_channels, 1),
            image_size=(image_size, self.image_size),
        )
        if train_size is not None and int(train_size) < 1:
            raise ValueError(f"data=cluttered_digits: train_size={train_size} must be >= 1 or null")
        # The split of the source digits is DigitsDataModule's (same fractions, same seed).
        from dnn_modularity.data.digits import DigitsDataModule

        self._split = DigitsDataModule(
            val_fraction=val_fraction, test_fraction=test_fraction, seed=seed
        ).split_indices()
        self.seed = int(seed)
        images, self._labels = load_digits_tensors()
        size = self.spec.digit_size
        self._digits = F.interpolate(
            images, size=(size, size), mode="bilinear", align_corners=False
        ).squeeze(1)  # (1797, S, S); bilinear weights are convex: values stay in [0, 1]
        self.train_size = int(train_size) if train_size is not None else len(self._split["train"])
        train = self._make_train()
        # Statistics of the training images (epoch 0): no test leakage into the model.
        first = train.images(0)
        self.mean = (float(first.mean()),)
        self.std = (float(first.std()),)

    def split_indices(self) -> dict[str, Tensor]:
        """Sorted indices (into the 1797 digits) of the `train`, `val` and `test` source pools."""
        return self._split

    def _pool(self, name: str) -> tuple[Tensor, Tensor]:
        idx = self._split[name]
        return self._digits[idx], self._labels[idx]

    def _make_train(self) -> EpochCanvases:
        digits, labels = self._pool("train")
        return EpochCanvases(digits, labels, self.train_size, self.spec, self.seed)

    def _fixed(self, name: str, stream: int) -> TensorDataset:
        digits, labels = self._pool(name)
        sources = torch.arange(labels.numel())
        images = render_canvases(digits, labels, sources, self.spec, _generator(self.seed, stream))
        return TensorDataset(images, labels)

    def _make_datasets(self) -> tuple[Dataset, Dataset, Dataset]:
        return self._make_train(), self._fixed("val", _VAL), self._fixed("test", _TEST)

    def _test_targets(self) -> Tensor:
        return self._labels[self._split["test"]]

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of this epoch's canvases (this rank's shard under DDP)."""
        self.setup()
        assert isinstance(self.train_set, EpochCanvases)
        trainer = getattr(self, "trainer", None)
        world, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        sampler = EpochSampler(self.train_set, num_replicas=world, rank=rank, seed=self.seed)
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=self.drop_last,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )

    def describe(self) -> dict[str, object]:
        """Metadata for run records (with the canvas settings)."""
        return {**super().describe(), **self.spec.as_dict(), "train_size": self.train_size}
