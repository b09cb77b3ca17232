"""MobileNetV2 (Sandler et al. 2018) adapted to 32×32 inputs, as analysed by paper 2.

torchvision's MobileNetV2 layout (inverted residuals with linear bottlenecks, ReLU6, the
``(t, c, n, s)`` table of the paper) with the usual CIFAR adaptation: the stem conv has stride 1
instead of 2 and the second stage (24 channels) stride 1 instead of 2, so a 32×32 image is reduced
8× (to 4×4) instead of 32×. About 2.24 M parameters at 10 classes.

Module names (the layer names used by taps, CSVs and pruning)::

    stem                 Conv3×3(in, 32)-BN-ReLU6, stride 1           (stem.conv/bn/act)
    stage1.0             t=1, 16 ch                                   32×32
    stage2.0 - stage2.1  t=6, 24 ch (stride 1 here, 2 on ImageNet)    32×32
    stage3.0 - stage3.2  t=6, 32 ch, stride 2                         16×16
    stage4.0 - stage4.3  t=6, 64 ch, stride 2                         8×8
    stage5.0 - stage5.2  t=6, 96 ch                                   8×8
    stage6.0 - stage6.2  t=6, 160 ch, stride 2                        4×4
    stage7.0             t=6, 320 ch                                  4×4
    head                 Conv1×1(320, 1280)-BN-ReLU6
    avgpool, classifier  (Dropout(0.2), Linear)

    a block: expand (ConvBNAct 1×1, absent when t=1), depthwise (ConvBNAct 3×3),
             project (Conv 1×1), project_bn; output = project_bn(...) (+ input when residual)

Taps: ``block`` = ``stem`` then the 17 inverted-residual blocks (18 layers, paper 2's "each
convolution layer" read at block granularity). The official code of paper 1 has no MobileNet;
``official`` follows its ResNet convention: ``stem.conv`` (before BN) then every block.

Small inputs: the pooling is adaptive, so 8×8 and 16×16 inputs work (down to 1×1 maps).
``blocks`` (seven per-stage repeat counts, default ``[1, 2, 3, 4, 3, 3, 1]``) makes depth a
parameter like the ResNets' ``blocks``, which the layer-pruning code uses.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ._base import ConvBNAct, StemBlocksModel, as_int_list, init_weights

__all__ = ["CifarMobileNetV2", "InvertedResidual", "mobilenet_v2"]

# (expansion t, output channels c, default repeats n, stride s of the first block) per stage.
_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),  # stride 2 on ImageNet; 1 for 32×32 inputs
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _make_divisible(value: float, divisor: int = 8) -> int:
    """Round channels to a multiple of ``divisor`` without going 10% below (torchvision rule)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


class InvertedResidual(nn.Module):
    """Expand 1×1 (ReLU6) -> depthwise 3×3 (ReLU6) -> linear 1×1 projection (+ input).

    The residual connection exists when stride is 1 and in == out channels.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = round(in_channels * expand_ratio)
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expand: nn.Module = (
            ConvBNAct(in_channels, hidden, kernel_size=1, act=nn.ReLU6())
            if expand_ratio != 1
            else nn.Identity()
        )
        self.depthwise = ConvBNAct(hidden, hidden, 3, stride=stride, groups=hidden, act=nn.ReLU6())
        self.project = nn.Conv2d(hidden, out_channels, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H/stride, W/stride)."""
        out = self.project_bn(self.project(self.depthwise(self.expand(x))))
        return x + out if self.use_residual else out


class CifarMobileNetV2(StemBlocksModel):
    """MobileNetV2 for 32×32 inputs (names and taps in the module docstring).

    Args:
        num_classes: outputs of the classifier.
        in_channels: image channels.
        width_mult: channel multiplier (torchvision's rounding to multiples of 8).
        blocks: repeats per stage (7 positive ints); None: the standard ``[1, 2, 3, 4, 3, 3, 1]``.
    """

    stage_names = tuple(f"stage{i}" for i in range(1, 8))

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        width_mult: float = 1.0,
        blocks: list[int] | None = None,
    ) -> None:
        super().__init__()
        if not width_mult > 0:
            raise ValueError(f"width_mult must be > 0, got {width_mult!r}")
        default = [n for _, _, n, _ in _SETTINGS]
        self.blocks = as_int_list(default if blocks is None else blocks, "blocks", length=7)
        self.custom_blocks = blocks is not None
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.width_mult = float(width_mult)
        channels = _make_divisible(32 * width_mult)
        self.stem = ConvBNAct(in_channels, channels, 3, stride=1, act=nn.ReLU6())
        for stage, ((t, c, _, s), n) in zip(
            self.stage_names, zip(_SETTINGS, self.blocks, strict=True), strict=True
        ):
            out = _make_divisible(c * width_mult)
            layers = []
            for i in range(n):
                layers.append(InvertedResidual(channels, out, s if i == 0 else 1, t))
                channels = out
            self.add_module(stage, nn.Sequential(*layers))
        last = _make_divisible(1280 * max(1.0, width_mult))
        self.head = ConvBNAct(channels, last, 1, act=nn.ReLU6())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) -> logits (B, num_classes)."""
        x = self.stem(x)
        for stage in self.stage_names:
            x = getattr(self, stage)(x)
        return self.classifier(torch.flatten(self.avgpool(self.head(x)), 1))

    def arch_config(self) -> dict[str, Any]:
        """``{"name", "num_classes", "in_channels", "width_mult", "blocks"}``.

        ``blocks`` is None for the standard depth; ``build_model(**cfg)`` rebuilds.
        """
        return {
            "name": "mobilenet_v2",
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "width_mult": self.width_mult,
            "blocks": list(self.blocks) if self.custom_blocks else None,
        }

    def _block_is_removable(self, block: nn.Module) -> bool:
        return isinstance(block, InvertedResidual) and block.use_residual


def mobilenet_v2(
    num_classes: int = 10,
    in_channels: int = 3,
    width_mult: float = 1.0,
    blocks: list[int] | None = None,
) -> CifarMobileNetV2:
    """MobileNetV2 for 32×32 inputs (stride-1 stem and second stage); see the module docstring."""
    return CifarMobileNetV2(num_classes, in_channels, width_mult, blocks)
