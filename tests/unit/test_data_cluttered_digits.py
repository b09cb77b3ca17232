"""Cluttered digits: determinism per seed/epoch, shapes, range, balance, per-epoch regeneration."""

from __future__ import annotations

import pytest
import torch

from dnn_modularity.data import ClutteredDigitsDataModule, ProbeSet
from dnn_modularity.data.cluttered_digits import (
    CanvasSpec,
    EpochCanvases,
    EpochSampler,
    render_canvases,
)


@pytest.fixture(scope="module")
def dm() -> ClutteredDigitsDataModule:
    module = ClutteredDigitsDataModule(batch_size=64)
    module.setup()
    return module


def _epoch_batches(dm: ClutteredDigitsDataModule, epoch: int) -> list[torch.Tensor]:
    loader = dm.train_dataloader()
    loader.sampler.set_epoch(epoch)  # what Lightning's fit loop does at every epoch start
    return [images for images, _ in loader]


def test_shapes_range_metadata_and_statistics(dm: ClutteredDigitsDataModule) -> None:
    assert (dm.num_classes, dm.in_channels, dm.image_size) == (10, 1, 32)
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (1077, 180, 540)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (64, 1, 32, 32) and images.dtype == torch.float32
    assert labels.shape == (64,) and labels.dtype == torch.long
    for split in (dm.train_set.images(3), dm.val_set.tensors[0], dm.test_set.tensors[0]):
        assert float(split.min()) >= 0.0 and float(split.max()) <= 1.0
        assert float(split.max()) == 1.0 and float(split.min()) == 0.0  # clipped noise
    # Normalisation statistics: the epoch-0 training canvases (no test images).
    first = dm.train_set.images(0)
    assert dm.mean[0] == pytest.approx(float(first.mean()), abs=1e-6)
    assert dm.std[0] == pytest.approx(float(first.std()), abs=1e-6)
    described = dm.describe()
    assert described["num_fragments"] == 4 and described["train_size"] == 1077


def test_canvas_holds_the_digit_fragments_and_noise() -> None:
    digits = torch.zeros(4, 16, 16)
    for c in range(4):
        digits[c, 2:14, 2:14] = 0.25 * (c + 1)  # class c has ink of value 0.25 (c + 1)
    labels = torch.arange(4)
    spec = CanvasSpec(num_fragments=0, noise_std=0.0)
    clean = render_canvases(
        digits, labels, torch.tensor([1]), spec, torch.Generator().manual_seed(0)
    )
    assert clean.shape == (1, 1, 32, 32)
    assert int((clean == 0.5).sum()) == 12 * 12  # the whole digit, nothing else
    spec = CanvasSpec(num_fragments=4, noise_std=0.0)
    many = render_canvases(
        digits, labels, torch.zeros(200, dtype=torch.long), spec, torch.Generator().manual_seed(0)
    )
    # Fragments come from the other classes only (values 0.5, 0.75, 1.0; never class 0's 0.25
    # outside its own 12x12 block).
    values = set(torch.unique(many).tolist())
    assert values <= {0.0, 0.25, 0.5, 0.75, 1.0} and {0.5, 0.75, 1.0} <= values
    assert all(int((img == 0.25).sum()) <= 144 for img in many)
    noisy = render_canvases(
        digits,
        labels,
        torch.tensor([1]),
        CanvasSpec(num_fragments=0),
        torch.Generator().manual_seed(0),
    )
    # Same seed: same position (the noise is drawn after the positions).
    background = noisy[clean == 0]
    assert 0.02 < float(background.mean()) < 0.06  # clipped N(0, 0.1): mean 0.1 / sqrt(2 pi)


def test_training_images_are_deterministic_per_seed_and_epoch() -> None:
    a, b = ClutteredDigitsDataModule(), ClutteredDigitsDataModule()
    a.setup(), b.setup()
    assert torch.equal(a.train_set.images(2), b.train_set.images(2))
    assert torch.equal(a.val_set.tensors[0], b.val_set.tensors[0])
    assert torch.equal(a.test_set.tensors[0], b.test_set.tensors[0])
    # Access order and caching do not matter: epoch 2 again after epoch 5.
    first = a.train_set.images(2).clone()
    a.train_set.images(5)
    assert torch.equal(a.train_set.images(2), first)
    other = ClutteredDigitsDataModule(seed=1)
    other.setup()
    assert not torch.equal(other.train_set.images(2), first)
    assert not torch.equal(other.test_set.tensors[0], a.test_set.tensors[0])


def test_training_images_are_regenerated_every_epoch(dm: ClutteredDigitsDataModule) -> None:
    epoch0, epoch1 = dm.train_set.images(0).clone(), dm.train_set.images(1).clone()
    differs = (epoch0 != epoch1).flatten(1).any(1)
    assert bool(differs.all())  # every image is new
    assert torch.equal(dm.train_set[1077 + 5][0], epoch1[5])  # key e * len + i -> epoch e
    assert torch.equal(dm.train_set[5][0], epoch0[5])
    # Through the loader: set_epoch selects the epoch's images, and the same epoch repeats exactly.
    batches0 = torch.cat(_epoch_batches(dm, 0))
    batches1 = torch.cat(_epoch_batches(dm, 1))
    assert batches0.shape == batches1.shape == (1077, 1, 32, 32)
    assert not torch.equal(batches0, batches1)
    assert torch.equal(torch.cat(_epoch_batches(dm, 1)), batches1)
    assert torch.equal(
        torch.sort(batches1.flatten(1).sum(1)).values, torch.sort(epoch1.flatten(1).sum(1)).values
    )  # a permutation of epoch 1


def test_class_balance(dm: ClutteredDigitsDataModule) -> None:
    # Every split keeps the class shares of the 1797 digits (174..183 per class): stratified.
    from dnn_modularity.data.digits import load_digits_tensors

    full = torch.bincount(load_digits_tensors()[1], minlength=10).double()
    bigger = ClutteredDigitsDataModule(train_size=3000)
    bigger.setup()
    assert len(bigger.train_set) == 3000
    for labels in (
        dm.train_set.labels,
        dm.val_set.tensors[1],
        dm.test_labels(),
        bigger.train_set.labels,
    ):
        counts = torch.bincount(labels, minlength=10).double()
        assert torch.allclose(counts / counts.sum(), full / full.sum(), atol=0.004)


def test_source_digits_of_the_splits_are_disjoint(dm: ClutteredDigitsDataModule) -> None:
    split = dm.split_indices()
    together = torch.cat(list(split.values()))
    assert together.numel() == together.unique().numel() == 1797


def test_probe_set_is_fixed(dm: ClutteredDigitsDataModule) -> None:
    first = ProbeSet.from_datamodule(dm, n=500)
    for epoch in (0, 4):
        _epoch_batches(dm, epoch)  # training epochs do not touch the test canvases
        again = ProbeSet.from_datamodule(dm, n=500)
        assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels)
    fresh = ClutteredDigitsDataModule()
    assert torch.equal(ProbeSet.from_datamodule(fresh, n=500).images, first.images)
    assert torch.bincount(first.labels, minlength=10).tolist() == [50] * 10


def test_ddp_shards_are_disjoint_and_see_the_same_images(dm: ClutteredDigitsDataModule) -> None:
    train = dm.train_set
    assert isinstance(train, EpochCanvases)
    shards = []
    for rank in (0, 1):
        sampler = EpochSampler(train, num_replicas=2, rank=rank, seed=0)
        sampler.set_epoch(3)
        shards.append(list(sampler))
    keys = shards[0] + shards[1]
    assert all(3 * 1077 <= k < 4 * 1077 for k in keys)  # every key points into epoch 3
    assert len(set(shards[0]) & set(shards[1])) <= 1  # padding repeats one key (1077 is odd)
    assert {k - 3 * 1077 for k in keys} == set(range(1077))
    # A rank that rebuilds the dataset (another process) decodes the same image for a key.
    other = ClutteredDigitsDataModule()
    other.setup()
    key = shards[1][7]
    assert torch.equal(other.train_set[key][0], train[key][0])


def test_bad_settings_name_the_value() -> None:
    with pytest.raises(ValueError, match="digit_size=40"):
        ClutteredDigitsDataModule(digit_size=40)
    with pytest.raises(ValueError, match="fragment_size=20"):
        ClutteredDigitsDataModule(fragment_size=20)
    with pytest.raises(ValueError, match=r"noise_std=-0\.1"):
        ClutteredDigitsDataModule(noise_std=-0.1)
    with pytest.raises(ValueError, match="train_size=0"):
        ClutteredDigitsDataModule(train_size=0)
    with pytest.raises(ValueError, match="in_channels=3"):
        ClutteredDigitsDataModule(in_channels=3)
    with pytest.raises(ValueError, match="epoch=-1"):
        ClutteredDigitsDataModule().train_dataloader().dataset.images(-1)
