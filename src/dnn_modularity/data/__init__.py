"""LightningDataModules yielding [0, 1] images, and the probe-set sampler.

Normalisation lives inside the model (`dnn_modularity.models.Normalized`), so attacks and analyses
work in pixel space; each datamodule exposes `mean`/`std` for it.
"""

from dnn_modularity.data.base import ImageDataModule
from dnn_modularity.data.cifar import CIFAR10DataModule, CIFAR100DataModule
from dnn_modularity.data.cluttered_digits import ClutteredDigitsDataModule
from dnn_modularity.data.digits import DigitsDataModule
from dnn_modularity.data.fake import FakeDataModule
from dnn_modularity.data.imagenet import IMAGENET50_WNIDS, ImageNet50DataModule, ImageNetDataModule
from dnn_modularity.data.probe import ProbeSet, sample_probe_indices

__all__ = [
    "IMAGENET50_WNIDS",
    "CIFAR10DataModule",
    "CIFAR100DataModule",
    "ClutteredDigitsDataModule",
    "DigitsDataModule",
    "FakeDataModule",
    "ImageDataModule",
    "ImageNet50DataModule",
    "ImageNetDataModule",
    "ProbeSet",
    "sample_probe_indices",
]
