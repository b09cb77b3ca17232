"""``Normalized``: a network that takes [0, 1] images and normalises them itself.

Attacks and analyses work in pixel space ([0, 1], where an epsilon or a clip means what it says);
the per-channel normalisation ``(x - mean) / std`` is the model's first operation. The official
code of paper 1 attacked normalised inputs and clipped them to [0, 1]; this wrapper avoids that.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["Normalized"]


class Normalized(nn.Module):
    """Wrap ``net`` so that ``forward(x)`` computes ``net((x - mean) / std)``.

    ``mean`` and ``std`` are non-persistent buffers (they follow ``.to(device)`` but are not in
    the ``state_dict``, whose keys are ``net.<key>``), so a checkpoint's weights load into any
    normalisation. ``tap_points`` and ``arch_config`` delegate to ``net``; tap names are those of
    ``net`` (``dnn_modularity.taps`` unwraps this class).

    Args:
        net: the bare network; input (B, C, H, W).
        mean: per-channel mean, length C (or one value for every channel).
        std: per-channel standard deviation, length C (or one value), all > 0.

    Raises:
        ValueError: empty or non-positive ``std``, or a length that differs from the network's
            ``in_channels`` (when ``net.arch_config()`` reports it).
    """

    def __init__(
        self, net: nn.Module, mean: Sequence[float] | float, std: Sequence[float] | float
    ) -> None:
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
        if mean_t.numel() == 0 or std_t.numel() == 0:
            raise ValueError(f"mean and std must be non-empty, got mean={mean!r} std={std!r}")
        if mean_t.numel() != std_t.numel():
            raise ValueError(f"mean and std lengths differ: mean={mean!r} std={std!r}")
        if not bool((std_t > 0).all()):
            raise ValueError(f"std must be > 0, got {std!r}")
        in_channels = _in_channels(net)
        if in_channels is not None and mean_t.numel() not in (1, in_channels):
            raise ValueError(
                f"mean/std have {mean_t.numel()} channels but the network takes {in_channels}: "
                f"mean={mean!r} std={std!r}"
            )
        self.net = net
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", std_t.view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """x: (B, C, H, W) in [0, 1] -> the network's output."""
        return self.net((x - self.mean) / self.std)

    def tap_points(self, mode: str = "block") -> list[tuple[str, nn.Module]]:
        """The wrapped network's tap points (names relative to ``net``)."""
        return self.net.tap_points(mode)

    def arch_config(self) -> dict[str, Any]:
        """The wrapped network's ``arch_config()``."""
        return self.net.arch_config()

    def extra_repr(self) -> str:
        """Shown in ``repr(module)``."""
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def _in_channels(net: nn.Module) -> int | None:
    arch = getattr(net, "arch_config", None)
    if arch is None:
        return None
    value = arch().get("in_channels")
    return int(value) if value is not None else None
