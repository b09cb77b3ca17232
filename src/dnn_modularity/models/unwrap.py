"""The one place that looks through wrappers to the network inside.

Three questions, one walk: the module to *call* for an eager forward pass
(`strip_runtime_wrappers`: DDP/DataParallel, `torch.compile`, Lightning strategy wrappers), the
bare network whose module names the taps use (`unwrap_model`: also `Normalized` and a
classifier's `.net`), and the prunable network (`bare_model`: `unwrap_model` plus the check that
it declares the pruning interface). Also `module_device` (where a module's tensors live) and
`eval_mode` (eval mode for a block of code, the previous mode restored afterwards).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from dnn_modularity.models.normalized import Normalized

__all__ = ["bare_model", "eval_mode", "module_device", "strip_runtime_wrappers", "unwrap_model"]


def strip_runtime_wrappers(model: nn.Module) -> nn.Module:
    """Look through DDP/DataParallel, torch.compile and Lightning strategy wrappers.

    The result is the module to *call* for an eager forward pass with the same maths (the
    normalisation of a :class:`Normalized` is kept).
    """
    while True:
        orig = getattr(model, "_orig_mod", None)
        if isinstance(orig, nn.Module):
            model = orig
            continue
        fwd = getattr(model, "_forward_module", None)
        if isinstance(fwd, nn.Module) and not hasattr(model, "tap_points"):
            model = fwd
            continue
        inner = getattr(model, "module", None)
        if isinstance(inner, nn.Module) and (
            isinstance(model, nn.DataParallel | nn.parallel.DistributedDataParallel)
            or (not hasattr(model, "tap_points") and list(model.children()) == [inner])
        ):
            model = inner
            continue
        return model


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare network whose module names the taps use.

    Looks through DDP/DataParallel (``.module``), ``torch.compile`` (``._orig_mod``), Lightning
    strategy wrappers (``._forward_module``), :class:`Normalized` (``.net``) and any module without
    ``tap_points`` that holds a network with ``tap_points`` as ``.net``.
    """
    while True:
        model = strip_runtime_wrappers(model)
        if isinstance(model, Normalized):
            model = model.net
            continue
        net = getattr(model, "net", None)
        if (
            not hasattr(model, "tap_points")
            and isinstance(net, nn.Module)
            and hasattr(strip_runtime_wrappers(net), "tap_points")
        ):
            model = net
            continue
        return model


def bare_model(net: nn.Module) -> nn.Module:
    """The prunable network inside its wrappers (see `unwrap_model`).

    Raises:
        ValueError: when the network inside does not declare ``removable_layers`` (the model
            zoo's staged CIFAR networks, MobileNetV2 and the ImageNet ResNets do; the torchvision
            ImageNet VGG-BNs do not, and the message says why).
    """
    bare = unwrap_model(net)
    if hasattr(bare, "removable_layers") and hasattr(bare, "layer_mapping"):
        return bare
    reason = str(getattr(bare, "not_prunable_reason", ""))
    why = f"{reason}. " if reason else ""
    raise ValueError(
        f"{type(net).__name__} cannot be layer-pruned: {why}No wrapped module declares "
        "removable_layers()/without_layers()/layer_mapping() (the staged CIFAR models, "
        "mobilenet_v2 and the imagenet_resnet* models of dnn_modularity.models do)"
    )


_CPU = torch.device("cpu")


def module_device(model: nn.Module, default: torch.device | None = _CPU) -> torch.device | None:
    """Device of the module's first parameter or buffer (`default` for a tensor-free module)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return default


@contextmanager
def eval_mode(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Put `model` in eval mode and restore every submodule's own flag afterwards.

    Restoring each submodule (not just the top level) keeps a BN layer that was frozen in eval
    mode on purpose in eval mode.

    Args:
        model: Any module.
        enabled: False: leave the modes alone (for callers that switch it on by a flag).
    """
    if not enabled:
        yield
        return
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training
