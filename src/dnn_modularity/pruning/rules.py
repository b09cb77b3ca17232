"""Pruning rules: a per-layer curve → the layers to remove.

Two halves:

1. **Rules** (pure functions of a per-layer curve, no torch modules involved):

   * ``delta`` — paper 1 (Lu et al. 2022), Sec. 5.2 "Practicality of layer pruning by modularity":
     "we prune the layer where the curve drops, reaches a plateau or grows slowly". Read as a
     threshold on the increment a layer adds to the curve, ΔM_i = M_i − M_{i−1} (the same ΔM as
     the x axis of Fig. 10(b)): layer i is redundant when ΔM_i < τ. τ = 0.03 is the threshold
     the paper's authors used for ResNet56 (Table 1, blocks [9, 9, 9] → [2, 3, 6]).
   * ``criterion1`` — paper 2, Sec. 4.4, Criterion I: "When the modularity curve reaches the
     maximum value or a plateau period occurs or starts to decline, the corresponding
     convolution layer can be cut off." Our precise reading (see :func:`criterion1_flags`):
     layer i is cut iff it lies after the curve's global maximum, or its increment
     ΔM_i = M_i − M_{i−1} is negative (a decline), or ΔM_i ≤ ``tolerance`` × (max M − min M)
     (a plateau: a step too small to count as a rise, measured relative to the curve's range).
     The decision depends on each layer's own increment, so on a rising curve it is monotone
     in the increments (a layer that adds less than a cut layer is cut too), and it is
     invariant to scaling and shifting the curve, so the same shape gets the same cuts on
     paper 1's Q and on paper 2's M (whose range is about a quarter of Q's).
   * ``explicit`` — a list of layer names (the papers' fixed variants: VGG19_k, VGG11_k,
     ResNet152 stage-3 cuts, ResNet56 [2, 3, 6]).

   A rule *flags* layers from the curve alone; only *removable* layers can actually be
   removed: a layer is a candidate iff removing it leaves a valid network, i.e. its input and
   output shapes match (residual blocks with an identity shortcut — including ``layer1.0`` of a
   CIFAR ResNet, whose stem is as wide as stage 1 — and VGG Conv-BN-ReLU units whose input and
   output channels match, e.g. VGG's first 512 -> 512 unit of stage 5). Position plays no part.
   Flagged layers that are not removable are kept and recorded with the reason.
   No stage is ever emptied. That is not a shape necessity for every stage (all of a CIFAR
   ResNet's stage 1 could go), but the models are built from per-stage block counts ≥ 1 and
   the authors did the same ("to avoid an empty first stage, one block is kept", next to their
   CIFAR-100 ResNet-56): a decision that would empty a stage is refused (``on_empty_stage=
   "error"``) or keeps that stage's block with the largest increment (``"keep_best"``, the
   default of the curve rules' configs) or its first block (``"keep_first"``).
   Either curve works: Newman Q of the k-NN graph (paper 1, Eq. 1) or paper 2's M = r·AQ·(1−EQ).
   The whole decision, with the curve values behind it, is a :class:`PruningDecision`.

2. **Candidates**: which layers of a model can go (:func:`removable_layers`), its stages
   (:func:`model_stages`), and :func:`decide_for_model` (a rule on a model's curve). The surgery
   itself is :mod:`dnn_modularity.pruning.surgery`, the costs :mod:`dnn_modularity.pruning.costs`.

Over 500 lines: the three rules, the stage guard and `decide` share one vocabulary (flags,
candidates, stages) and are read together.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from dnn_modularity.models.unwrap import bare_model

RULES: tuple[str, ...] = ("delta", "criterion1", "explicit")
CURVE_KINDS: tuple[str, ...] = ("Q", "M")
ON_EMPTY_STAGE: tuple[str, ...] = ("error", "keep_best", "keep_first")

#: Paper 1's threshold on ΔM for ResNet56 (Table 1).
DEFAULT_TAU = 0.03
#: Plateau tolerance of Criterion I as a fraction of the curve's range (max − min). Paper 1,
#: Fig. 10(b): removing a VGG11 layer whose modularity increment is 0.01 changes CIFAR-10
#: accuracy by 0.01 % — on a Q curve that rises by about 0.5 over the network, 2 % of the range.
DEFAULT_TOLERANCE = 0.02


# --------------------------------------------------------------------------------------------
# Curves
# --------------------------------------------------------------------------------------------


def curve_stats(
    values: Sequence[float] | Sequence[Sequence[float]] | torch.Tensor,
) -> tuple[list[float], list[float] | None]:
    """Mean (and std over repeats) of a per-layer curve.

    Args:
        values: ``(L,)`` one curve, or ``(R, L)`` R repeats of the curve (paper 1 plots the
            mean ± std over repeats, Fig. 4).

    Returns:
        ``(mean (L,), std (L,) or None)``; std is the population std (ddof 0) and is ``None``
        for a single curve.

    Raises:
        ValueError: empty curve, more than 2 dimensions, or non-finite values.
    """
    t = torch.as_tensor(values, dtype=torch.float64)
    if t.ndim == 0 or t.numel() == 0 or t.ndim > 2:
        raise ValueError(
            f"curve must have shape (L,) or (repeats, L) with L >= 1; got shape {tuple(t.shape)}"
        )
    if not torch.isfinite(t).all():
        bad = torch.nonzero(~torch.isfinite(t.reshape(-1, t.shape[-1])).all(0)).flatten().tolist()
        raise ValueError(f"curve has non-finite values at layer positions {bad} (0-based)")
    if t.ndim == 1:
        return t.tolist(), None
    return t.mean(0).tolist(), t.std(0, correction=0).tolist()


def curve_deltas(values: Sequence[float]) -> list[float | None]:
    """Per-layer increments ΔM_i = M_i − M_{i−1} (paper 1, Fig. 10(b)); ``None`` for layer 1."""
    vals = [float(v) for v in values]
    return [None] + [vals[i] - vals[i - 1] for i in range(1, len(vals))]


# --------------------------------------------------------------------------------------------
# Rules: curve -> flagged layer positions (0-based) with a reason each
# --------------------------------------------------------------------------------------------


def delta_flags(values: Sequence[float], tau: float = DEFAULT_TAU) -> dict[int, str]:
    """Paper 1's rule: flag layer i (i ≥ 2, 1-based) when ΔM_i = M_i − M_{i−1} < τ.

    The first layer has no predecessor on the curve and is never flagged.

    Args:
        values: ``(L,)`` curve values, front to back.
        tau: threshold on the increment.

    Returns:
        0-based position -> reason (``"decline"`` when ΔM_i < 0, else ``"slow_growth"``).
    """
    if not math.isfinite(tau):
        raise ValueError(f"tau must be a finite number; got {tau!r}")
    flags: dict[int, str] = {}
    for i, d in enumerate(curve_deltas(values)):
        if d is not None and d < tau:
            flags[i] = "decline" if d < 0 else "slow_growth"
    return flags


def criterion1_flags(
    values: Sequence[float], tolerance: float = DEFAULT_TOLERANCE
) -> dict[int, str]:
    """Paper 2's Criterion I (Sec. 4.4): cut from the maximum, on plateaus and on declines.

    "When the modularity curve reaches the maximum value or a plateau period occurs or starts
    to decline, the corresponding convolution layer can be cut off." Precise reading, with
    ΔM_i = M_i − M_{i−1} and the curve's range R = max M − min M; layer 1 is never cut, and
    layer i ≥ 2 is cut, with the first clause that applies as its reason, when

    * ``"after_maximum"`` — it lies after the (first) global maximum: it cannot raise the
      curve any more;
    * ``"decline"`` — ΔM_i < 0;
    * ``"plateau"`` — 0 ≤ ΔM_i ≤ ``tolerance`` × R: its rise is too small to count.

    Why this form: each layer is judged by its own increment, so on a rising curve the decision
    is monotone in the increments (a layer that adds less than a cut layer is cut too; a
    steadily creeping curve is cut all or not at all, never every other layer), and the
    tolerance is relative to the range, so the decision does not change when the curve is
    scaled or shifted — the same shape gets the same cuts on Q (paper 1) and on M (paper 2,
    whose range is about a quarter of Q's). A flat curve (R = 0) has its maximum at layer 1,
    so every later layer is cut.

    Args:
        values: ``(L,)`` curve values, front to back.
        tolerance: the plateau tolerance as a fraction of the curve's range, ≥ 0 (0: only
            exactly flat steps are plateaus).

    Returns:
        0-based position -> reason.
    """
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance must be a finite number >= 0; got {tolerance!r}")
    vals = [float(v) for v in values]
    if not vals:
        return {}
    peak = max(range(len(vals)), key=lambda j: (vals[j], -j))  # first global maximum
    threshold = criterion1_threshold(vals, tolerance)
    flags: dict[int, str] = {}
    for i in range(1, len(vals)):
        step = vals[i] - vals[i - 1]
        if i > peak:
            flags[i] = "after_maximum"
        elif step < 0:
            flags[i] = "decline"
        elif step <= threshold:
            flags[i] = "plateau"
    return flags


def criterion1_threshold(values: Sequence[float], tolerance: float = DEFAULT_TOLERANCE) -> float:
    """The absolute plateau threshold of :func:`criterion1_flags`: tolerance × (max − min)."""
    vals = [float(v) for v in values]
    return float(tolerance) * (max(vals) - min(vals)) if vals else 0.0


# --------------------------------------------------------------------------------------------
# The decision
# --------------------------------------------------------------------------------------------


@dataclass
class PruningDecision:
    """What a rule decided and why (everything needed to audit or re-apply it).

    Attributes:
        rule: ``"delta"`` | ``"criterion1"`` | ``"explicit"``.
        params: the rule's parameters (e.g. ``{"tau": 0.03}``, ``{"tolerance": 0.01}``).
        curve_kind: ``"Q"`` (Newman modularity, paper 1) or ``"M"`` (paper 2), or ``None``.
        layers: the curve's layer names, front to back (L,).
        values: the curve (mean over repeats) (L,), or ``None`` for an explicit list without curve.
        std: std over repeats (L,) or ``None``.
        deltas: ΔM_i = M_i − M_{i−1} (L,), ``None`` at layer 1 / without curve.
        candidates: the removable layers (model order).
        flagged: layer -> reason, what the rule flags from the curve alone (or the explicit list).
        skipped: flagged layers that are kept -> why (not removable, stage would be empty).
        removed: the layers to remove (model order).
        notes: free-form remarks (e.g. which block was kept to keep a stage non-empty).
    """

    rule: str
    params: dict[str, Any]
    curve_kind: str | None
    layers: list[str]
    values: list[float] | None
    std: list[float] | None
    deltas: list[float | None]
    candidates: list[str]
    flagged: dict[str, str]
    skipped: dict[str, str]
    removed: list[str]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return asdict(self)

    def layer_table(self) -> list[dict[str, Any]]:
        """One row per curve layer: index (1-based), layer, value, std, delta, flag, status."""
        removed = set(self.removed)
        cands = set(self.candidates)
        rows = []
        for i, name in enumerate(self.layers):
            rows.append(
                {
                    "layer_index": i + 1,
                    "layer": name,
                    "value": None if self.values is None else self.values[i],
                    "std": None if self.std is None else self.std[i],
                    "delta": self.deltas[i] if self.deltas else None,
                    "removable": name in cands,
                    "flag": self.flagged.get(name, ""),
                    "status": "removed"
                    if name in removed
                    else ("kept: " + self.skipped[name] if name in self.skipped else "kept"),
                }
            )
        return rows


def _check_stages(
    stages: Mapping[str, Sequence[str]] | None, candidates: Sequence[str]
) -> dict[str, str]:
    """Layer -> stage for every layer listed in ``stages``; candidates must all have a stage."""
    if stages is None:
        return {}
    owner: dict[str, str] = {}
    for stage, members in stages.items():
        for m in members:
            owner[m] = str(stage)
    missing = [c for c in candidates if c not in owner]
    if missing:
        raise ValueError(f"removable layers {missing} belong to no stage; stages: {dict(stages)}")
    return owner


def _block_to_keep(
    members: Sequence[str],
    how: str,
    layers: Sequence[str],
    deltas: Sequence[float | None],
) -> str:
    """The block a stage keeps when a rule flags all of it (``keep_best`` / ``keep_first``)."""
    if how == "keep_best":
        position = {name: i for i, name in enumerate(layers)}
        scored = [
            (deltas[position[m]], -k, m)
            for k, m in enumerate(members)
            if m in position and deltas[position[m]] is not None
        ]
        if scored:
            return max(scored)[2]  # the largest increment; the earliest block on ties
    return members[0]


def decide(
    rule: str,
    *,
    candidates: Sequence[str],
    layers: Sequence[str] | None = None,
    values: Sequence[float] | Sequence[Sequence[float]] | torch.Tensor | None = None,
    stages: Mapping[str, Sequence[str]] | None = None,
    tau: float = DEFAULT_TAU,
    tolerance: float = DEFAULT_TOLERANCE,
    remove: Sequence[str] | None = None,
    curve_kind: str | None = "Q",
    on_empty_stage: str = "error",
    reasons: Mapping[str, str] | None = None,
) -> PruningDecision:
    """Apply a rule to a curve and the model's removable layers.

    Args:
        rule: one of :data:`RULES`.
        candidates: the model's removable layers (names as in the curve, model order).
        layers: the curve's layer names (L,), front to back; required for ``delta``/``criterion1``.
        values: the curve, ``(L,)`` or ``(repeats, L)`` (averaged over repeats).
        stages: stage name -> all its prunable units (removable or not), model order. With it, a
            decision that would empty a stage is refused (or resolved, see ``on_empty_stage``).
        tau: ``delta`` threshold.
        tolerance: ``criterion1`` plateau tolerance (a fraction of the curve's range).
        remove: the ``explicit`` list of layer names.
        curve_kind: ``"Q"`` (Newman, paper 1) or ``"M"`` (paper 2), recorded; ``None`` if no curve.
        on_empty_stage: ``"error"`` (default) refuses a decision that removes every block of a
            stage; ``"keep_best"`` keeps that stage's block with the largest increment ΔM on the
            curve (its first block when there is no curve); ``"keep_first"`` keeps its first
            block. Both record a note.
        reasons: layer -> why it is not a candidate (used in messages and in ``skipped``);
            layers without a reason are called "not removable (input and output shapes differ)".

    Returns:
        The :class:`PruningDecision`.

    Raises:
        ValueError: unknown rule / curve kind / on_empty_stage; curve and layer names of
            different lengths; a removable layer missing from the curve; an explicit name that
            is unknown or not removable (the message lists the removable layers); a decision
            that empties a stage (names the stage, its layers and the valid choices).
    """
    if rule not in RULES:
        raise ValueError(f"unknown pruning rule {rule!r}; valid rules: {list(RULES)}")
    if curve_kind is not None and curve_kind not in CURVE_KINDS:
        raise ValueError(f"unknown curve kind {curve_kind!r}; valid kinds: {list(CURVE_KINDS)}")
    if on_empty_stage not in ON_EMPTY_STAGE:
        raise ValueError(
            f"unknown on_empty_stage {on_empty_stage!r}; valid choices: {list(ON_EMPTY_STAGE)}"
        )
    candidates = list(candidates)
    if len(set(candidates)) != len(candidates):
        raise ValueError(f"duplicate names among removable layers: {candidates}")
    owner = _check_stages(stages, candidates)
    why_not = dict(reasons or {})

    mean: list[float] | None = None
    std: list[float] | None = None
    if values is not None:
        mean, std = curve_stats(values)
        if layers is None:
            raise ValueError("a curve (values) needs its layer names (layers)")
        if len(layers) != len(mean):
            raise ValueError(
                f"curve has {len(mean)} values but {len(layers)} layer names: {list(layers)}"
            )
    layer_list = list(layers) if layers is not None else []
    deltas = curve_deltas(mean) if mean is not None else [None] * len(layer_list)
    params: dict[str, Any]

    if rule in ("delta", "criterion1"):
        if mean is None:
            raise ValueError(f"rule {rule!r} needs a curve (values and layers)")
        absent = [c for c in candidates if c not in layer_list]
        if absent:
            raise ValueError(
                f"removable layers {absent} are not on the curve; the curve must be read at the "
                f"'block' taps (one value per prunable unit). Curve layers: {layer_list}"
            )
        if rule == "delta":
            params = {"tau": float(tau)}
            pos_flags = delta_flags(mean, tau)
        else:
            params = {
                "tolerance": float(tolerance),
                "tolerance_abs": criterion1_threshold(mean, tolerance),
            }
            pos_flags = criterion1_flags(mean, tolerance)
        flagged = {layer_list[i]: why for i, why in sorted(pos_flags.items())}
    else:
        if remove is None:
            raise ValueError("rule 'explicit' needs `remove`: a list of layer names")
        names = [str(r) for r in remove]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"explicit list names layers more than once: {dup}")
        for n in names:
            if n not in candidates:
                if n in why_not:
                    kind = f"is not removable: {why_not[n]}"
                elif n in layer_list or n in owner:
                    kind = "is not removable"
                else:
                    kind = "is unknown"
                raise ValueError(
                    f"layer {n!r} {kind}; valid choices (removable layers): {candidates}"
                )
        params = {"remove": names}
        flagged = {n: "explicit" for n in names}

    cand_set = set(candidates)
    skipped: dict[str, str] = {}
    chosen: list[str] = []
    for name in flagged:
        if name in cand_set:
            chosen.append(name)
        else:
            skipped[name] = "not removable: " + why_not.get(name, "input and output shapes differ")
    order = {n: i for i, n in enumerate(candidates)}
    chosen.sort(key=order.__getitem__)

    notes: list[str] = []
    if stages is not None:
        chosen_set = set(chosen)
        for stage, members in stages.items():
            members = list(members)
            if members and all(m in chosen_set for m in members):
                if on_empty_stage == "error":
                    raise ValueError(
                        f"rule {rule!r} would remove every block of stage {stage!r} "
                        f"({members}); each stage keeps at least one block. Remove at most "
                        f"{len(members) - 1} of {members}, or pass on_empty_stage='keep_best' "
                        "(or 'keep_first')."
                    )
                keep = _block_to_keep(members, on_empty_stage, layer_list, deltas)
                chosen.remove(keep)
                chosen_set.discard(keep)
                skipped[keep] = f"kept so that stage {stage!r} keeps at least one block"
                notes.append(
                    f"stage {stage!r}: all blocks flagged; kept {keep!r} ({on_empty_stage})"
                )

    return PruningDecision(
        rule=rule,
        params=params,
        curve_kind=curve_kind if mean is not None else None,
        layers=layer_list,
        values=mean,
        std=std,
        deltas=deltas,
        candidates=candidates,
        flagged=flagged,
        skipped=skipped,
        removed=chosen,
        notes=notes,
    )


# --------------------------------------------------------------------------------------------
# Model side: candidates and stages
# --------------------------------------------------------------------------------------------


def model_stages(net: nn.Module) -> dict[str, list[str]]:
    """Stage name -> its blocks' layer names, in model order (``{"layer1": ["layer1.0", ...]}``)."""
    bare = bare_model(net)
    return {
        stage: [name for name, _ in blocks]
        for stage, blocks in zip(bare.stage_names, bare.stage_blocks(), strict=True)
    }


def removable_layers(net: nn.Module) -> list[str]:
    """The pruning candidates of ``net``, in model order.

    A layer is a candidate iff removing it leaves a valid network: its input and output shapes
    match (the model's own ``removable_layers()``). That includes ``layer1.0`` of CIFAR ResNets
    (the stem is as wide as stage 1) and VGG's first 512 -> 512 unit of stage 5; the first block
    of a downsampling stage (``layer2.0``, ``layer3.0``) changes the shape and is never one.
    Position plays no part (paper 1's Table 1 model [2, 3, 6] comes from its rule on a curve
    where ``layer1.0`` declines; protecting it would give [3, 3, 6]).

    Args:
        net: a zoo network or a wrapper around one.

    Returns:
        Layer names (block taps).
    """
    return list(bare_model(net).removable_layers())


def non_candidate_reasons(net: nn.Module) -> dict[str, str]:
    """Layer -> why it is not a pruning candidate, for every block that is not one."""
    bare = bare_model(net)
    shape_ok = set(bare.removable_layers())
    return {
        name: "its input and output shapes differ"
        for members in model_stages(bare).values()
        for name in members
        if name not in shape_ok
    }


def decide_for_model(net: nn.Module, rule: str, **kwargs: Any) -> PruningDecision:
    """:func:`decide` with the candidates, stages and non-candidate reasons taken from ``net``.

    Args:
        net: a zoo network or a wrapper around one.
        rule: one of :data:`RULES`.
        **kwargs: the other arguments of :func:`decide` (curve, rule parameters ...).
    """
    return decide(
        rule,
        candidates=removable_layers(net),
        stages=model_stages(net),
        reasons=non_candidate_reasons(net),
        **kwargs,
    )
