r"""Models this package did not define: any torchvision classifier, any timm model, by name.

``build_model("torchvision:<name>", num_classes=..., in_channels=..., weights=None, **kwargs)``
builds ``torchvision.models.get_model(<name>)`` (any name of
``torchvision.models.list_models(module=torchvision.models)``: ``convnext_tiny``, ``vit_b_16``,
``efficientnet_b0``, ...); ``build_model("timm:<name>", num_classes=..., in_channels=...,
pretrained=False, **kwargs)`` builds ``timm.create_model(<name>)`` when the optional ``timm``
package is installed (``pip install dnn-modularity[timm]``).

The result is the library's own module (same class behaviour, module names, ``state_dict`` keys
and weights) given the two methods every model of this package has (see
:mod:`dnn_modularity.models._base`): ``tap_points(mode)`` and ``arch_config()``. Technically its
class is swapped for a subclass of its own class that adds them (:func:`adopt`); it still passes
``isinstance`` checks against the original class, pickles and deep-copies.

Tap modes: ``block`` (below); ``official`` does not exist (paper 1's code hooks its own VGGs and
ResNets only) and raises. Module names (``["features.3.0"]``), ``"re:<regex>"`` and selectors
work on every model (:mod:`dnn_modularity.taps`).

``block`` taps, by source:

- timm: the modules of the model's ``feature_info`` (the stage outputs timm itself exposes as
  feature maps: e.g. ``act1, layer1 .. layer4`` for a ResNet, ``blocks.0 .. blocks.11`` for a
  ViT).
- torchvision (and :func:`default_block_taps` for any module): the outermost modules whose
  class name marks a network block (:data:`BLOCK_CLASS_PATTERN`: ResNet ``BasicBlock``/
  ``Bottleneck``, ConvNeXt ``CNBlock``, ViT ``EncoderBlock``, Swin ``SwinTransformerBlock``,
  ``InvertedResidual``, ``MBConv``, ``Fire``, ``Inception*``, DenseNet blocks and transitions,
  RegNet blocks), auxiliary heads (``*Aux*``, which do not run in eval mode) excluded; where
  there are none (AlexNet, VGG: plain chains of layers), every activation module (the ReLU after
  each conv and in the classifier); where there are none either, the top-level children.
"""

from __future__ import annotations

import difflib
import importlib.util
import re
from typing import Any

from torch import nn
from torchvision import models as tvm

from ._base import ACTIVATIONS, check_tap_mode

__all__ = [
    "BLOCK_CLASS_PATTERN",
    "EXTERNAL_SOURCES",
    "ExternalModel",
    "adopt",
    "build_external",
    "default_block_taps",
    "is_external_name",
]

EXTERNAL_SOURCES: tuple[str, ...] = ("torchvision", "timm")
"""Prefixes of external model names: ``"torchvision:<name>"``, ``"timm:<name>"``."""

BLOCK_CLASS_PATTERN = re.compile(
    r"Block|Bottleneck|InvertedResidual|MBConv|Fire|Inception[A-E]?$|Transition"
)
"""Class names of network blocks (searched, not matched) for :func:`default_block_taps`."""

_ACTIVATIONS = ACTIVATIONS


def is_external_name(name: Any) -> bool:
    """True for ``"torchvision:<name>"`` / ``"timm:<name>"`` model names."""
    return isinstance(name, str) and name.split(":", 1)[0] in EXTERNAL_SOURCES and ":" in name


def default_block_taps(model: nn.Module) -> list[str]:
    """Module names of a sensible "one layer per block" tap set of any model (see module doc).

    Rule: the outermost modules whose class name contains :data:`BLOCK_CLASS_PATTERN` (no
    ``Aux`` in it), in module order; else every activation module; else the top-level children.

    Args:
        model: Any torch model (names are relative to it: pass the bare network).

    Returns:
        Module names (non-empty for a model with at least one child), in module order.
    """
    blocks: list[str] = []
    for name, module in model.named_modules():
        kind = type(module).__name__
        if (
            name
            and BLOCK_CLASS_PATTERN.search(kind)
            and "Aux" not in kind
            and not any(name.startswith(outer + ".") for outer in blocks)
        ):
            blocks.append(name)
    if blocks:
        return blocks
    acts = [n for n, m in model.named_modules() if n and isinstance(m, _ACTIVATIONS)]
    return acts or [n for n, _ in model.named_children()]


class ExternalModel:
    """Mixin giving an external model the zoo interface (``tap_points``, ``arch_config``).

    Set by :func:`adopt`; the model's class becomes ``type(name, (ExternalModel, cls), {})``.
    """

    #: Why :func:`dnn_modularity.pruning.bare_model` refuses this model.
    not_prunable_reason = (
        "models built from torchvision/timm names have no layer-removal API; the staged models "
        "of dnn_modularity.models can be pruned"
    )
    _dnn_base: type[nn.Module]
    _dnn_arch: dict[str, Any]
    _dnn_block_taps: list[str]

    def tap_points(self, mode: str = "block") -> list[tuple[str, nn.Module]]:
        """``block``: the taps chosen at build time (module doc); ``official`` raises.

        Raises:
            ValueError: ``official`` (only paper 1's own networks have official taps) or an
                unknown mode.
        """
        if check_tap_mode(mode) != "block":
            raise ValueError(
                f"{self._dnn_arch['name']} has no {mode!r} taps (paper 1's code hooks its own "
                "VGGs and ResNets only); use 'block', module names, 're:<regex>' or a selector"
            )
        get = self.get_submodule  # type: ignore[attr-defined]
        return [(name, get(name)) for name in self._dnn_block_taps]

    def arch_config(self) -> dict[str, Any]:
        """``{"name", "num_classes", "in_channels", ...}``; ``build_model(**cfg)`` rebuilds it.

        Weights are not part of it (``weights``/``pretrained`` are reset): rebuilding gives the
        same architecture, and the weights come from the checkpoint being loaded.
        """
        return dict(self._dnn_arch)

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        # The subclass is made at run time, so pickle by the original class and re-adopt.
        return (_new_adopted, (self._dnn_base,), self.__getstate__())  # type: ignore[attr-defined]


_ADOPTED: dict[type, type] = {}


def _adopted_class(cls: type[nn.Module]) -> type:
    if cls not in _ADOPTED:
        _ADOPTED[cls] = type(
            cls.__name__,
            (ExternalModel, cls),
            {"__module__": __name__, "__qualname__": cls.__qualname__, "_dnn_base": cls},
        )
    return _ADOPTED[cls]


def _new_adopted(cls: type[nn.Module]) -> nn.Module:
    """Unpickling: an empty instance of the adopted subclass of ``cls`` (state set after)."""
    return object.__new__(_adopted_class(cls))


def adopt(model: nn.Module, arch: dict[str, Any], block_taps: list[str]) -> nn.Module:
    """Give ``model`` (in place) ``tap_points``/``arch_config`` by swapping in a subclass.

    Args:
        model: The external model instance.
        arch: Its ``arch_config()`` (must contain ``name``).
        block_taps: Module names of its ``block`` taps (checked to exist).

    Returns:
        ``model`` itself.

    Raises:
        ValueError: A tap name that is not a module of ``model``, or no taps.
    """
    modules = dict(model.named_modules())
    missing = [n for n in block_taps if n not in modules or not n]
    if missing or not block_taps:
        raise ValueError(f"block taps {missing or block_taps} are not modules of {arch['name']}")
    model.__class__ = _adopted_class(type(model))
    model._dnn_arch = dict(arch)
    model._dnn_block_taps = list(block_taps)
    return model


def _replace_input_channels(model: nn.Module, in_channels: int, name: str) -> None:
    """Swap the first 3-channel ``Conv2d`` (in module order) for one taking ``in_channels``."""
    for mod_name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            if module.groups != 1:
                raise ValueError(f"{name}: the first conv is grouped; cannot adapt in_channels")
            new = nn.Conv2d(
                in_channels,
                module.out_channels,
                module.kernel_size,
                stride=module.stride,
                padding=module.padding,
                dilation=module.dilation,
                bias=module.bias is not None,
                padding_mode=module.padding_mode,
            )
            parent_name, _, child = mod_name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
            return
    raise ValueError(f"{name}: no 3-channel Conv2d found to adapt to in_channels={in_channels}")


def _check_in_channels(in_channels: Any, pretrained: bool, name: str) -> int:
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
    if pretrained and in_channels != 3:
        raise ValueError(
            f"{name}: pretrained weights expect 3 input channels, got in_channels={in_channels}"
        )
    return in_channels


def _torchvision(name: str, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:

    valid = tvm.list_models(module=tvm)  # classification models only
    if name not in valid:
        close = difflib.get_close_matches(name, valid, n=3)
        hint = f"; did you mean {close}?" if close else ""
        raise ValueError(
            f"unknown torchvision classification model {name!r}{hint}; valid names (use "
            f"'torchvision:<name>'): {valid}"
        )
    weights = kwargs.pop("weights", None)
    full = f"torchvision:{name}"
    _check_in_channels(in_channels, weights is not None, full)
    try:
        model = tvm.get_model(name, weights=weights, num_classes=num_classes, **kwargs)
    except TypeError as err:  # an argument the builder does not take
        raise ValueError(f"{full} does not accept arguments {sorted(kwargs)}: {err}") from err
    if in_channels != 3:
        _replace_input_channels(model, in_channels, full)
    arch = {
        "name": full,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "weights": None,
        **kwargs,
    }
    return adopt(model, arch, default_block_taps(model))


def _timm(name: str, num_classes: int, in_channels: int, **kwargs: Any) -> nn.Module:
    if importlib.util.find_spec("timm") is None:
        raise ImportError(
            f"timm:{name} needs the optional package timm: pip install 'dnn-modularity[timm]' "
            "(or pip install timm)"
        )
    # local: timm is an optional extra (pip install dnn-modularity[timm])
    import timm

    full = f"timm:{name}"
    pretrained = bool(kwargs.pop("pretrained", False))
    _check_in_channels(in_channels, pretrained, full)
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f"; did you mean {close}?" if close else ""
        raise ValueError(f"unknown timm model {name!r}{hint} (timm.list_models() lists them)")
    try:
        model = timm.create_model(
            name, pretrained=pretrained, num_classes=num_classes, in_chans=in_channels, **kwargs
        )
    except TypeError as err:
        raise ValueError(f"{full} does not accept arguments {sorted(kwargs)}: {err}") from err
    modules = dict(model.named_modules())
    info = getattr(model, "feature_info", None) or []
    taps = [d["module"] for d in info if isinstance(d, dict) and d.get("module") in modules]
    arch = {
        "name": full,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "pretrained": False,
        **kwargs,
    }
    return adopt(model, arch, taps or default_block_taps(model))


def build_external(
    name: str, num_classes: int = 1000, in_channels: int = 3, **kwargs: Any
) -> nn.Module:
    """Build ``"torchvision:<name>"`` or ``"timm:<name>"`` with the zoo interface.

    Args:
        name: ``"torchvision:<model>"`` (any torchvision classification model) or
            ``"timm:<model>"`` (needs timm).
        num_classes: Outputs of the classifier head.
        in_channels: Image channels; not 3: the first 3-channel conv is replaced (torchvision)
            or timm's ``in_chans`` is used; needs random init.
        **kwargs: Passed to the builder: torchvision ``weights`` (None: random init, nothing
            downloaded) and builder arguments; timm ``pretrained`` (default False) and
            ``create_model`` arguments.

    Returns:
        The model, with ``tap_points`` and ``arch_config`` (see :class:`ExternalModel`).

    Raises:
        ValueError: Unknown source or model name (valid ones listed), bad arguments.
        ImportError: ``timm:`` names without timm installed (naming the ``timm`` extra).
    """
    source, _, model_name = name.partition(":")
    if source not in EXTERNAL_SOURCES or not model_name:
        raise ValueError(
            f"external model names are 'torchvision:<name>' or 'timm:<name>', got {name!r}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    builder = _torchvision if source == "torchvision" else _timm
    return builder(model_name, num_classes, in_channels, **kwargs)
