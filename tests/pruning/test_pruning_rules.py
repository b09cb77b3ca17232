"""Pruning rules on hand-made curves (pure functions, no models)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dnn_modularity.pruning import (
    PruningDecision,
    criterion1_flags,
    curve_deltas,
    curve_stats,
    decide,
    delta_flags,
)

# A ResNet-like toy: 3 stages x 4 blocks; the first block of each stage changes the shape.
STAGES = {f"layer{s}": [f"layer{s}.{b}" for b in range(4)] for s in (1, 2, 3)}
LAYERS = [n for members in STAGES.values() for n in members]
CANDIDATES = [n for members in STAGES.values() for n in members[1:]]


def _curve_with_small_steps(small_at: set[int], big: float = 0.06, small: float = 0.02):
    """Curve whose increment is `small` (< 0.03) exactly at positions `small_at`."""
    vals = [0.10]
    for i in range(1, len(LAYERS)):
        vals.append(vals[-1] + (small if i in small_at else big))
    return vals


def test_delta_removes_exactly_the_blocks_with_small_increments():
    small_at = {2, 3, 6, 10}  # layer1.2, layer1.3, layer2.2, layer3.2
    vals = _curve_with_small_steps(small_at)
    d = decide("delta", candidates=CANDIDATES, layers=LAYERS, values=vals, stages=STAGES)
    assert d.removed == ["layer1.2", "layer1.3", "layer2.2", "layer3.2"]
    assert set(d.flagged) == {LAYERS[i] for i in small_at}
    assert d.params == {"tau": 0.03}
    assert d.values == pytest.approx(vals)
    # the recorded deltas are the increments behind the decision
    for i in range(1, len(LAYERS)):
        assert d.deltas[i] == pytest.approx(0.02 if i in small_at else 0.06)
    assert d.deltas[0] is None


def test_delta_threshold_is_strict_and_first_layer_never_flagged():
    assert delta_flags([0.5, 0.53, 0.56], tau=0.03) == {}  # equal to tau: kept (float-exact)
    assert delta_flags([0.0, 0.25, 0.5], tau=0.25) == {}
    assert delta_flags([0.0, 0.24, 0.5], tau=0.25) == {1: "slow_growth"}
    assert delta_flags([0.9, 0.1, 0.2], tau=0.03) == {1: "decline"}


def test_delta_flag_on_non_removable_layer_is_recorded_not_removed():
    # layer2.0 (position 4, first of stage 2) declines; it cannot be removed.
    vals = _curve_with_small_steps(set())
    vals[4] = vals[3] - 0.01
    vals[5:] = [v - 0.07 for v in vals[5:]]  # keep later increments at 0.06
    d = decide("delta", candidates=CANDIDATES, layers=LAYERS, values=vals, stages=STAGES)
    assert d.flagged == {"layer2.0": "decline"}
    assert d.removed == []
    assert "not removable" in d.skipped["layer2.0"]


def test_criterion1_peak_then_decline():
    vals = [0.1, 0.3, 0.5, 0.7, 0.65, 0.6]
    assert criterion1_flags(vals, tolerance=0.01) == {4: "after_maximum", 5: "after_maximum"}


def test_criterion1_creeping_curve_is_cut_all_or_nothing():
    # +0.005 per layer: the old anchored reading cut layers 2, 3, 5, 6 and kept 4 and 7.
    ramp = [0.5 + 0.005 * i for i in range(7)]
    assert criterion1_flags(ramp) == {}  # a steady rise, whatever its slope
    # after a real rise, the same creeping steps are a plateau: every one of them is cut
    vals = [0.1, 0.5, *ramp[1:], 0.9]
    assert criterion1_flags(vals) == {i: "plateau" for i in range(2, 8)}


def test_criterion1_is_monotone_in_the_increments_on_rising_curves():
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        steps = torch.rand(12, generator=gen) ** 3 * 0.1  # many tiny and a few big increments
        vals = [0.1, *(0.1 + torch.cumsum(steps, 0)).tolist()]
        flags = criterion1_flags(vals)
        deltas = curve_deltas(vals)[1:]
        cut = [deltas[i - 1] for i in flags]
        kept = [deltas[i - 1] for i in range(1, len(vals)) if i not in flags]
        assert not cut or not kept or max(cut) < min(kept)


def test_criterion1_a_rise_after_a_dip_is_not_a_plateau():
    # the old anchored reading labelled the +0.04 rise at layer 4 a "plateau" (0.29 <= 0.30 + tol)
    assert criterion1_flags([0.10, 0.30, 0.25, 0.29, 0.50, 0.60]) == {2: "decline"}
    assert criterion1_flags([0.1, 0.4, 0.35, 0.405, 0.6, 0.8]) == {2: "decline"}


@pytest.mark.parametrize(
    "vals",
    [
        [0.2, 0.5, 0.505, 0.510, 0.515, 0.52, 0.7],
        [0.10, 0.30, 0.25, 0.29, 0.50, 0.60],
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.605, 0.7, 0.8, 0.9, 0.85, 0.84],
        [0.15, 0.08, 0.07, 0.06, 0.062, 0.2, 0.35, 0.36, 0.5],
    ],
)
def test_criterion1_same_shape_same_cuts_on_q_and_on_m(vals):
    # paper 2's M is about a quarter of Q (<= 0.25 under the literal 2S reading): same shape,
    # same cuts; a shift does not matter either
    full = criterion1_flags(vals)
    assert criterion1_flags([v / 4 for v in vals]) == full
    assert criterion1_flags([v / 4 - 0.03 for v in vals]) == full


def test_criterion1_tolerance_is_relative_to_the_range():
    vals = [0.0, 0.5, 0.51, 1.0]  # range 1: the +0.01 step is 1 % of it
    assert criterion1_flags(vals, tolerance=0.02) == {2: "plateau"}
    assert criterion1_flags(vals, tolerance=0.005) == {}
    # tolerance 0: only exactly flat steps count as a plateau
    assert criterion1_flags([0.2, 0.5, 0.5, 0.6], tolerance=0.0) == {2: "plateau"}


def test_criterion1_monotone_fast_rise_cuts_nothing():
    assert criterion1_flags([0.1, 0.2, 0.3, 0.4], tolerance=0.01) == {}


def test_criterion1_decision_on_a_model_layout():
    vals = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.605, 0.7, 0.8, 0.9, 0.85, 0.84]
    d = decide(
        "criterion1",
        candidates=CANDIDATES,
        layers=LAYERS,
        values=vals,
        stages=STAGES,
        curve_kind="M",
    )
    assert d.flagged == {
        "layer2.2": "plateau",
        "layer3.2": "after_maximum",
        "layer3.3": "after_maximum",
    }
    assert d.removed == ["layer2.2", "layer3.2", "layer3.3"]
    assert d.curve_kind == "M"
    assert d.params == pytest.approx({"tolerance": 0.02, "tolerance_abs": 0.02 * 0.8})


def test_repeats_are_averaged_and_std_recorded():
    reps = torch.tensor([[0.1, 0.2, 0.21], [0.1, 0.4, 0.41]])
    mean, std = curve_stats(reps)
    assert mean == pytest.approx([0.1, 0.3, 0.31])
    assert std == pytest.approx([0.0, 0.1, 0.1])
    d = decide("delta", candidates=["b"], layers=["a", "b", "c"], values=reps)
    assert d.std == pytest.approx([0.0, 0.1, 0.1])
    assert d.flagged == {"c": "slow_growth"} and d.removed == []
    assert curve_deltas([1.0, 3.0, 2.5]) == [None, 2.0, -0.5]


def test_explicit_and_its_bad_inputs():
    d = decide("explicit", candidates=CANDIDATES, remove=["layer3.3", "layer1.1"], stages=STAGES)
    assert d.removed == ["layer1.1", "layer3.3"]  # model order
    assert d.values is None and d.curve_kind is None

    with pytest.raises(ValueError, match=r"layer 'layer9\.1' is unknown.*layer1\.1"):
        decide("explicit", candidates=CANDIDATES, remove=["layer9.1"], stages=STAGES)
    with pytest.raises(ValueError, match=r"layer 'layer2\.0' is not removable.*valid choices"):
        decide("explicit", candidates=CANDIDATES, remove=["layer2.0"], stages=STAGES)
    with pytest.raises(ValueError, match="more than once"):
        decide("explicit", candidates=CANDIDATES, remove=["layer2.1", "layer2.1"])


def test_emptying_a_stage_is_refused_or_resolved():
    # VGG-like: stage5's first unit has matching channels, so all of it is removable.
    stages = {"stage4": ["f.9", "f.10"], "stage5": ["f.13", "f.14"]}
    cands = ["f.10", "f.13", "f.14"]
    with pytest.raises(ValueError, match=r"every block of stage 'stage5'.*f\.13.*f\.14"):
        decide("explicit", candidates=cands, remove=["f.13", "f.14"], stages=stages)
    layers = ["f.9", "f.10", "f.13", "f.14"]
    vals = [0.5, 0.9, 0.8, 0.85]  # both stage-5 units lie after the maximum
    with pytest.raises(ValueError, match=r"every block of stage 'stage5'.*keep_best"):
        decide("criterion1", candidates=cands, layers=layers, values=vals, stages=stages)
    kw = {"candidates": cands, "layers": layers, "values": vals, "stages": stages}
    d = decide("criterion1", on_empty_stage="keep_first", **kw)
    assert d.removed == ["f.14"]
    assert "stage 'stage5'" in d.skipped["f.13"] and d.notes
    # keep_best keeps the unit that adds most to the curve (f.14: +0.05, f.13: -0.10)
    d = decide("criterion1", on_empty_stage="keep_best", **kw)
    assert d.removed == ["f.13"] and "keep_best" in d.notes[0]
    with pytest.raises(ValueError, match=r"unknown on_empty_stage 'x'.*keep_best"):
        decide("criterion1", on_empty_stage="x", **kw)


def test_bad_rule_curve_and_names():
    with pytest.raises(ValueError, match=r"unknown pruning rule 'foo'.*delta"):
        decide("foo", candidates=[])
    with pytest.raises(ValueError, match="non-finite"):
        decide("delta", candidates=[], layers=["a", "b"], values=[0.1, math.nan])
    with pytest.raises(ValueError, match="2 values but 3 layer names"):
        decide("delta", candidates=[], layers=["a", "b", "c"], values=[0.1, 0.2])
    with pytest.raises(ValueError, match=r"not on the curve.*'block'"):
        decide("delta", candidates=["x"], layers=["a", "b"], values=[0.1, 0.2])
    with pytest.raises(ValueError, match="needs a curve"):
        decide("criterion1", candidates=["a"])
    with pytest.raises(ValueError, match=r"unknown curve kind 'Z'"):
        decide("delta", candidates=[], layers=["a"], values=[0.1], curve_kind="Z")
    with pytest.raises(ValueError, match="tolerance"):
        criterion1_flags([0.1], tolerance=-1)


def test_decision_serialises_and_tabulates():
    vals = _curve_with_small_steps({5})
    d = decide("delta", candidates=CANDIDATES, layers=LAYERS, values=vals, stages=STAGES)
    back = json.loads(json.dumps(d.to_dict()))
    assert PruningDecision(**back) == d
    rows = d.layer_table()
    assert [r["status"] for r in rows if r["status"] == "removed"] == ["removed"]
    assert rows[5]["layer"] == "layer2.1" and rows[5]["flag"] == "slow_growth"
    assert rows[0]["delta"] is None and rows[0]["layer_index"] == 1
