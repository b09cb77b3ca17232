"""Which pruned networks a `prune` run builds: the rule's one decision, or a sweep's variants.

``pruning=delta|criterion1|explicit`` gives one :class:`PruningDecision`;
``pruning=single_layer_sweep`` gives one per listed layer (paper 1, Fig. 10(b)): each layer on
its own (``mode=single``) or the first j layers in variant j (``mode=cumulative``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig
from torch import nn

from dnn_modularity.pruning.rules import PruningDecision, decide_for_model, removable_layers
from dnn_modularity.records import Curve

__all__ = ["SWEEP_MODES", "SWEEP_RULE", "plan_decisions", "rule_kwargs", "sweep_decisions"]

#: The rule name of the single-layer sweep (Fig. 10b); the other rules are `rules.RULES`.
SWEEP_RULE = "single_layer_sweep"


def rule_kwargs(pruning: DictConfig) -> dict[str, Any]:
    """The keyword arguments of `decide` for ``cfg.pruning``'s rule (``tau``, ``remove`` ...)."""
    rule = str(pruning.rule)
    kwargs: dict[str, Any] = {"on_empty_stage": str(pruning.get("on_empty_stage", "error"))}
    if rule == "delta":
        kwargs["tau"] = float(pruning.tau)
    elif rule == "criterion1":
        kwargs["tolerance"] = float(pruning.tolerance)
    elif rule == "explicit":
        remove = pruning.get("remove")
        if remove is None:
            raise ValueError(
                "pruning=explicit needs pruning.remove=[<layer>, ...] (removable layer names)"
            )
        kwargs["remove"] = [remove] if isinstance(remove, str) else list(remove)
    return kwargs


#: How ``single_layer_sweep`` builds its variants: ``single`` removes each listed layer on its
#: own; ``cumulative`` removes the first j listed layers in variant j (paper 1's VGG11_1..3,
#: removed back to front from the parent, each variant inheriting the parent's weights).
SWEEP_MODES: tuple[str, ...] = ("single", "cumulative")


def sweep_decisions(
    pruning: DictConfig, net: nn.Module, curve: Curve, curve_kwargs: Mapping[str, Any]
) -> tuple[list[PruningDecision], list[str]]:
    """The variants of ``pruning=single_layer_sweep`` and the layer each one adds (Fig. 10b).

    ``pruning.layers`` lists the layers in removal order (null: every removable layer; back to
    front for ``mode=cumulative``); ``pruning.max_layers`` keeps the deepest N of them.
    """
    mode = str(pruning.get("mode", "single"))
    if mode not in SWEEP_MODES:
        raise ValueError(f"unknown pruning.mode {mode!r}; valid choices: {list(SWEEP_MODES)}")
    listed = pruning.get("layers")
    if listed is None:
        layers = removable_layers(net)
        if mode == "cumulative":
            layers = layers[::-1]  # paper 1 removes back to front
    else:
        layers = [str(x) for x in listed]
    limit = pruning.get("max_layers")
    if limit is not None:
        # the deepest ones: paper 1 removes back to front
        layers = layers[: int(limit)] if mode == "cumulative" else layers[-int(limit) :]
    off_curve = [name for name in layers if name not in curve.layers]
    if off_curve:
        raise ValueError(
            f"pruning.layers {off_curve} are not on the curve (block taps); curve layers: "
            f"{curve.layers}"
        )
    on_empty = str(pruning.get("on_empty_stage", "error"))
    decisions = [
        decide_for_model(
            net,
            "explicit",
            remove=layers[: j + 1] if mode == "cumulative" else [name],
            on_empty_stage=on_empty,
            **curve_kwargs,
        )
        for j, name in enumerate(layers)
    ]
    return decisions, layers


def plan_decisions(
    pruning: DictConfig, net: nn.Module, curve: Curve | None, curve_kwargs: Mapping[str, Any]
) -> tuple[list[PruningDecision], list[str]]:
    """The decisions of the ``pruning`` config on ``net`` (made, and refused, before training).

    Args:
        pruning: ``cfg.pruning`` (``rule`` and its parameters).
        net: The parent network.
        curve: The parent's curve (None: no curve, only ``explicit`` works).
        curve_kwargs: ``layers``/``values``/``curve_kind`` of the curve for :func:`decide`.

    Returns:
        ``(decisions, sweep_layers)``: one decision per pruned network; for the sweep, the layer
        each variant adds (empty otherwise).

    Raises:
        ValueError: A sweep without a curve, bad layer names, a stage that would be emptied.
    """
    rule = str(pruning.rule)
    if rule == SWEEP_RULE:
        if curve is None:
            raise ValueError("pruning=single_layer_sweep needs a curve (curve=<path> or measured)")
        return sweep_decisions(pruning, net, curve, curve_kwargs)
    return [decide_for_model(net, rule, **rule_kwargs(pruning), **curve_kwargs)], []
