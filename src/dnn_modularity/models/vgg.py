"""CIFAR VGG-11/13/16/19 with batch norm, as in paper 1 (Table B4/B5) and its official code.

Conv3×3-BN-ReLU units in five stages separated by 2×2 max-pools, then the classifier
``Dropout, FC 512->512, ReLU, Dropout, FC 512->512, ReLU, FC 512->C`` (paper 1's "FC-512, FC-512,
FC-10"). VGG-16: 15.25 M parameters and 313 M MACs at 32×32 for 10 classes.

Pruned variants (paper 1 Sec. 5.2, Tables B4 and B5): ``convs_removed=n`` removes ``n`` conv
units "from back to front", keeping at least one unit in every stage (every max-pool stays):
each removal drops the last unit of the deepest stage that still has more than one. For VGG-19
(stages of 2, 2, 4, 4, 4 units) VGG19_1..3 cut stage 5 to 3, 2, 1 units and VGG19_4..6 cut stage
4 to 3, 2, 1 — exactly the official ``cvgg19_18 .. cvgg19_13`` configurations. For VGG-11 (1, 1,
2, 2, 2) VGG11_1, _2, _3 remove the second unit of stage 5, 4 and 3. Alternatively ``cfg`` gives
the layout explicitly, torchvision style: ints are conv widths, ``"M"`` closes a stage with a
max-pool, e.g. ``[64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]`` (VGG-11).

Module names (the layer names used by taps, CSVs and pruning)::

    stage1.0 .. stage1.{k-1}   ConvBNAct units (children conv, bn, act), then stage1.pool
    stage2.* .. stage5.*       likewise (a cfg not ending in "M" has a last stage without pool)
    avgpool                    AdaptiveAvgPool2d(1)
    classifier                 Sequential(Dropout, Linear, ReLU, Dropout, Linear, ReLU, Linear)

Taps: ``block`` = every unit's output (after ReLU; VGG-16: 13 layers, VGG-19: 16); ``official``
= every unit's ``conv`` output before BN (the official code's ``features.0, features.3, ...``).

Small inputs: the max-pools use ``ceil_mode=True``, identical to the usual floor mode on the even
sizes of 32×32 inputs, but a 1×1 map stays 1×1 instead of vanishing, so 8×8 digits pass the five
pools (8 -> 4 -> 2 -> 1 -> 1 -> 1) and 16×16 inputs too. The adaptive average pool before the
classifier is the identity for 32×32 inputs (the last map is 1×1, as the papers' FC-512 input
requires) and averages larger maps (e.g. 2×2 from 64×64 inputs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ._base import ConvBNAct, StagedModel, check_tap_mode, init_weights

__all__ = ["VGG_CFGS", "CifarVGG", "remove_convs", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]

CfgItem = int | str

# fmt: off
VGG_CFGS: dict[str, list[CfgItem]] = {
    "vgg11_bn": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13_bn": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16_bn": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19_bn": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
# fmt: on


def _split_stages(cfg: Sequence[CfgItem]) -> list[tuple[list[int], bool]]:
    """Cfg -> [(conv widths of the stage, stage ends with a pool)].

    Raises:
        ValueError: for items that are neither positive ints nor "M", or an empty stage.
    """
    stages: list[tuple[list[int], bool]] = []
    widths: list[int] = []
    for item in cfg:
        if item == "M":
            if not widths:
                raise ValueError(
                    f"cfg {list(cfg)!r} has a stage without convs "
                    "(an 'M' right after 'M' or at the start)"
                )
            stages.append((widths, True))
            widths = []
        elif isinstance(item, int) and not isinstance(item, bool) and item > 0:
            widths.append(item)
        else:
            raise ValueError(
                f"cfg items must be positive ints or 'M', got {item!r} in {list(cfg)!r}"
            )
    if widths:
        stages.append((widths, False))
    if not stages:
        raise ValueError(f"cfg {list(cfg)!r} has no conv layers")
    return stages


def _join_stages(stages: list[tuple[list[int], bool]]) -> list[CfgItem]:
    out: list[CfgItem] = []
    for widths, pooled in stages:
        out.extend(widths)
        if pooled:
            out.append("M")
    return out


def remove_convs(cfg: Sequence[CfgItem], n: int) -> list[CfgItem]:
    """Remove ``n`` conv units from the deep end, keeping one unit per stage (paper 1 Sec. 5.2).

    Each removal drops the last unit of the deepest stage with more than one unit, which gives
    the VGG19_1..6 layouts of paper 1's Table B4 (official ``cvgg19_18 .. cvgg19_13``).

    Raises:
        ValueError: when ``n`` is negative or more than the removable units (listed).
    """
    stages = _split_stages(cfg)
    removable = sum(len(w) - 1 for w, _ in stages)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0 or n > removable:
        raise ValueError(
            f"convs_removed must be an int in [0, {removable}] for cfg {list(cfg)!r} "
            f"(every stage keeps one conv), got {n!r}"
        )
    stages = [(list(w), p) for w, p in stages]
    for _ in range(n):
        deepest = max(i for i, (w, _) in enumerate(stages) if len(w) > 1)
        stages[deepest][0].pop()
    return _join_stages(stages)


class CifarVGG(StagedModel):
    """VGG with BN for 32×32 inputs (names and taps in the module docstring).

    Args:
        cfg: layout, ints = conv widths, "M" = max-pool ending a stage.
        num_classes: outputs of the last linear layer.
        in_channels: image channels.
        name: constructor name reported by :meth:`arch_config`.
        convs_removed: reported by :meth:`arch_config` (``cfg`` already has them removed).
        explicit_cfg: whether the user gave ``cfg`` (then :meth:`arch_config` reports it).
    """

    def __init__(
        self,
        cfg: Sequence[CfgItem],
        num_classes: int = 10,
        in_channels: int = 3,
        name: str = "vgg",
        convs_removed: int = 0,
        explicit_cfg: bool = True,
    ) -> None:
        super().__init__()
        stages = _split_stages(cfg)
        self.cfg = _join_stages(stages)
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.name = name
        self.convs_removed = int(convs_removed)
        self.explicit_cfg = explicit_cfg
        self.stage_names = tuple(f"stage{i}" for i in range(1, len(stages) + 1))
        channels = in_channels
        for stage, (widths, pooled) in zip(self.stage_names, stages, strict=True):
            seq = nn.Sequential()
            for i, width in enumerate(widths):
                # bias=True as in torchvision's and the official code's VGG-BN (param counts match).
                seq.add_module(str(i), ConvBNAct(channels, width, kernel_size=3, bias=True))
                channels = width
            if pooled:
                seq.add_module("pool", nn.MaxPool2d(2, 2, ceil_mode=True))
            self.add_module(stage, seq)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Dropout(),
            nn.Linear(channels, 512),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(512, 512),
            nn.ReLU(),
            nn.Linear(512, num_classes),
        )
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) -> logits (B, num_classes)."""
        for stage in self.stage_names:
            x = getattr(self, stage)(x)
        return self.classifier(torch.flatten(self.avgpool(x), 1))

    def tap_points(self, mode: str = "block") -> list[tuple[str, nn.Module]]:
        """``block``: every Conv-BN-ReLU unit; ``official``: every unit's conv (before BN)."""
        units = [nb for stage in self.stage_blocks() for nb in stage]
        if check_tap_mode(mode) == "block":
            return units
        return [(f"{name}.conv", unit.conv) for name, unit in units]

    def arch_config(self) -> dict[str, Any]:
        """``{"name", "num_classes", "in_channels", "convs_removed", "cfg"}``.

        ``cfg`` is None unless it was given explicitly; ``build_model(**cfg)`` rebuilds.
        """
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "in_channels": self.in_channels,
            "convs_removed": self.convs_removed,
            "cfg": list(self.cfg) if self.explicit_cfg else None,
        }

    def _block_is_removable(self, block: nn.Module) -> bool:
        return isinstance(block, ConvBNAct) and block.in_channels == block.out_channels

    def _kwargs_for_kept(self, kept: list[list[int]]) -> dict[str, Any]:
        stages = _split_stages(self.cfg)
        new = [
            ([w[i] for i in keep], pooled) for (w, pooled), keep in zip(stages, kept, strict=True)
        ]
        return {**self.arch_config(), "convs_removed": 0, "cfg": _join_stages(new)}


def _build(
    name: str,
    num_classes: int,
    in_channels: int,
    convs_removed: int,
    cfg: Sequence[CfgItem] | None,
) -> CifarVGG:
    base = VGG_CFGS[name] if cfg is None else list(cfg)
    return CifarVGG(
        remove_convs(base, convs_removed),
        num_classes=num_classes,
        in_channels=in_channels,
        name=name,
        convs_removed=convs_removed,
        explicit_cfg=cfg is not None,
    )


def vgg11_bn(
    num_classes: int = 10,
    in_channels: int = 3,
    convs_removed: int = 0,
    cfg: Sequence[CfgItem] | None = None,
) -> CifarVGG:
    """CIFAR VGG-11-BN (8 convs); ``convs_removed=1..3`` gives paper 1's VGG11_1..3."""
    return _build("vgg11_bn", num_classes, in_channels, convs_removed, cfg)


def vgg13_bn(
    num_classes: int = 10,
    in_channels: int = 3,
    convs_removed: int = 0,
    cfg: Sequence[CfgItem] | None = None,
) -> CifarVGG:
    """CIFAR VGG-13-BN (10 convs)."""
    return _build("vgg13_bn", num_classes, in_channels, convs_removed, cfg)


def vgg16_bn(
    num_classes: int = 10,
    in_channels: int = 3,
    convs_removed: int = 0,
    cfg: Sequence[CfgItem] | None = None,
) -> CifarVGG:
    """CIFAR VGG-16-BN (13 convs, 15.25 M params, 313 M MACs at 32×32)."""
    return _build("vgg16_bn", num_classes, in_channels, convs_removed, cfg)


def vgg19_bn(
    num_classes: int = 10,
    in_channels: int = 3,
    convs_removed: int = 0,
    cfg: Sequence[CfgItem] | None = None,
) -> CifarVGG:
    """CIFAR VGG-19-BN (16 convs); ``convs_removed=1..6`` gives paper 1's VGG19_1..6."""
    return _build("vgg19_bn", num_classes, in_channels, convs_removed, cfg)
