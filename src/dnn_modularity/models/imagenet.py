"""torchvision's ImageNet ResNets and VGG-BNs behind the tap interface (paper 1 Fig. 5, 9).

The classes subclass torchvision's ``ResNet`` and ``VGG``, so module names and ``state_dict``
keys are torchvision's and its pretrained weights load unchanged. ``weights`` is None by default
(random init, nothing downloaded); pass a torchvision weights name (``"DEFAULT"``,
``"IMAGENET1K_V2"``, ``"ResNet50_Weights.IMAGENET1K_V2"``) or enum member to download/load them
via torchvision's cache. With ``num_classes`` other than the weights' 1000 (e.g. ImageNet50), all
weights but the last linear layer's are loaded and that layer is freshly initialised.

ResNets take ``blocks`` (blocks per stage, default torchvision's, e.g. ``[3, 8, 36, 3]`` for
ResNet-152) and have the removal API of the CIFAR models (``removable_layers``,
``without_layers``, ``layer_mapping``; :class:`~dnn_modularity.models._base.StagedModel`): paper
1's ImageNet50 Res152_k (Sec. 5.2, Fig. 9 right) is ``imagenet_resnet152(blocks=[3, 8, 36 - k,
3])``. The VGG-BNs cannot be layer-pruned (see :class:`ImageNetVGG`).

Taps (torchvision module names):

- ResNet ``block``: ``relu`` (the stem's Conv7×7-BN-ReLU output, before the max-pool) then every
  block ``layer1.0 .. layer4.{n-1}``; ``official``: ``conv1`` (before BN) then every block, the
  official code's ``Iresnet`` hooks. ResNet-50: 17 layers.
- VGG ``block``: the ReLU after each Conv-BN (``features.2, features.5, ...``); ``official``: each
  conv (``features.0, features.3, ...``) as the official code's ``Ivgg`` lists. VGG-16: 13 layers.

``arch_config()`` reports the architecture only (``weights: None``): rebuilding it gives the same
shapes, and the weights come from the checkpoint being loaded.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torchvision import models as tvm
from torchvision.models import resnet as tv_resnet
from torchvision.models import vgg as tv_vgg
from torchvision.models._api import WeightsEnum

from ._base import StagedModel, as_int_list, check_tap_mode

__all__ = [
    "ImageNetResNet",
    "ImageNetVGG",
    "imagenet_resnet18",
    "imagenet_resnet34",
    "imagenet_resnet50",
    "imagenet_resnet101",
    "imagenet_resnet152",
    "imagenet_vgg11_bn",
    "imagenet_vgg13_bn",
    "imagenet_vgg16_bn",
    "imagenet_vgg19_bn",
]

_RESNETS: dict[str, tuple[type[nn.Module], list[int], type[WeightsEnum]]] = {
    "imagenet_resnet18": (tv_resnet.BasicBlock, [2, 2, 2, 2], tvm.ResNet18_Weights),
    "imagenet_resnet34": (tv_resnet.BasicBlock, [3, 4, 6, 3], tvm.ResNet34_Weights),
    "imagenet_resnet50": (tv_resnet.Bottleneck, [3, 4, 6, 3], tvm.ResNet50_Weights),
    "imagenet_resnet101": (tv_resnet.Bottleneck, [3, 4, 23, 3], tvm.ResNet101_Weights),
    "imagenet_resnet152": (tv_resnet.Bottleneck, [3, 8, 36, 3], tvm.ResNet152_Weights),
}

_VGGS: dict[str, tuple[str, type[WeightsEnum]]] = {
    "imagenet_vgg11_bn": ("A", tvm.VGG11_BN_Weights),
    "imagenet_vgg13_bn": ("B", tvm.VGG13_BN_Weights),
    "imagenet_vgg16_bn": ("D", tvm.VGG16_BN_Weights),
    "imagenet_vgg19_bn": ("E", tvm.VGG19_BN_Weights),
}


def _resolve_weights(
    weights: WeightsEnum | str | None, enum: type[WeightsEnum]
) -> WeightsEnum | None:
    """Weights name or member -> member of ``enum``.

    Raises:
        ValueError: for a name that is not one of ``enum``'s members (listed).
    """
    if weights is None:
        return None
    try:
        return enum.verify(weights)
    except (KeyError, TypeError, ValueError) as err:
        valid = ["DEFAULT", *[w.name for w in enum]]
        raise ValueError(
            f"unknown weights {weights!r} for {enum.__name__}; valid: {valid}"
        ) from err


def _load(model: nn.Module, weights: WeightsEnum, head_prefix: str, num_classes: int) -> None:
    """Load ``weights`` into ``model``; keep the new head when the class count differs."""
    state = weights.get_state_dict(progress=True, check_hash=True)
    if num_classes != len(weights.meta["categories"]):
        state = {k: v for k, v in state.items() if not k.startswith(head_prefix + ".")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad_missing = [k for k in missing if not k.startswith(head_prefix + ".")]
    if bad_missing or unexpected:
        raise RuntimeError(
            f"weights {weights} do not fit: missing {bad_missing}, unexpected {unexpected}"
        )


def _check_in_channels(in_channels: int, weights: WeightsEnum | None) -> None:
    if in_channels != 3 and weights is not None:
        raise ValueError(
            f"pretrained weights expect 3 input channels, got in_channels={in_channels}"
        )
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")


class ImageNetResNet(tvm.ResNet, StagedModel):
    """torchvision ResNet with taps, ``arch_config`` and layer removal (``imagenet_resnet*``).

    Args:
        name: one of the ``imagenet_resnet*`` names (picks the block type and default depth).
        num_classes: outputs of ``fc``.
        in_channels: image channels (``conv1`` is rebuilt when not 3).
        blocks: blocks per stage (four positive ints); None: torchvision's for ``name``.
    """

    stage_names = ("layer1", "layer2", "layer3", "layer4")

    def __init__(
        self,
        name: str,
        num_classes: int = 1000,
        in_channels: int = 3,
        blocks: list[int] | None = None,
    ) -> None:
        block, default, _ = _RESNETS[name]
        layers = list(default) if blocks is None else as_int_list(blocks, "blocks", length=4)
        super().__init__(block, layers, num_classes=num_classes)
        if in_channels != 3:
            self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.name = name
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)
        self.blocks = layers

    def tap_points(self, mode: str = "block") -> list[tuple[str, nn.Module]]:
        """``block``: stem ``relu`` + every block; ``official``: ``conv1`` + every block."""
        first = ("relu", self.relu) if check_tap_mode(mode) == "block" else ("conv1", self.conv1)
        return [first, *(nb for stage in self.stage_blocks() for nb in stage)]

    def arch_config(self) -> dict[str, Any]:
        """``{"name", "num_classes", "weights": None, "in_channels", "blocks"}``."""
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "weights": None,
            "in_channels": self.in_channels,
            "blocks": list(self.blocks),
        }

    def _block_is_removable(self, block: nn.Module) -> bool:
        # torchvision blocks have an identity shortcut exactly when ``downsample`` is None.
        return getattr(block, "downsample", None) is None

    def _kwargs_for_kept(self, kept: list[list[int]]) -> dict[str, Any]:
        return {**self.arch_config(), "blocks": [len(k) for k in kept]}


class ImageNetVGG(tvm.VGG):
    """torchvision VGG-BN with ``tap_points``/``arch_config`` (built by ``imagenet_vgg*_bn``).

    Not layer-prunable: torchvision keeps every conv, BN, ReLU and pool in one flat ``features``
    ``Sequential`` (tap names ``features.<index>``), so removing a unit renumbers every later
    module and the stage-by-stage removal of :class:`~dnn_modularity.models._base.StagedModel`
    does not apply. Prune the CIFAR-style ``vgg*_bn`` (its ``cfg`` has the removal API) instead.
    """

    #: Why :func:`dnn_modularity.pruning.bare_model` refuses this model.
    not_prunable_reason = (
        "torchvision's VGG keeps all units in one flat `features` Sequential (no stages), so "
        "it has no layer-removal API; the CIFAR-style vgg*_bn models can be pruned"
    )

    def __init__(self, name: str, num_classes: int = 1000, in_channels: int = 3) -> None:
        letter, _ = _VGGS[name]
        super().__init__(
            tv_vgg.make_layers(tv_vgg.cfgs[letter], batch_norm=True), num_classes=num_classes
        )
        if in_channels != 3:
            old = self.features[0]
            self.features[0] = nn.Conv2d(in_channels, old.out_channels, kernel_size=3, padding=1)
            nn.init.kaiming_normal_(self.features[0].weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(self.features[0].bias)
        self.name = name
        self.num_classes = int(num_classes)
        self.in_channels = int(in_channels)

    def tap_points(self, mode: str = "block") -> list[tuple[str, nn.Module]]:
        """``block``: the ReLU after every Conv-BN; ``official``: every conv (before BN)."""
        kind = nn.ReLU if check_tap_mode(mode) == "block" else nn.Conv2d
        return [(f"features.{i}", m) for i, m in enumerate(self.features) if isinstance(m, kind)]

    def arch_config(self) -> dict[str, Any]:
        """``{"name", "num_classes", "in_channels", "weights": None}``."""
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "weights": None,
            "in_channels": self.in_channels,
        }


def _resnet(
    name: str,
    num_classes: int,
    in_channels: int,
    weights: WeightsEnum | str | None,
    blocks: list[int] | None = None,
) -> ImageNetResNet:
    w = _resolve_weights(weights, _RESNETS[name][2])
    _check_in_channels(in_channels, w)
    default = _RESNETS[name][1]
    if w is not None and blocks is not None and list(blocks) != default:
        raise ValueError(
            f"pretrained weights {w} fit {name}'s default blocks {default} only, got "
            f"blocks={list(blocks)!r}; pass weights=None (or build the full network with the "
            "weights and prune it with dnn_modularity.pruning.build_pruned)"
        )
    model = ImageNetResNet(name, num_classes=num_classes, in_channels=in_channels, blocks=blocks)
    if w is not None:
        _load(model, w, "fc", num_classes)
    return model


def _vgg(
    name: str, num_classes: int, in_channels: int, weights: WeightsEnum | str | None
) -> ImageNetVGG:
    w = _resolve_weights(weights, _VGGS[name][1])
    _check_in_channels(in_channels, w)
    model = ImageNetVGG(name, num_classes=num_classes, in_channels=in_channels)
    if w is not None:
        _load(model, w, "classifier.6", num_classes)
    return model


def imagenet_resnet18(
    num_classes: int = 1000,
    weights: WeightsEnum | str | None = None,
    in_channels: int = 3,
    blocks: list[int] | None = None,
) -> ImageNetResNet:
    """Torchvision ResNet-18 (BasicBlocks ``[2, 2, 2, 2]``), optionally with ``weights``.

    ``blocks`` overrides the blocks per stage (then ``weights`` must be None).
    """
    return _resnet("imagenet_resnet18", num_classes, in_channels, weights, blocks)


def imagenet_resnet34(
    num_classes: int = 1000,
    weights: WeightsEnum | str | None = None,
    in_channels: int = 3,
    blocks: list[int] | None = None,
) -> ImageNetResNet:
    """Torchvision ResNet-34 (BasicBlocks ``[3, 4, 6, 3]``), optionally with ``weights``.

    ``blocks`` overrides the blocks per stage (then ``weights`` must be None).
    """
    return _resnet("imagenet_resnet34", num_classes, in_channels, weights, blocks)


def imagenet_resnet50(
    num_classes: int = 1000,
    weights: WeightsEnum | str | None = None,
    in_channels: int = 3,
    blocks: list[int] | None = None,
) -> ImageNetResNet:
    """Torchvision ResNet-50 (Bottlenecks ``[3, 4, 6, 3]``), optionally with ``weights``.

    ``blocks`` overrides the blocks per stage (then ``weights`` must be None).
    """
    return _resnet("imagenet_resnet50", num_classes, in_channels, weights, blocks)


def imagenet_resnet101(
    num_classes: int = 1000,
    weights: WeightsEnum | str | None = None,
    in_channels: int = 3,
    blocks: list[int] | None = None,
) -> ImageNetResNet:
    """Torchvision ResNet-101 (Bottlenecks ``[3, 4, 23, 3]``), optionally with ``weights``.

    ``blocks`` overrides the blocks per stage (then ``weights`` must be None).
    """
    return _resnet("imagenet_resnet101", num_classes, in_channels, weights, blocks)


def imagenet_resnet152(
    num_classes: int = 1000,
    weights: WeightsEnum | str | None = None,
    in_channels: int = 3,
    blocks: list[int] | None = None,
) -> ImageNetResNet:
    """Torchvision ResNet-152 (Bottlenecks ``[3, 8, 36, 3]``), optionally with ``weights``.

    ``blocks`` overrides the blocks per stage (then ``weights`` must be None).

    Paper 1's ImageNet50 Res152_k (k in 5, 11, 16, 21, 26, 30; Sec. 5.2, Fig. 9 right) is
    ``blocks=[3, 8, 36 - k, 3]``.
    """
    return _resnet("imagenet_resnet152", num_classes, in_channels, weights, blocks)


def imagenet_vgg11_bn(
    num_classes: int = 1000, weights: WeightsEnum | str | None = None, in_channels: int = 3
) -> ImageNetVGG:
    """Torchvision VGG-11-BN (optionally with torchvision ``weights``)."""
    return _vgg("imagenet_vgg11_bn", num_classes, in_channels, weights)


def imagenet_vgg13_bn(
    num_classes: int = 1000, weights: WeightsEnum | str | None = None, in_channels: int = 3
) -> ImageNetVGG:
    """Torchvision VGG-13-BN (optionally with torchvision ``weights``)."""
    return _vgg("imagenet_vgg13_bn", num_classes, in_channels, weights)


def imagenet_vgg16_bn(
    num_classes: int = 1000, weights: WeightsEnum | str | None = None, in_channels: int = 3
) -> ImageNetVGG:
    """Torchvision VGG-16-BN (optionally with torchvision ``weights``)."""
    return _vgg("imagenet_vgg16_bn", num_classes, in_channels, weights)


def imagenet_vgg19_bn(
    num_classes: int = 1000, weights: WeightsEnum | str | None = None, in_channels: int = 3
) -> ImageNetVGG:
    """Torchvision VGG-19-BN (optionally with torchvision ``weights``)."""
    return _vgg("imagenet_vgg19_bn", num_classes, in_channels, weights)
