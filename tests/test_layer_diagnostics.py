"""One layer's diagnostics in one call: Q from the same graph, the parts asked for, long rows."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dnn_modularity.graph import knn_modularity
from dnn_modularity.graph.classes import class_diagnostics
from dnn_modularity.layer_diagnostics import (
    DIAGNOSTICS,
    check_diagnostics,
    class_names_of,
    diagnose_layer,
    diagnostic_rows,
    pair_label,
)
from dnn_modularity.linear_probe import linear_probe


def planted(n: int = 120, num_classes: int = 4, strength: float = 1.5, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    means = torch.randn(num_classes, 16, generator=gen)
    return strength * means[labels] + torch.randn(n, 16, generator=gen), labels


def test_check_diagnostics_orders_and_names_the_valid_choices() -> None:
    assert check_diagnostics(None) == () and check_diagnostics([]) == ()
    assert check_diagnostics("all") == DIAGNOSTICS
    assert check_diagnostics(["knn_acc", "purity", "knn_acc"]) == ("purity", "knn_acc")
    assert check_diagnostics("pairs") == ("pairs",)
    with pytest.raises(ValueError, match=r"unknown diagnostics \['purty'\].*'purity', 'pairs'"):
        check_diagnostics(["purty", "pairs"])


@pytest.mark.parametrize("metric", ["cosine", "pearson"])
def test_q_is_the_engine_value_and_the_parts_match_the_library(metric: str) -> None:
    x, y = planted()
    diag = diagnose_layer(x, y, DIAGNOSTICS, k=4, metric=metric, probe_seed=3)
    assert diag.modularity == knn_modularity(x, y, k=4, metric=metric)  # same graph: exact
    ref = class_diagnostics(x, y, k=4, metric=metric)
    assert float(diag.class_q.sum()) == pytest.approx(diag.modularity, abs=1e-9)
    assert torch.allclose(diag.class_q, ref.class_q.cpu())
    assert torch.allclose(diag.purity, ref.purity.cpu(), equal_nan=True)
    assert torch.allclose(diag.pair_weight, ref.pair_weight.cpu())
    assert torch.allclose(diag.entanglement, ref.entanglement.cpu(), equal_nan=True)
    assert diag.knn_accuracy == ref.knn_accuracy
    assert torch.allclose(diag.class_knn_accuracy, ref.class_knn_accuracy.cpu())
    probe = linear_probe(x, y, test_fraction=0.5, seed=3)
    assert diag.probe.accuracy == probe.accuracy and diag.probe.split == "stratified"
    assert set(diag.seconds) == {"graph", *DIAGNOSTICS}


def test_only_the_asked_parts_and_a_given_training_set() -> None:
    x, y = planted()
    diag = diagnose_layer(x, y, ["knn_acc"], k=3)
    assert diag.knn_accuracy is not None and diag.probe is None
    assert diag.purity is None and diag.entanglement is None
    assert set(diag.seconds) == {"graph", "knn_acc"}
    xt, yt = planted(seed=1)
    given = diagnose_layer(x, y, ["linear_probe"], probe_train=(xt, yt))
    assert given.probe.split == "given" and given.probe.num_test == len(y)
    assert given.probe.accuracy == linear_probe(xt, yt, x, y).accuracy


def test_rows_one_value_each_with_keys_classes_and_pairs() -> None:
    x, y = planted(num_classes=3)
    y = y * 2 + 1  # label values 1, 3, 5
    diag = diagnose_layer(x, y, DIAGNOSTICS, k=3)
    names = ["zero", "one", "two", "three", "four", "five"]
    base = {"layer_index": 7, "layer": "layer2.1", "repeat": 0}
    rows = diagnostic_rows(diag, base, layer_index=7, class_names=names)
    by = {}
    for row in rows:
        by.setdefault(row["measure"], []).append(row)
    assert {m: len(r) for m, r in by.items()} == {
        "modularity": 1,
        "knn_accuracy": 1,
        "probe_accuracy": 1,
        "class_q": 3,
        "purity": 3,
        "class_knn_accuracy": 3,
        "pair_weight": 6,  # a <= b
        "pair_entanglement": 3,  # a < b
    }
    assert all(r["layer"] == "layer2.1" and isinstance(r["value"], float) for r in rows)
    assert by["modularity"][0]["key"] == "modularity/layer_07"
    assert by["purity"][1]["key"] == "purity/layer_07/3" and by["purity"][1]["class"] == 3
    assert by["purity"][1]["class_name"] == "three" and by["purity"][1]["count"] == 40
    pair = by["pair_entanglement"][0]
    assert pair["key"] == "pair_entanglement/layer_07/1-3"
    assert (pair["class_name"], pair["class_b_name"]) == ("one", "three")
    assert by["probe_accuracy"][0]["probe_split"] == "stratified"
    assert "probe_accuracy" not in by["probe_accuracy"][0]  # the value is in "value"
    # the pair weights add up to the graph's total weight, the class terms to Q
    total = sum(r["value"] for r in by["pair_weight"])
    assert total == pytest.approx(float(diag.pair_weight.triu().sum()))
    assert sum(r["value"] for r in by["class_q"]) == pytest.approx(diag.modularity, abs=1e-9)
    top = diag.most_entangled_pairs(2)
    assert len(top) == 2 and top[0][2] >= top[1][2] and top[0][0] < top[0][1]


def test_class_names_and_pair_labels() -> None:
    assert class_names_of(SimpleNamespace(classes=("cat", "dog"))) == ["cat", "dog"]
    nested = SimpleNamespace(test_set=SimpleNamespace(classes=["a", "b", "c"]))
    assert class_names_of(nested) == ["a", "b", "c"]
    assert class_names_of(SimpleNamespace(test_set=None)) is None
    assert pair_label(3, 5) == "3/5" and pair_label(0, 1, ["cat", "dog"]) == "cat/dog"


@pytest.mark.gpu
def test_cuda_features_give_the_cpu_values() -> None:
    x, y = planted()
    cpu = diagnose_layer(x, y, DIAGNOSTICS, k=3)
    gpu = diagnose_layer(x.cuda(), y.cuda(), DIAGNOSTICS, k=3)
    assert gpu.modularity == pytest.approx(cpu.modularity, abs=1e-6)
    assert gpu.knn_accuracy == pytest.approx(cpu.knn_accuracy, abs=1e-2)
    assert torch.allclose(gpu.purity, cpu.purity, atol=1e-4)
    assert gpu.purity.device.type == "cpu" and gpu.probe.accuracy == pytest.approx(
        cpu.probe.accuracy, abs=0.05
    )
