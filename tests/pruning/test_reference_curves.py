"""The authors' published ResNet-56 curves: package data, Table 1 through the rule, references."""

from __future__ import annotations

import sys
from fnmatch import fnmatch
from pathlib import Path

import pytest

from dnn_modularity.models import build_model
from dnn_modularity.pruning import build_pruned, decide_for_model, pruning_costs
from dnn_modularity.reference import (
    authors_curve,
    authors_curve_name,
    matching_authors_curve,
)

ROOT = Path(__file__).resolve().parents[2]


def _blocks_after_rule(dataset: str, **kwargs) -> tuple[list[int], object, object]:
    ref = authors_curve(dataset)
    parent = build_model("resnet56", num_classes=10 if dataset == "cifar10" else 100)
    curve = {"layers": list(ref.layers), "values": list(ref.values)}
    d = decide_for_model(parent, "delta", **curve, **kwargs)
    child = build_pruned(parent, d.removed)
    return child.arch_config()["blocks"], d, (parent, child)


def test_curves_ship_inside_the_package():
    ref = authors_curve("cifar10")
    assert len(ref.values) == len(ref.layers) == 28
    assert ref.layers[:2] == ("stem", "layer1.0") and ref.layers[-1] == "layer3.8"
    assert ref.values[0] == pytest.approx(0.14904703925380478)
    assert ref.pruned_blocks == (2, 3, 6)
    assert authors_curve("cifar100").pruned_blocks == (1, 6, 9)
    # the layer names are ResNet-56's block taps
    net = build_model("resnet56", num_classes=10)
    assert [name for name, _ in net.tap_points("block")] == list(ref.layers)
    # an installed wheel carries the JSON: it is declared as package data
    if sys.version_info >= (3, 11):
        import tomllib

        data = tomllib.loads((ROOT / "pyproject.toml").read_text())
        patterns = data["tool"]["setuptools"]["package-data"]["dnn_modularity"]
        assert any(fnmatch("reference/authors_resnet56_curves.json", p) for p in patterns)
    with pytest.raises(ValueError, match=r"no published curve for dataset 'mnist'.*cifar10"):
        authors_curve("mnist")


def test_table1_comes_out_of_the_rule():
    """Paper 1's rule (ΔM < 0.03) on the authors' CIFAR-10 curve: blocks [2, 3, 6], Table 1."""
    blocks, d, (parent, child) = _blocks_after_rule("cifar10")
    assert blocks == [2, 3, 6]
    assert "layer1.0" in d.removed  # removable by shape; its ΔM is -0.064
    assert d.params == {"tau": 0.03} and not d.notes
    costs = pruning_costs(parent, child, (3, 32, 32))
    # paper 1, Table 1: -43.00 % params / -60.30 % FLOPs (thop's FLOPs are MACs)
    assert round(costs.params_reduction, 1) == 42.9
    assert round(costs.macs_reduction, 1) == 60.2


def test_the_published_cifar100_model_is_not_what_the_rule_gives():
    """[1, 6, 9] is recorded, not reproduced: τ = 0.03 on that curve gives [1, 1, 6]."""
    with pytest.raises(ValueError, match="every block of stage 'layer1'"):
        _blocks_after_rule("cifar100")
    blocks, d, _ = _blocks_after_rule("cifar100", on_empty_stage="keep_best")
    assert blocks == [1, 1, 6] != list(authors_curve("cifar100").pruned_blocks)
    assert any("layer1" in note for note in d.notes)


def test_curve_names_and_matching_runs():
    assert authors_curve_name("authors:cifar100") == "cifar100"
    assert authors_curve_name("outputs/run/curve.csv") is None
    with pytest.raises(ValueError, match=r"unknown published curve 'authors:imagenet'.*cifar10"):
        authors_curve_name("authors:imagenet")
    assert matching_authors_curve("resnet56", "cifar10", 28).dataset == "cifar10"
    assert matching_authors_curve("resnet56", "cifar100").dataset == "cifar100"
    assert matching_authors_curve("resnet56", "digits", 28) is None
    assert matching_authors_curve("resnet20", "cifar10", 10) is None
    assert matching_authors_curve("resnet56", "cifar10", 27) is None  # a pruned or partial curve
