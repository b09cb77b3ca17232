"""Probe sets: the N test samples whose per-layer features become the nodes of the k-NN graphs.

Paper 1 (Sec. 3.2) "randomly samples N samples with corresponding labels from the test set"; the
official code uses the first N test images in loader order and takes its repeats from the next
unshuffled batches. Here:

- `strategy="balanced"` (default): a seeded draw with (as nearly as possible) N / C samples per
  class, so every community of the graph has the same size;
- `strategy="sequential"`: the first N test samples, like the official code.

Repeats `r = 0..R-1` are disjoint blocks of one seeded permutation per class (`disjoint=True`, the
default; sequential: the r-th block of N) or independent draws seeded by `(seed, r)`. A probe set
depends only on (labels, n, seed, strategy, repeat, disjoint): it is the same in every epoch, on
every rank and in every later analysis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["STRATEGIES", "ProbeSet", "class_quotas", "sample_probe_indices"]

STRATEGIES = ("balanced", "sequential")


def class_quotas(counts: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Split `n` samples over classes as evenly as their sizes allow ("water filling").

    Every class gets `floor(n / C)` (or all its members when it has fewer); what is left over is
    spread one by one over the classes that still have members, in a seeded random order.

    Args:
        counts: (C,) number of available samples per class.
        n: Total to draw, <= counts.sum().
        generator: Seeded generator for the order in which leftovers are given.

    Returns:
        (C,) LongTensor of per-class quotas summing to `n`.
    """
    counts = counts.long()
    quotas = torch.zeros_like(counts)
    remaining = int(n)
    open_classes = counts > 0
    while remaining > 0:
        n_open = int(open_classes.sum())
        share = remaining // n_open
        if share == 0:
            # Fewer leftovers than open classes: one each to a seeded random subset.
            candidates = torch.nonzero(open_classes).flatten()
            chosen = candidates[torch.randperm(candidates.numel(), generator=generator)[:remaining]]
            quotas[chosen] += 1
            break
        add = torch.where(open_classes, torch.minimum(counts - quotas, torch.tensor(share)), 0)
        quotas += add
        remaining -= int(add.sum())
        open_classes = quotas < counts
    return quotas


def _derived_seed(seed: int, repeat: int) -> int:
    # SeedSequence mixes (seed, repeat) so that neighbouring seeds/repeats give unrelated draws.
    return int(np.random.SeedSequence([int(seed), int(repeat)]).generate_state(1)[0])


def sample_probe_indices(
    labels: torch.Tensor,
    n: int,
    *,
    seed: int = 0,
    strategy: str = "balanced",
    repeat: int = 0,
    disjoint: bool = True,
) -> torch.Tensor:
    """Indices of a probe set of `n` samples drawn from a split with the given labels.

    Args:
        labels: (M,) integer labels of the split (any integer values).
        n: Probe-set size N (1 <= N <= M).
        seed: Seed of the draw (balanced strategy).
        strategy: "balanced" (seeded, N / C per class) or "sequential" (the first N, official code).
        repeat: Repeat index r >= 0.
        disjoint: Repeats use disjoint samples (balanced: the r-th block of one seeded per-class
            permutation; sequential: samples r*N .. (r+1)*N - 1). False: balanced repeats are
            independent draws seeded by (seed, r), which may share samples.

    Returns:
        (N,) LongTensor of sorted indices into the split.

    Raises:
        ValueError: On a bad strategy/size/repeat, or when the split is too small for the request.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"probe strategy {strategy!r} is not one of {STRATEGIES}")
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.numel() == 0 or labels.is_floating_point():
        raise ValueError(
            f"labels must be a non-empty 1-D integer tensor, got shape {tuple(labels.shape)} "
            f"dtype {labels.dtype}"
        )
    total = labels.numel()
    n, repeat = int(n), int(repeat)
    if not 1 <= n <= total:
        raise ValueError(f"probe size n={n} must be in [1, {total}] (the size of the test split)")
    if repeat < 0:
        raise ValueError(f"repeat={repeat} must be >= 0")

    if strategy == "sequential":
        if not disjoint and repeat > 0:
            raise ValueError(
                "strategy='sequential' with disjoint=False would give every repeat the same first "
                f"{n} samples; use disjoint=True (blocks r*N..(r+1)*N-1) or strategy='balanced'"
            )
        start = repeat * n
        if start + n > total:
            raise ValueError(
                f"sequential repeat {repeat} needs samples {start}..{start + n - 1} but the split "
                f"has {total}; lower n or the number of repeats"
            )
        return torch.arange(start, start + n, dtype=torch.long)

    generator = torch.Generator().manual_seed(_derived_seed(seed, 0 if disjoint else repeat))
    classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    quotas = class_quotas(counts, n, generator)
    block = repeat if disjoint else 0
    picked = []
    for c in range(classes.numel()):
        members = torch.nonzero(inverse == c).flatten()
        members = members[torch.randperm(members.numel(), generator=generator)]
        q = int(quotas[c])
        stop = (block + 1) * q
        if stop > members.numel():
            raise ValueError(
                f"disjoint repeat {repeat} needs {stop} samples of class {classes[c].item()} "
                f"({q} per repeat) but the split has {members.numel()}; lower n or the number of "
                "repeats, or use disjoint=False (independent draws)"
            )
        picked.append(members[block * q : stop])
    return torch.sort(torch.cat(picked)).values


@dataclass
class ProbeSet:
    """A fixed probe set: images, labels and the indices they came from.

    Attributes:
        images: (N, C, H, W) float images in [0, 1] (unaugmented test images).
        labels: (N,) int64 class labels.
        indices: (N,) int64 indices into the datamodule's `probe_dataset()`.
        meta: How it was drawn (n, seed, strategy, repeat, disjoint, dataset).
    """

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.labels.shape != (n,) or self.indices.shape != (n,):
            raise ValueError(
                f"ProbeSet: images {tuple(self.images.shape)}, labels {tuple(self.labels.shape)} "
                f"and indices {tuple(self.indices.shape)} must share the first dimension"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @classmethod
    def from_datamodule(
        cls,
        dm: Any,
        n: int,
        seed: int = 0,
        strategy: str = "balanced",
        repeat: int = 0,
        disjoint: bool = True,
    ) -> ProbeSet:
        """Draw a probe set from `dm.probe_dataset()` (the unaugmented test split).

        Args:
            dm: A datamodule with `probe_dataset()` and `test_labels()`.
            n: Probe-set size N.
            seed: Seed of the draw.
            strategy: "balanced" or "sequential".
            repeat: Repeat index.
            disjoint: Disjoint (True) or independent repeats; see `sample_probe_indices`.

        Returns:
            The probe set (images loaded in index order).
        """
        labels = dm.test_labels()
        indices = sample_probe_indices(
            labels, n, seed=seed, strategy=strategy, repeat=repeat, disjoint=disjoint
        )
        dataset = dm.probe_dataset()
        items = [dataset[i] for i in indices.tolist()]
        images = torch.stack([torch.as_tensor(item[0]) for item in items]).float()
        item_labels = torch.as_tensor([int(item[1]) for item in items], dtype=torch.long)
        if not torch.equal(item_labels, labels[indices]):
            raise RuntimeError(
                f"{type(dm).__name__}: test_labels() disagrees with probe_dataset() labels"
            )
        meta = {
            "n": int(n),
            "seed": int(seed),
            "strategy": strategy,
            "repeat": int(repeat),
            "disjoint": bool(disjoint),
            "dataset": getattr(dm, "name", type(dm).__name__),
        }
        return cls(images=images, labels=item_labels, indices=indices, meta=meta)
