"""Curve records read by `prune`, its Markdown table and the Fig. 10(b) analysis (no training)."""

from __future__ import annotations

import math

import pytest

from dnn_modularity.pruning.table import delta_m_vs_delta_acc, markdown_table
from dnn_modularity.records import read_csv_rows, read_curve_record, write_csv_rows

LAYERS = ["stem", "layer1.0", "layer1.1", "layer1.2"]


def test_reads_analyze_tidy_record_with_repeats(tmp_path):
    rows = []
    for rep, offset in ((0, 0.0), (1, 0.02)):
        for i, name in enumerate(LAYERS):
            for variant, measure, value in (
                ("trained", "modularity", 0.1 * (i + 1) + offset),
                ("shuffled", "modularity", 0.0),
                ("trained", "M", 0.5),
            ):
                rows.append(
                    {
                        "analysis": "curve",
                        "variant": variant,
                        "layer_index": i + 1,
                        "layer": name,
                        "repeat": rep,
                        "measure": measure,
                        "value": value,
                    }
                )
    write_csv_rows(tmp_path / "curve.csv", rows)
    curve = read_curve_record(tmp_path / "curve.csv", "modularity")
    assert curve.layers == LAYERS
    assert curve.values[0] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert curve.values[1] == pytest.approx([0.12, 0.22, 0.32, 0.42])
    assert read_curve_record(tmp_path / "curve.csv", "M").values == [[0.5] * 4, [0.5] * 4]


def test_reads_summary_and_train_modularity_csv(tmp_path):
    write_csv_rows(
        tmp_path / "curve_summary.csv",
        [
            {"variant": "trained", "measure": "modularity", "layer_index": i + 1, "layer": n,
             "mean": 0.2 * i, "std": 0.01}
            for i, n in enumerate(LAYERS)
        ],
    )  # fmt: skip
    assert read_curve_record(tmp_path / "curve_summary.csv").values == [
        pytest.approx([0.0, 0.2, 0.4, 0.6])
    ]
    # train's modularity.csv: the last epoch is used; M may be empty when off
    rows = [
        {"epoch": e, "layer_index": i + 1, "layer": n, "tap": "block", "N": 100, "k": 3,
         "metric": "cosine", "modularity": e + 0.1 * i, "M": "", "seed": 0, "repeat": 0}
        for e in (0, 1, 2)
        for i, n in enumerate(LAYERS)
    ]  # fmt: skip
    write_csv_rows(tmp_path / "modularity.csv", rows)
    curve = read_curve_record(tmp_path / "modularity.csv")
    assert curve.values == [pytest.approx([2.0, 2.1, 2.2, 2.3])]
    with pytest.raises(ValueError, match="no 'M' values"):
        read_curve_record(tmp_path / "modularity.csv", "M")


def test_bad_records(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_curve_record(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match=r"unknown curve measure 'Q2'.*modularity"):
        read_curve_record(tmp_path / "nope.csv", "Q2")
    write_csv_rows(tmp_path / "x.csv", [{"a": 1}])
    with pytest.raises(ValueError, match="lacks layer_index"):
        read_curve_record(tmp_path / "x.csv")


def test_markdown_table_and_delta_m_vs_delta_acc(tmp_path):
    row = {
        "model": "resnet56", "rule": "delta", "params_rule": "tau=0.03", "measure": "modularity",
        "removed_layers": "layer1.2 layer1.3", "acc_parent": 93.5, "acc_pruned_before_ft": 40.0,
        "acc_pruned_after_ft": 93.25, "params": 853018, "pruned_params": 487002,
        "params_reduction": 42.908, "macs": 125485696, "pruned_macs": 49988224,
        "macs_reduction": 60.164, "flops": 250971392, "pruned_flops": 99976448,
        "flops_reduction": 60.164,
    }  # fmt: skip
    md = markdown_table([row])
    assert "| resnet56 | delta | tau=0.03 |" in md
    assert "| 42.91 |" in md and "| 60.16 |" in md and "0.853M" in md and "125.49M" in md
    assert "acc parent + same FT" not in md  # the control column only when it was run

    sweep = [
        {"layer": f"stage{i}.1", "delta_m": dm, "delta_acc_drop": da}
        for i, (dm, da) in enumerate([(0.01, 0.01), (0.08, 0.37), (0.16, 0.57), (0.26, 2.11)])
    ]
    out = delta_m_vs_delta_acc(sweep, tmp_path)
    assert read_csv_rows(out["csv"])[3]["layer"] == "stage3.1"
    assert all((tmp_path / "figures" / f"delta_m_vs_delta_acc.{x}").stat().st_size > 0
               for x in ("png", "pdf"))  # fmt: skip
    assert out["pearson_r"] > 0.9 and out["slope"] > 0  # paper 1's numbers are near-linear
    assert math.isnan(delta_m_vs_delta_acc(sweep[:1], tmp_path / "one")["pearson_r"])
