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

# A ResNet-like toy: 3 stages x 4 blocks; the first block of each stage is not removable.
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


def test_criterion1_plateau_is_anchored_at_its_start():
    # rises, then a plateau of small steps (0.005 each) whose total drift exceeds the tolerance:
    # anchored at 0.50, the steps to 0.505 and 0.510 are within 0.01 -> cut; 0.515 exceeds
    # 0.50 + 0.01 -> kept (new anchor); 0.52 within -> cut; then a real rise -> kept.
    vals = [0.2, 0.5, 0.505, 0.510, 0.515, 0.52, 0.7]
    assert criterion1_flags(vals, tolerance=0.01) == {2: "plateau", 3: "plateau", 5: "plateau"}
    # tolerance 0: only exactly flat steps count as a plateau
    assert criterion1_flags([0.2, 0.5, 0.5, 0.6], tolerance=0.0) == {2: "plateau"}


def test_criterion1_decline_and_recovery_below_previous_level():
    # dip in the middle (before the global maximum): the dip and the recovery back to the old
    # level are cut, the first layer that rises above the old level + tol is kept.
    vals = [0.1, 0.4, 0.35, 0.405, 0.6, 0.8]
    assert criterion1_flags(vals, tolerance=0.01) == {2: "decline", 3: "plateau"}


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
    assert d.curve_kind == "M" and d.params == {"tolerance": 0.01}


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
    vals = [0.5, 0.9, 0.85, 0.8]
    with pytest.raises(ValueError, match="every block of stage 'stage5'"):
        decide("criterion1", candidates=cands, layers=layers, values=vals, stages=stages)
    d = decide(
        "criterion1",
        candidates=cands,
        layers=layers,
        values=vals,
        stages=stages,
        on_empty_stage="keep_first",
    )
    assert d.removed == ["f.14"]
    assert "stage 'stage5'" in d.skipped["f.13"] and d.notes


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
