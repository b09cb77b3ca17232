"""Parameter, MAC and FLOP counts, named honestly.

``count_costs`` runs one forward pass under ``torch.utils.flop_counter.FlopCounterMode``, the
counter maintained in PyTorch, which counts the matrix products of convolutions and linear layers
(and other matmuls) as 2 FLOPs per multiply-accumulate. We report both:

- ``macs``: multiply-accumulates of conv and linear layers. **This is what the papers call
  "FLOPs"**: paper 1 (Sec. 5.2, Table 1) measures "FLOPs" with thop, which counts MACs (thop also
  adds BN/ReLU/pool terms, about 1.7% for ResNet-56: 127.62 M vs 125.49 M). Compare against the
  papers' "FLOPs" with ``macs``.
- ``flops = 2 * macs``: floating-point operations of the same products.

BN, activations, pooling, additions and padding are not counted. Reference values at 32×32 and
10 classes: CIFAR ResNet-56 853,018 params / 125.49 M MACs; ResNet-110 1.73 M / 253 M;
CIFAR ResNet-18 11.17 M / 0.56 G; CIFAR VGG-16-BN 15.25 M / 313 M.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dnn_modularity.models.unwrap import bare_model, eval_mode

__all__ = ["Costs", "PruningCosts", "count_costs", "pruning_costs"]


@dataclass(frozen=True)
class Costs:
    """Model costs for one input.

    Attributes:
        params: number of parameters (``p.numel()`` over ``model.parameters()``; no buffers).
        macs: multiply-accumulates of one forward pass (conv + linear); the papers' "FLOPs".
        flops: ``2 * macs``.
    """

    params: int
    macs: int
    flops: int

    def __str__(self) -> str:
        return (
            f"params={self.params / 1e6:.3f}M MACs={self.macs / 1e6:.2f}M "
            f"FLOPs={self.flops / 1e6:.2f}M"
        )


def count_costs(model: nn.Module, input_size: Sequence[int]) -> Costs:
    """Count parameters, MACs and FLOPs of ``model`` for an input of ``input_size``.

    The forward pass runs in eval mode under ``torch.no_grad()`` (train/eval flags are restored)
    on the model's device. The model may live on the ``meta`` device (build it inside
    ``with torch.device("meta"):``), which counts large ImageNet models without computing
    anything.

    Args:
        model: the network (a :class:`~dnn_modularity.models.Normalized` wrapper is fine: its
            normalisation has no MACs).
        input_size: ``(C, H, W)`` for one image (batch 1, the papers' convention) or
            ``(B, C, H, W)``: costs are for the whole input.

    Returns:
        ``Costs(params, macs, flops)``.

    Raises:
        ValueError: when ``input_size`` is not 3 or 4 positive ints.
    """
    shape = tuple(int(s) for s in input_size)
    if len(shape) not in (3, 4) or any(s < 1 for s in shape):
        raise ValueError(
            f"input_size must be (C, H, W) or (B, C, H, W) positive ints, got {tuple(input_size)!r}"
        )
    if len(shape) == 3:
        shape = (1, *shape)
    params = sum(p.numel() for p in model.parameters())
    tensor = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), None)
    device = tensor.device if tensor is not None else torch.device("cpu")
    dtype = tensor.dtype if tensor is not None and tensor.is_floating_point() else torch.float32
    x = torch.zeros(shape, device=device, dtype=dtype)
    counter = FlopCounterMode(display=False)
    with eval_mode(model), torch.no_grad(), counter:
        model(x)
    flops = int(counter.get_total_flops())
    return Costs(params=int(params), macs=flops // 2, flops=flops)


@dataclass(frozen=True)
class PruningCosts:
    """Parent vs pruned costs (paper 1, Table 1 reports params and FLOPs reductions).

    ``flops = 2 × macs`` (conv + linear, ``count_costs``); paper 1 counts
    with thop, whose "FLOPs" are MACs, so *reductions* are comparable, absolute values are not.
    Reductions are percentages: ``100 × (1 − pruned / parent)``.
    """

    params: int
    macs: int
    flops: int
    pruned_params: int
    pruned_macs: int
    pruned_flops: int

    @property
    def params_reduction(self) -> float:
        """Percent fewer parameters."""
        return _reduction(self.params, self.pruned_params)

    @property
    def macs_reduction(self) -> float:
        """Percent fewer multiply-accumulates."""
        return _reduction(self.macs, self.pruned_macs)

    @property
    def flops_reduction(self) -> float:
        """Percent fewer FLOPs."""
        return _reduction(self.flops, self.pruned_flops)

    def to_dict(self) -> dict[str, Any]:
        """Counts and reductions as a flat dict."""
        return {
            **asdict(self),
            "params_reduction": self.params_reduction,
            "macs_reduction": self.macs_reduction,
            "flops_reduction": self.flops_reduction,
        }


def _reduction(before: int, after: int) -> float:
    return 100.0 * (1.0 - after / before) if before else float("nan")


def pruning_costs(
    parent_net: nn.Module, pruned_net: nn.Module, input_size: Sequence[int]
) -> PruningCosts:
    """Params / MACs / FLOPs of both networks, by :func:`count_costs`.

    Args:
        parent_net: the unpruned network (or a wrapper).
        pruned_net: the pruned network (or a wrapper).
        input_size: one input, ``(C, H, W)`` or ``(1, C, H, W)``.
    """
    size = tuple(int(s) for s in input_size)
    if len(size) == 3:
        size = (1, *size)
    a = count_costs(bare_model(parent_net), size)
    b = count_costs(bare_model(pruned_net), size)
    return PruningCosts(
        params=int(a.params),
        macs=int(a.macs),
        flops=int(a.flops),
        pruned_params=int(b.params),
        pruned_macs=int(b.macs),
        pruned_flops=int(b.flops),
    )
