"""CIFAR ResNet-18/34/50/101/152: torchvision's ResNets with a 3×3 stride-1 stem, no max-pool.

This is the "cResNet" of paper 1's official code (Table B2 networks; Table B3 structure): a
Conv3×3(64)-BN-ReLU stem, four stages of 64/128/256/512 planes (BasicBlock, expansion 1, for
18/34; Bottleneck, expansion 4, for 50/101/152), projection shortcuts (1×1 conv + BN) where a
block changes the shape, adaptive average pooling and a linear classifier. CIFAR ResNet-18:
11,173,962 parameters and 0.56 G MACs at 32×32 for 10 classes.

Pruned variants are ``blocks`` overrides; paper 1 (Sec. 5.2, Table B3) cuts stage 3 (conv4_x,
``layer3``) of ResNet-152 from 36 blocks to 31/25/20/15/10/6: ``Res152_k`` removes ``k`` blocks,
``resnet152(blocks=[3, 8, 36 - k, 3])``.

Module names (the layer names used by taps, CSVs and pruning)::

    stem                      Conv3×3(in, 64)-BN-ReLU     (stem.conv, stem.bn, stem.act)
    layer1.0 .. layer1.{n1-1} 64 planes, 32×32 for a 32×32 input
    layer2.*                  128 planes, 16×16 (layer2.0 downsamples)
    layer3.*                  256 planes, 8×8   (paper's conv4_x)
    layer4.*                  512 planes, 4×4
    avgpool, fc

    BasicBlock:  conv1, bn1, relu1, conv2, bn2, shortcut, relu2
    Bottleneck:  conv1, bn1, relu1, conv2, bn2, relu2, conv3, bn3, shortcut, relu3
    shortcut:    Identity, or Sequential(conv 1×1, BN) named shortcut.0 / shortcut.1

Taps: ``block`` = ``stem`` then every block (ResNet-18: 9 layers, ResNet-152: 51); ``official`` =
``stem.conv`` (before BN, the official code's ``conv1`` hook) then every block.

Small inputs: the pooling is adaptive, so 8×8 and 16×16 inputs work (stage 4 sees 1×1 or 2×2).
"""

from __future__ import annotations

from torch import Tensor, nn

from ._base import ConvBNAct, ResNetStages, as_int_list, depth_constructor

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "CifarResNet",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
]


def _projection(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    """1×1 conv + BN shortcut when the shape changes, else identity."""
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes)
    )


class BasicBlock(nn.Module):
    """Two 3×3 Conv-BN, shortcut, ReLU (expansion 1)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _projection(in_planes, planes, stride)
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, planes, H/stride, W/stride)."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # Not in place, so a tap on bn2 does not see the residual sum.
        return self.relu2(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (carries the stride, as torchvision v1.5), 1×1 expand ×4, shortcut, ReLU."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = _projection(in_planes, out_planes, stride)
        self.relu3 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, 4 planes, H/stride, W/stride)."""
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + self.shortcut(x))


_SPECS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
    "resnet101": (Bottleneck, [3, 4, 23, 3]),
    "resnet152": (Bottleneck, [3, 8, 36, 3]),
}


class CifarResNet(ResNetStages):
    """CIFAR ResNet with projection shortcuts (names and taps in the module docstring).

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        blocks: blocks per stage, four positive ints.
        num_classes: outputs of ``fc``.
        in_channels: image channels.
        name: constructor name reported by :meth:`arch_config`.
    """

    stage_names = ("layer1", "layer2", "layer3", "layer4")
    planes = (64, 128, 256, 512)
    stem_channels = 64

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        blocks: list[int],
        num_classes: int = 10,
        in_channels: int = 3,
        name: str = "resnet",
    ) -> None:
        super().__init__()
        self.blocks = as_int_list(blocks, "blocks", length=4)
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.name = name
        self.stem = ConvBNAct(in_channels, self.stem_channels, kernel_size=3)
        self._build_body(block, self.planes, (1, 2, 2, 2), block.expansion)

    def _block_is_removable(self, block: nn.Module) -> bool:
        return isinstance(block.shortcut, nn.Identity)


def _build(name: str, num_classes: int, in_channels: int, blocks: list[int] | None) -> CifarResNet:
    block, default = _SPECS[name]
    return CifarResNet(
        block,
        list(default) if blocks is None else blocks,
        num_classes=num_classes,
        in_channels=in_channels,
        name=name,
    )


resnet18 = depth_constructor(
    "resnet18",
    _build,
    "CIFAR ResNet-18, BasicBlocks ``[2, 2, 2, 2]`` (11.17 M params at 10 classes).",
)
resnet34 = depth_constructor("resnet34", _build, "CIFAR ResNet-34, BasicBlocks ``[3, 4, 6, 3]``.")
resnet50 = depth_constructor("resnet50", _build, "CIFAR ResNet-50, Bottlenecks ``[3, 4, 6, 3]``.")
resnet101 = depth_constructor(
    "resnet101", _build, "CIFAR ResNet-101, Bottlenecks ``[3, 4, 23, 3]``."
)
resnet152 = depth_constructor(
    "resnet152",
    _build,
    "CIFAR ResNet-152, Bottlenecks ``[3, 8, 36, 3]``; "
    "paper 1's Res152_k (k in 5, 11, 16, 21, 26, 30) is ``blocks=[3, 8, 36 - k, 3]``.",
)
