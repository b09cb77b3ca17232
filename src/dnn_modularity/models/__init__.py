"""The model zoo: plain ``nn.Module``s that declare their layer taps.

Constructors are torchvision-style functions taking keyword arguments only; every pruned variant
of the papers is a constructor argument, not a new class:

- CIFAR VGG with BN: ``vgg11_bn, vgg13_bn, vgg16_bn, vgg19_bn(num_classes, in_channels,
  convs_removed, cfg)`` (``vgg19_bn(convs_removed=3)`` is paper 1's VGG19_3).
- CIFAR ResNets with projection shortcuts: ``resnet18 .. resnet152(num_classes, in_channels,
  blocks)`` (``resnet152(blocks=[3, 8, 6, 3])`` is paper 1's Res152_30).
- CIFAR ResNets with option-A shortcuts: ``resnet20 .. resnet110(num_classes, in_channels,
  blocks)`` (``resnet56(blocks=[2, 3, 6])`` is paper 1's Table 1 network).
- ``mobilenet_v2(num_classes, in_channels, width_mult, blocks)`` for 32×32 inputs.
- torchvision ImageNet networks behind the same interface: ``imagenet_resnet18 ..
  imagenet_resnet152(num_classes, weights, in_channels, blocks)``
  (``imagenet_resnet152(blocks=[3, 8, 6, 3])`` is paper 1's ImageNet50 Res152_30),
  ``imagenet_vgg11_bn .. imagenet_vgg19_bn(num_classes, weights, in_channels)``.

Models this package did not define are built by name too (:mod:`.external`):
``build_model("torchvision:convnext_tiny", num_classes=10)`` (any torchvision classification
model, ``weights=None`` by default) and ``build_model("timm:resnet18", num_classes=10)`` (with
the optional ``timm`` extra); they get ``tap_points("block")`` (derived block taps, or timm's
``feature_info``) and ``arch_config()``.

``build_model(name, **kwargs)`` is the registry that Hydra configs (``conf/model/*.yaml``, a plain
dict with ``name`` and the kwargs) go through; ``available_models()`` lists the names. Every
model has ``tap_points(mode)`` (mode in :data:`TAP_MODES`) and ``arch_config()`` with
``build_model(**model.arch_config())`` rebuilding the architecture. The CIFAR models and the
ImageNet ResNets also have ``removable_layers()``, ``without_layers(names)`` and
``layer_mapping(removed)`` for pruning (the torchvision VGG-BNs do not).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from . import imagenet, mobilenet, resnet, resnet_small, vgg
from ._base import TAP_MODES, ConvBNAct, StagedModel, check_tap_mode
from .external import ExternalModel, build_external, default_block_taps, is_external_name
from .normalized import Normalized


def _constructors(*families: Any) -> dict[str, Callable[..., nn.Module]]:
    """Every public function of the family modules that takes ``num_classes``, by name."""
    found = {}
    for family in families:
        for name in family.__all__:
            fn = getattr(family, name)
            if inspect.isfunction(fn) and "num_classes" in inspect.signature(fn).parameters:
                found[name] = fn
    return found


#: Constructor name -> constructor: the registry :func:`build_model` reads. A new family module
#: lists its constructors in its ``__all__`` and joins the tuple here.
_REGISTRY = _constructors(vgg, resnet, resnet_small, mobilenet, imagenet)
# Re-exported under their own names (``from dnn_modularity.models import resnet56``).
globals().update(_REGISTRY)

__all__ = [
    "TAP_MODES",
    "ConvBNAct",
    "ExternalModel",
    "Normalized",
    "StagedModel",
    "UnknownModelError",
    "available_models",
    "build_external",
    "build_model",
    "check_model_name",
    "check_tap_mode",
    "default_block_taps",
    "is_external_name",
    *_REGISTRY,
]


class UnknownModelError(KeyError, ValueError):
    """An unknown model name; both a ``KeyError`` (registry lookup) and a ``ValueError``."""

    def __str__(self) -> str:
        # KeyError's str() is the repr of its argument; show the message as written.
        return str(self.args[0]) if self.args else ""


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`, sorted."""
    return sorted(_REGISTRY)


def check_model_name(name: Any) -> str:
    """Return ``name`` if :func:`build_model` knows it (no model is built, nothing imported).

    Accepted: :func:`available_models` and ``"torchvision:<name>"`` / ``"timm:<name>"`` (whose
    model part is checked when the model is built).

    Raises:
        UnknownModelError: (a ``KeyError`` and ``ValueError``) listing the valid names.
    """
    if name in _REGISTRY or is_external_name(name):
        return name
    raise UnknownModelError(
        f"unknown model {name!r}; available models: {available_models()}, or "
        "'torchvision:<name>' (any torchvision classification model) or 'timm:<name>' (with the "
        "optional timm package)"
    )


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the model ``name`` with constructor kwargs (e.g. from a ``conf/model`` YAML).

    Args:
        name: one of :func:`available_models`, or ``"torchvision:<name>"`` / ``"timm:<name>"``
            (:func:`~dnn_modularity.models.external.build_external`).
        **kwargs: the constructor's keyword arguments; OmegaConf containers are accepted.

    Returns:
        The model; ``model.arch_config()`` gives back ``name`` and the kwargs.

    Raises:
        UnknownModelError: (a ``KeyError`` and ``ValueError``) for an unknown name, listing the
            valid names.
        ValueError: for a keyword the constructor does not take, listing the ones it takes (for
            external models: the builder's own error, as a ``ValueError``).
        ImportError: a ``timm:`` name without timm installed.
    """
    check_model_name(name)
    if is_external_name(name):
        return build_external(name, **{k: _to_builtin(v) for k, v in kwargs.items()})
    fn = _REGISTRY[name]
    accepted = list(inspect.signature(fn).parameters)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"model {name!r} got unknown arguments {unknown}; it accepts {accepted}")
    return fn(**{k: _to_builtin(v) for k, v in kwargs.items()})


def _to_builtin(value: Any) -> Any:
    """OmegaConf ListConfig/DictConfig -> list/dict, so models store plain Python values."""
    if type(value).__module__.startswith("omegaconf"):
        # local: omegaconf (Hydra) only when a config node is passed in
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    return value
