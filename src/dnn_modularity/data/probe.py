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

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = [
    "STRATEGIES",
    "ProbeSet",
    "ProbeSizeError",
    "check_probe_labels",
    "check_probe_size",
    "class_quotas",
    "sample_probe_indices",
]

STRATEGIES = ("balanced", "sequential")


class ProbeSizeError(ValueError):
    """A probe size the modularity curve cannot use (raised by :func:`check_probe_size`)."""


def check_probe_size(
    n: int,
    num_classes: int | None,
    *,
    k: int | None = None,
    dataset: str | None = None,
) -> None:
    """Refuse a probe size that cannot give a meaningful modularity curve (before any work).

    The commands (train, analyze, prune) call this with the config's values as soon as they
    know the data, so that the message is the same everywhere.

    * N <= k: a node of the k-NN graph needs k *other* nodes.
    * N <= C (the number of classes): N samples cannot hold every class and still give any
      class a second sample. A class-balanced probe then has one sample per class (N = C) or
      leaves classes out (N < C); no node has a neighbour of its own class, so the Newman
      modularity with the classes as communities (paper 1, Eq. 1) is negative at every layer —
      an all-negative curve that says nothing about the network.

    Args:
        n: Probe-set size N (``probe.n``).
        num_classes: Number of classes C of the data (None: unknown, not checked).
        k: Neighbours of the k-NN graph (``graph.k``; None when no k-NN graph is built).
        dataset: Data name for the message.

    Raises:
        ProbeSizeError: A ``ValueError`` naming the bad value and the smallest valid one.
    """
    n = int(n)
    if k is not None and n <= int(k):
        raise ProbeSizeError(
            f"probe.n={n} must be larger than graph.k={k}: every node of the k-NN graph needs "
            "k other nodes; raise probe.n or lower graph.k"
        )
    if num_classes is not None and n <= int(num_classes):
        c = int(num_classes)
        data = f", data={dataset}" if dataset else ""
        raise ProbeSizeError(
            f"probe.n={n} must be larger than the number of classes ({c}{data}): {n} samples "
            "cannot hold every class and still give any class a second sample, so no node has "
            "a neighbour of its own class and the modularity is negative at every layer, a "
            f"curve that says nothing about the network. Use probe.n >= {2 * c} (two samples "
            "per class; paper 1 uses N = 500 for 10 classes)."
        )


def check_probe_labels(
    labels: torch.Tensor,
    num_classes: int | None,
    *,
    strategy: str = "balanced",
    dataset: str | None = None,
) -> None:
    """Warn when a drawn probe set leaves classes out or holds a single sample of some class.

    A class missing from a class-balanced probe means that the test split has no sample of it
    (the sampler gives every class present at least one sample once N > C); a sequential probe
    (the first N test samples) may simply not reach it. A class with one sample is a node
    without a possible neighbour of its own class, which lowers Q. Both still give a curve,
    of the classes present, so this warns with the reason instead of refusing.

    Args:
        labels: ``(N,)`` labels of the drawn probe set, in ``[0, num_classes)``.
        num_classes: Number of classes C of the data (None: only singletons are checked).
        strategy: The probe strategy, for the message.
        dataset: Data name for the message.
    """
    labels = torch.as_tensor(labels).long().flatten()
    classes, counts = torch.unique(labels, return_counts=True)
    data = f"data={dataset}" if dataset else "the data"
    if num_classes is not None:
        missing = sorted(set(range(int(num_classes))) - set(classes.tolist()))
        if missing:
            why = (
                "the test split has no sample of them"
                if strategy == "balanced"
                else f"the first {labels.numel()} test samples hold none of them; "
                "strategy=balanced draws every class"
            )
            warnings.warn(
                f"the probe set ({strategy}, N={labels.numel()}) holds no sample of class(es) "
                f"{missing} of the {num_classes} classes of {data}: {why}. The curve measures "
                "the separation of the other classes only.",
                UserWarning,
                stacklevel=2,
            )
    single = classes[counts == 1].tolist()
    if single:
        c = int(num_classes) if num_classes is not None else len(classes)
        warnings.warn(
            f"the probe set ({strategy}, N={labels.numel()}) holds a single sample of class(es) "
            f"{single} of {data}: such a node has no neighbour of its own class, which lowers "
            f"the modularity; use probe.n >= {2 * c} for two samples per class.",
            UserWarning,
            stacklevel=2,
        )


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
        check_probe_labels(
            item_labels,
            getattr(dm, "num_classes", None),
            strategy=strategy,
            dataset=getattr(dm, "name", None),
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
