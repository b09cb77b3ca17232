"""CIFAR ResNet-20/32/44/56/110 (He et al. 2016, Sec. 4.2) with option-A shortcuts.

Three stages of 16, 32 and 64 channels with ``n`` BasicBlocks each (depth = 6n + 2), a 3×3
stem, global average pooling and one linear layer. Option A: when a block halves the resolution
and doubles the width, its shortcut subsamples by 2 and zero-pads the new channels, so the
shortcut has no parameters (ResNet-56: 853,018 parameters, 125.49 M MACs at 32×32 for 10 classes).
This is the network of paper 1's Table 1 (ResNet56 pruned to ``blocks=[2, 3, 6]``).

Module names (also the layer names that taps, CSVs and the pruning code use)::

    stem              Conv3×3(in, 16)-BN-ReLU          (stem.conv, stem.bn, stem.act)
    layer1.0 .. layer1.{n1-1}   BasicBlocks, 16 ch, 32×32 for a 32×32 input
    layer2.0 .. layer2.{n2-1}   BasicBlocks, 32 ch, 16×16 (layer2.0 downsamples)
    layer3.0 .. layer3.{n3-1}   BasicBlocks, 64 ch, 8×8  (layer3.0 downsamples)
    avgpool, fc

    a block: conv1, bn1, relu1, conv2, bn2, shortcut, relu2 (output = relu2(bn2(...) + shortcut))

Taps: ``block`` = ``stem`` then every block (ResNet-56: 1 + 27 = 28 layers); ``official`` =
``stem.conv`` (before BN, as the official code hooks ``conv1``) then every block (28 as well).

Small inputs: global average pooling is adaptive, so 8×8 and 16×16 inputs (e.g. 1-channel
digits) work: the stages give 8×8 -> 4×4 -> 2×2 maps.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ._base import ConvBNAct, ResNetStages, as_int_list, depth_constructor

__all__ = [
    "BasicBlockA",
    "CifarResNetA",
    "ZeroPadShortcut",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
]

_DEPTHS: dict[str, int] = {
    "resnet20": 3,
    "resnet32": 5,
    "resnet44": 7,
    "resnet56": 9,
    "resnet110": 18,
}


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: subsample by ``stride`` and zero-pad channels ``in -> out``.

    Shapes: (B, C_in, H, W) -> (B, C_out, ceil(H/stride), ceil(W/stride)).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(
                f"option-A shortcut cannot shrink channels {in_channels}->{out_channels}"
            )
        self.stride = stride
        self.pad_before = (out_channels - in_channels) // 2
        self.pad_after = out_channels - in_channels - self.pad_before

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H', W')."""
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))

    def extra_repr(self) -> str:
        """Shown in ``repr(module)``."""
        return f"stride={self.stride}, pad=({self.pad_before}, {self.pad_after})"


class BasicBlockA(nn.Module):
    """Two 3×3 Conv-BN with an option-A (parameter-free) shortcut; output after the final ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = (
            ZeroPadShortcut(in_planes, planes, stride)
            if stride != 1 or in_planes != planes
            else nn.Identity()
        )
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, planes, H/stride, W/stride)."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # Not in place: a tap on bn2 must not see the residual sum.
        return self.relu2(out + self.shortcut(x))


class CifarResNetA(ResNetStages):
    """CIFAR ResNet with option-A shortcuts (see the module docstring for names and taps).

    Args:
        blocks: BasicBlocks per stage, three positive ints (ResNet-56: ``[9, 9, 9]``).
        num_classes: outputs of ``fc``.
        in_channels: image channels (3 for CIFAR, 1 for digits).
        name: the constructor name reported by :meth:`arch_config`.
    """

    stage_names = ("layer1", "layer2", "layer3")
    widths = (16, 32, 64)
    stem_channels = 16

    def __init__(
        self,
        blocks: list[int],
        num_classes: int = 10,
        in_channels: int = 3,
        name: str = "resnet_a",
    ) -> None:
        super().__init__()
        self.blocks = as_int_list(blocks, "blocks", length=3)
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.name = name
        self.stem = ConvBNAct(in_channels, self.stem_channels, kernel_size=3)
        self._build_body(BasicBlockA, self.widths, (1, 2, 2))

    def _block_is_removable(self, block: nn.Module) -> bool:
        return isinstance(block, BasicBlockA) and isinstance(block.shortcut, nn.Identity)


def _build(name: str, num_classes: int, in_channels: int, blocks: list[int] | None) -> CifarResNetA:
    n = _DEPTHS[name]
    return CifarResNetA(
        blocks=[n, n, n] if blocks is None else blocks,
        num_classes=num_classes,
        in_channels=in_channels,
        name=name,
    )


resnet20 = depth_constructor("resnet20", _build, "ResNet-20 (3 blocks per stage, 0.27 M params).")
resnet32 = depth_constructor("resnet32", _build, "ResNet-32 (5 blocks per stage, 0.46 M params).")
resnet44 = depth_constructor("resnet44", _build, "ResNet-44 (7 blocks per stage, 0.66 M params).")
resnet56 = depth_constructor(
    "resnet56",
    _build,
    "ResNet-56 (9 blocks per stage, 0.85 M params, 125.5 M MACs at 32×32); "
    "paper 1 Table 1 prunes it to ``blocks=[2, 3, 6]``.",
)
resnet110 = depth_constructor(
    "resnet110", _build, "ResNet-110 (18 blocks per stage, 1.7 M params)."
)
