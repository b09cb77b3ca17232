"""Surgery: the physically smaller network without the removed layers, inheriting kept weights.

:func:`build_pruned` builds it with the model's own ``without_layers`` +
:func:`dnn_modularity.models.build_model` and copies every kept layer's weights by the model's
``layer_mapping`` (:func:`inherit_state_dict`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from dnn_modularity.models import build_model
from dnn_modularity.models.unwrap import bare_model

__all__ = ["build_pruned", "inherit_state_dict"]


def _map_key(key: str, mapping: Mapping[str, str]) -> str | None:
    """New state_dict key of ``key`` by the longest matching module-name prefix, else None."""
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in mapping:
            rest = ".".join(parts[cut:])
            return f"{mapping[prefix]}.{rest}"
    return None


def inherit_state_dict(
    parent: nn.Module, child: nn.Module, removed: Sequence[str]
) -> dict[str, str]:
    """Copy every kept tensor (parameters and buffers) of ``parent`` into ``child``.

    Keys are translated by ``parent.layer_mapping(removed)``; keys under a removed layer are
    dropped. Every state_dict entry of ``child`` must receive exactly one tensor of the same shape.

    Returns:
        ``{parent key: child key}`` of the copied entries.

    Raises:
        RuntimeError: a kept parent key maps to no child key or to a different shape, or a child
            entry receives no tensor (the two architectures do not correspond).
    """
    bare_p, bare_c = bare_model(parent), bare_model(child)
    mapping = bare_p.layer_mapping(list(removed))
    removed_prefixes = tuple(f"{r}." for r in removed)
    src = bare_p.state_dict()
    dst = bare_c.state_dict()
    copied: dict[str, str] = {}
    new_sd: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    for key, tensor in src.items():
        if key.startswith(removed_prefixes):
            continue
        new_key = _map_key(key, mapping)
        if new_key is None or new_key not in dst:
            problems.append(f"{key} -> {new_key} (no such entry in the pruned network)")
            continue
        if dst[new_key].shape != tensor.shape:
            problems.append(
                f"{key} -> {new_key}: shape {tuple(tensor.shape)} != {tuple(dst[new_key].shape)}"
            )
            continue
        if new_key in new_sd:
            problems.append(f"{key} -> {new_key}: target filled twice")
            continue
        new_sd[new_key] = tensor.detach().clone()
        copied[key] = new_key
    missing = sorted(set(dst) - set(new_sd))
    if missing:
        problems.append(f"pruned-network entries with no source: {missing}")
    if problems:
        raise RuntimeError("weight inheritance failed:\n  " + "\n  ".join(problems))
    bare_c.load_state_dict(new_sd, strict=True)
    return copied


def build_pruned(parent_net: nn.Module, removed: Sequence[str]) -> nn.Module:
    """Physically smaller network without the layers ``removed``, inheriting kept weights.

    Built with the model's own ``without_layers`` and :func:`dnn_modularity.models.build_model`
    (so it is an ordinary zoo model: ``arch_config()`` rebuilds it, taps work, it trains), then
    every kept layer's parameters and buffers (BN running stats) are copied by the model's
    ``layer_mapping`` and checked (names and shapes). Removed blocks are gone, not masked.

    Args:
        parent_net: a zoo network (or a wrapper around one: Normalized, DDP, compiled,
            the classifier); it is not modified.
        removed: layer names (a subset of ``removable_layers(parent_net)``).

    Returns:
        The bare pruned network, on the parent's device and dtype, in the parent's train/eval mode.

    Raises:
        ValueError: unknown / non-removable names, or a stage that would lose all blocks
            (from the model's ``without_layers``).
        RuntimeError: weights could not be matched one to one.
    """
    bare = bare_model(parent_net)
    removed = list(removed)
    arch = dict(bare.without_layers(removed))
    child = build_model(**arch)
    ref = next(bare.parameters(), None)
    if ref is not None:
        child = child.to(device=ref.device, dtype=ref.dtype)
    inherit_state_dict(bare, child, removed)
    child.train(bare.training)
    return child
