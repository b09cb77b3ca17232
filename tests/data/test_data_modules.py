"""DataModules: digits split, [0, 1] images, fake data, ImageNet50 filtering, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dnn_modularity.data import (
    IMAGENET50_WNIDS,
    CIFAR10DataModule,
    CIFAR100DataModule,
    DigitsDataModule,
    FakeDataModule,
    ImageNet50DataModule,
    ImageNetDataModule,
)


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    dm = DigitsDataModule(batch_size=32)
    dm.setup()
    return dm


def test_digits_split_is_disjoint_stratified_and_complete(digits: DigitsDataModule) -> None:
    split = digits.split_indices()
    sizes = {k: v.numel() for k, v in split.items()}
    assert sizes == {"train": 1077, "val": 180, "test": 540}
    together = torch.cat(list(split.values()))
    assert together.unique().numel() == 1797  # disjoint and covering
    counts = torch.bincount(digits.test_labels(), minlength=10)
    assert counts.min() >= 52 and counts.max() <= 55  # stratified: ~30% of each class
    again = DigitsDataModule().split_indices()
    assert all(torch.equal(split[k], again[k]) for k in split)  # seeded
    other = DigitsDataModule(seed=1).split_indices()
    assert not torch.equal(split["test"], other["test"])


def test_digits_batches_are_images_in_unit_range(digits: DigitsDataModule) -> None:
    images, labels = next(iter(digits.train_dataloader()))
    assert images.shape == (32, 1, 8, 8) and images.dtype == torch.float32
    assert labels.dtype == torch.long and labels.shape == (32,)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert float(images.max()) == 1.0  # 16/16 occurs: the scaling is by 16, not by the max
    assert (digits.num_classes, digits.in_channels, digits.image_size) == (10, 1, 8)
    train_images = torch.stack([digits.train_set[i][0] for i in range(len(digits.train_set))])
    assert digits.mean[0] == pytest.approx(float(train_images.mean()), abs=1e-6)
    assert digits.std[0] == pytest.approx(float(train_images.std()), abs=1e-6)


def test_digits_probe_dataset_is_the_test_split(digits: DigitsDataModule) -> None:
    probe = digits.probe_dataset()
    assert len(probe) == 540
    assert torch.equal(torch.stack([probe[i][1] for i in range(540)]), digits.test_labels())


def test_digits_rejects_mismatching_metadata() -> None:
    with pytest.raises(ValueError, match="num_classes=100 does not match"):
        DigitsDataModule(num_classes=100)
    with pytest.raises(ValueError, match="leaves under 10%"):
        DigitsDataModule(val_fraction=0.5, test_fraction=0.45)


def test_fake_data_shapes_range_and_fixed_labels() -> None:
    dm = FakeDataModule(num_classes=4, in_channels=1, image_size=6, test_size=20, batch_size=5)
    dm.setup()
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (5, 1, 6, 6)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert labels.max() < 4
    test_labels = dm.test_labels()
    assert test_labels.shape == (20,)
    assert torch.equal(test_labels, torch.tensor([dm.probe_dataset()[i][1] for i in range(20)]))
    # Splits are different images (disjoint seed ranges).
    assert not torch.equal(dm.train_set[0][0], dm.test_set[0][0])
    assert dm.mean == (0.5,) and len(dm.std) == 1


def test_fake_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="num_classes=1"):
        FakeDataModule(num_classes=1)
    with pytest.raises(ValueError, match="test_size=0"):
        FakeDataModule(test_size=0)


@pytest.mark.parametrize("cls", [CIFAR10DataModule, CIFAR100DataModule])
def test_cifar_missing_folder_without_download_names_path(cls, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        cls(data_dir=tmp_path / "nothing", download=False)
    message = str(info.value)
    assert str(tmp_path / "nothing") in message and "data.download=true" in message


def test_cifar_metadata_and_official_statistics(tmp_path: Path) -> None:
    dm = CIFAR100DataModule(data_dir=tmp_path, download=True)  # no download until prepare_data
    assert dm.num_classes == 100 and dm.rotation == 15.0
    assert dm.std == pytest.approx((0.24703233, 0.24348505, 0.26158768))
    names = [type(t).__name__ for t in dm.train_transform().transforms]
    assert names == ["RandomCrop", "RandomHorizontalFlip", "RandomRotation", "ToTensor"]
    c10 = CIFAR10DataModule(data_dir=tmp_path)
    assert [type(t).__name__ for t in c10.train_transform().transforms] == [
        "RandomCrop",
        "RandomHorizontalFlip",
        "ToTensor",
    ]
    with pytest.raises(ValueError, match="num_classes=100 does not match"):
        CIFAR10DataModule(data_dir=tmp_path, num_classes=100)


@pytest.mark.parametrize("cls", [ImageNetDataModule, ImageNet50DataModule])
def test_imagenet_missing_folder_explains_how_to_get_it(cls, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        cls(data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / "train") in message and "image-net.org" in message


def _write_image_tree(root: Path, wnids: list[str]) -> None:
    from PIL import Image

    for split in ("train", "val"):
        for i, wnid in enumerate(wnids):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            Image.new("RGB", (8, 8), color=(i % 256, 0, 0)).save(folder / "a.png")


def test_imagenet50_keeps_the_50_paper_classes_in_order(tmp_path: Path) -> None:
    assert len(IMAGENET50_WNIDS) == 50 and len(set(IMAGENET50_WNIDS)) == 50
    extra = ["n00000001", "n99999999"]
    _write_image_tree(tmp_path, sorted([*IMAGENET50_WNIDS, *extra]))
    dm = ImageNet50DataModule(data_dir=tmp_path, image_size=8, resize_size=8, num_workers=0)
    dm.setup()
    assert dm.test_set.classes == list(IMAGENET50_WNIDS)
    assert len(dm.train_set) == 50 and len(dm.test_set) == 50
    assert torch.equal(dm.test_labels(), torch.arange(50))
    image, label = dm.probe_dataset()[3]
    assert image.shape == (3, 8, 8) and label == 3 and float(image.max()) <= 1.0
    full = ImageNetDataModule(data_dir=tmp_path, image_size=8, resize_size=8, num_workers=0)
    full.setup()
    assert len(full.test_set.classes) == 52


def test_imagenet50_names_missing_class_folders(tmp_path: Path) -> None:
    _write_image_tree(tmp_path, list(IMAGENET50_WNIDS[:10]))
    dm = ImageNet50DataModule(data_dir=tmp_path, num_workers=0)
    with pytest.raises(FileNotFoundError, match="lacks 40 of the 50 ImageNet50 class folders"):
        dm.setup()
