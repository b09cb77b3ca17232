"""Shared machinery of the tapped model zoo: tap modes and layer removal by stage.

Every model in :mod:`dnn_modularity.models` declares its *tap points* (the modules whose outputs
are the "layers" of paper 1, Sec. 3.2) next to the code that builds those modules, and can say
which layers could be removed and how to rebuild itself without them. The removal logic is the
same for every stage-structured network (ResNets, VGGs, MobileNetV2): the layers that may be
removed are blocks/units whose input and output shapes match, the smaller network keeps the
remaining blocks of each stage in order, and a kept block ``stage.i`` becomes ``stage.j`` where
``j`` counts the kept blocks before it. That is what :class:`StagedModel` implements once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

TAP_MODES: tuple[str, ...] = ("block", "official")
"""Tap modes every model understands.

``block``: the papers' text (paper 1 Sec. 3.2; paper 2 Sec. 3): the output of each Conv-BN-ReLU
unit for VGG, of the stem and each residual block for ResNets, of the stem and each
inverted-residual block for MobileNetV2.
``official``: exactly where the official code of paper 1 hooks: VGG conv outputs before BN;
ResNet ``conv1`` before BN, then each residual block's output.
"""

#: Hidden-layer activation modules (the taps' ``activations`` selector adds Sigmoid and Tanh).
ACTIVATIONS: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
)


def check_tap_mode(mode: str) -> str:
    """Return ``mode`` if it is one of :data:`TAP_MODES`.

    Raises:
        ValueError: naming the bad mode and the valid ones.
    """
    if mode not in TAP_MODES:
        raise ValueError(f"unknown tap mode {mode!r}; valid modes: {list(TAP_MODES)}")
    return mode


def as_int_list(values: Iterable[Any] | None, what: str, length: int | None = None) -> list[int]:
    """Convert ``values`` (list, tuple, OmegaConf ListConfig) to a list of positive ints.

    Args:
        values: the per-stage numbers.
        what: name used in the error message.
        length: required length, if any.

    Raises:
        ValueError: when a value is not a positive integer or the length is wrong.
    """
    if values is None:
        raise ValueError(f"{what} must be a list of positive integers, got None")
    out = list(values)
    if length is not None and len(out) != length:
        raise ValueError(f"{what} must have {length} entries (one per stage), got {out!r}")
    for v in out:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{what} must hold positive integers, got {out!r}")
    return out


class StagedModel(nn.Module):
    """Base class for networks built as a stem, a few stages of blocks, and a head.

    Subclasses set ``stage_names`` (the attribute names of their stage ``nn.Sequential``s, in
    forward order), implement :meth:`_block_is_removable` and :meth:`_kwargs_for_kept` and the
    :meth:`tap_points` / :meth:`arch_config` pair. A stage's blocks are the children of the
    stage whose names are digits (``"0"``, ``"1"`` ...); other children of a stage (e.g. the
    VGG ``pool``) are kept as they are.
    """

    stage_names: tuple[str, ...] = ()

    # -- to be provided by subclasses ------------------------------------------------------
    def tap_points(self, mode: str = "block") -> list[tuple[str, nn.Module]]:
        """Ordered ``(layer name, module)`` pairs whose outputs are the layers in ``mode``."""
        raise NotImplementedError(f"{type(self).__name__} does not declare tap points")

    def arch_config(self) -> dict[str, Any]:
        """Constructor name and kwargs that rebuild this architecture."""
        raise NotImplementedError(f"{type(self).__name__} does not declare arch_config")

    def _block_is_removable(self, block: nn.Module) -> bool:
        raise NotImplementedError(f"{type(self).__name__} does not declare removable blocks")

    def _kwargs_for_kept(self, kept: list[list[int]]) -> dict[str, Any]:
        """Constructor kwargs of the network keeping block indices ``kept[s]`` of stage s."""
        raise NotImplementedError(f"{type(self).__name__} cannot rebuild without layers")

    # -- generic ------------------------------------------------------------------------------
    def stage_blocks(self) -> list[list[tuple[str, nn.Module]]]:
        """Blocks of every stage as ``(full name, module)``, e.g. ``("layer2.3", block)``."""
        stages = []
        for stage in self.stage_names:
            seq = getattr(self, stage)
            stages.append([(f"{stage}.{n}", m) for n, m in seq.named_children() if n.isdigit()])
        return stages

    def removable_layers(self) -> list[str]:
        """Block-mode layer names that can be removed: input shape == output shape.

        For ResNets these are the blocks with an identity shortcut (every block but the first
        of a stage, plus ``layer1.0`` of BasicBlock networks whose stem width equals stage 1's);
        for VGG the Conv-BN-ReLU units whose in and out channels match; for MobileNetV2 the
        inverted-residual blocks with a residual connection.
        """
        return [
            name
            for blocks in self.stage_blocks()
            for name, block in blocks
            if self._block_is_removable(block)
        ]

    def _kept_indices(self, removed: Sequence[str] | str) -> list[list[int]]:
        if isinstance(removed, str):
            removed = [removed]
        removable = self.removable_layers()
        known = {name for blocks in self.stage_blocks() for name, _ in blocks}
        unknown = [n for n in removed if n not in known]
        fixed = [n for n in removed if n in known and n not in removable]
        if unknown or fixed:
            what = f"unknown layers {unknown}" if unknown else ""
            if fixed:
                what += ("; " if what else "") + (
                    f"layers {fixed} change the shape (input != output) and cannot be removed"
                )
            raise ValueError(
                f"cannot remove from {self.arch_config()['name']}: {what}; "
                f"removable layers: {removable}"
            )
        removed_set = set(removed)
        kept: list[list[int]] = []
        for stage, blocks in zip(self.stage_names, self.stage_blocks(), strict=True):
            keep = [i for i, (name, _) in enumerate(blocks) if name not in removed_set]
            if not keep:
                raise ValueError(
                    f"removing {sorted(n for n in removed_set if n.startswith(stage + '.'))} "
                    f"would leave stage {stage!r} without blocks; keep at least one"
                )
            kept.append(keep)
        return kept

    def without_layers(self, names: Sequence[str] | str) -> dict[str, Any]:
        """``arch_config()`` of this network with the block-mode layers ``names`` removed.

        Example: ``resnet56().without_layers(["layer3.8"])["blocks"] == [9, 9, 8]``.

        Raises:
            ValueError: a name is unknown or not removable (the removable ones are listed), or a
                stage would lose all its blocks.
        """
        return self._kwargs_for_kept(self._kept_indices(names))

    def layer_mapping(self, removed: Sequence[str] | str) -> dict[str, str]:
        """Map the kept modules of this network to their names in the smaller network.

        Keys are module-name prefixes of this network: every block that is kept (``"layer3.4"``
        -> ``"layer3.3"`` after removing ``"layer3.2"``) and every top-level module outside the
        stages (stem, pools, classifier; they keep their names). Every ``state_dict`` key of
        this network that is not under a removed layer starts with exactly one key of the map
        followed by ``"."``; replacing that prefix gives the key in the smaller network
        (``without_layers(removed)``), with the same tensor shape.
        """
        kept = self._kept_indices(removed)
        mapping: dict[str, str] = {}
        for name, _ in self.named_children():
            if name not in self.stage_names:
                mapping[name] = name
        for stage, blocks, keep in zip(self.stage_names, self.stage_blocks(), kept, strict=True):
            for new_idx, old_idx in enumerate(keep):
                mapping[blocks[old_idx][0]] = f"{stage}.{new_idx}"
            for child, _ in getattr(self, stage).named_children():
                if not child.isdigit():
                    mapping[f"{stage}.{child}"] = f"{stage}.{child}"
        return mapping


class StemBlocksModel(StagedModel):
    """A :class:`StagedModel` made of a ``ConvBNAct`` stem and stages of blocks.

    Its layers are the stem and every block; its constructor takes ``blocks`` (blocks per
    stage), so a pruned variant is ``arch_config()`` with fewer blocks. Subclasses set ``stem``
    and implement :meth:`arch_config` and :meth:`_block_is_removable`.
    """

    stem: ConvBNAct

    def tap_points(self, mode: str = "block") -> list[tuple[str, nn.Module]]:
        """``block``: stem + every block; ``official``: ``stem.conv`` (pre-BN) + every block."""
        if check_tap_mode(mode) == "block":
            first: tuple[str, nn.Module] = ("stem", self.stem)
        else:
            first = ("stem.conv", self.stem.conv)
        return [first] + [nb for stage in self.stage_blocks() for nb in stage]

    def _kwargs_for_kept(self, kept: list[list[int]]) -> dict[str, Any]:
        return {**self.arch_config(), "blocks": [len(k) for k in kept]}


class ResNetStages(StemBlocksModel):
    """The CIFAR ResNets' common base (projection and option-A shortcuts).

    Subclasses set ``name``, ``num_classes``, ``in_channels``, ``blocks`` (blocks per stage) and
    ``stem``, and say which blocks are removable (:meth:`_block_is_removable`).
    """

    name: str
    num_classes: int
    in_channels: int
    blocks: list[int]
    stage_names: tuple[str, ...]
    stem_channels: int

    def arch_config(self) -> dict[str, Any]:
        """``{"name", "num_classes", "in_channels", "blocks"}``; ``build_model(**cfg)`` rebuilds."""
        fixed = {key: getattr(self, key) for key in ("name", "num_classes", "in_channels")}
        return {**fixed, "blocks": list(self.blocks)}

    def _build_body(
        self,
        block: Callable[[int, int, int], nn.Module],
        widths: Sequence[int],
        strides: Sequence[int],
        expansion: int = 1,
    ) -> None:
        """Stages ``layer1..`` of ``blocks[i]`` blocks (the first strided), pooling and ``fc``.

        Args:
            block: ``(in_planes, planes, stride) -> block``.
            widths: Planes per stage.
            strides: Stride of each stage's first block.
            expansion: Output channels per plane of a block (4 for bottlenecks).
        """
        in_planes = self.stem_channels
        for stage, (planes, n, stride) in enumerate(
            zip(widths, self.blocks, strides, strict=True), start=1
        ):
            layers = []
            for i in range(n):
                layers.append(block(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes * expansion
            self.add_module(f"layer{stage}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, self.num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        """(B, in_channels, H, W) -> logits (B, num_classes)."""
        x = self.stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


class ConvBNAct(nn.Module):
    """Conv-BN-activation unit: a "layer" of VGG (paper 1 Sec. 3.2) and the ResNet stems.

    Children ``conv``, ``bn``, ``act``: the official taps read ``conv`` (before BN), the block
    taps read the unit's output (after the activation).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel; padding keeps the size at stride 1.
        stride: convolution stride.
        bias: conv bias (VGG-BN keeps it, as torchvision and the official code do).
        groups: conv groups (depthwise convs in MobileNetV2).
        act: activation module; ``nn.ReLU()`` when None.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        bias: bool = False,
        groups: int = 1,
        act: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=(kernel_size - 1) // 2,
            bias=bias,
            groups=groups,
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = act if act is not None else nn.ReLU()

    @property
    def in_channels(self) -> int:
        """Input channels of the conv."""
        return self.conv.in_channels

    @property
    def out_channels(self) -> int:
        """Output channels of the conv."""
        return self.conv.out_channels

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H/stride, W/stride)."""
        return self.act(self.bn(self.conv(x)))


def depth_constructor(
    name: str, build: Callable[[str, int, int, list[int] | None], nn.Module], doc: str
) -> Callable[..., nn.Module]:
    """The torchvision-style constructor ``name(num_classes, in_channels, blocks)`` of a ResNet.

    One per entry of a family's depth table, so every depth is built the same way.

    Args:
        name: The constructor's name (also the model's ``arch_config()["name"]``).
        build: ``(name, num_classes, in_channels, blocks) -> model``.
        doc: First docstring line; a note on ``blocks`` (the pruned variants) is appended.
    """

    def constructor(
        num_classes: int = 10, in_channels: int = 3, blocks: list[int] | None = None
    ) -> nn.Module:
        return build(name, num_classes, in_channels, blocks)

    constructor.__name__ = constructor.__qualname__ = name
    constructor.__module__ = build.__module__
    constructor.__doc__ = doc + "\n\n``blocks`` overrides the blocks per stage."
    return constructor


def init_weights(model: nn.Module) -> None:
    """He (fan-out) init for convs as torchvision does; BN to identity; Linear N(0, 0.01).

    Linear layers get N(0, 0.01) weights and zero bias like torchvision's VGG/MobileNetV2.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
