"""The pruning table (paper 1, Table 1; paper 2, Table 1) and the Fig. 10(b) records.

One row per pruned network (:data:`TABLE_COLUMNS`: accuracies in %, costs and their reductions),
its Markdown rendering (:func:`markdown_table`), the single-layer sweep's points (ΔM of the
removed layer vs the accuracy drop, :func:`sweep_row`, :func:`delta_m_vs_delta_acc`) and the
summary metrics a logger gets (:func:`summary_metrics`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dnn_modularity.plots.pruning import plot_delta_m_vs_delta_acc
from dnn_modularity.pruning.costs import PruningCosts
from dnn_modularity.pruning.rules import PruningDecision
from dnn_modularity.records import atomic_save_figure, write_csv_rows

__all__ = [
    "TABLE_COLUMNS",
    "delta_m_vs_delta_acc",
    "final_acc",
    "markdown_table",
    "summary_metrics",
    "sweep_row",
    "table_row",
]


#: Columns of ``pruning_table.csv`` (accuracies in %, reductions in % of the parent's cost;
#: ``delta_acc`` = acc_parent − acc_pruned_after_ft in points, paper 1's ΔAcc: a drop is > 0).
TABLE_COLUMNS: tuple[str, ...] = (
    "model",
    "data",
    "rule",
    "params_rule",
    "measure",
    "num_removed",
    "removed_layers",
    "acc_parent",
    "acc_parent_ft",
    "acc_pruned_before_ft",
    "acc_pruned_after_ft",
    "delta_acc",
    "finetune_epochs",
    "params",
    "pruned_params",
    "params_reduction",
    "macs",
    "pruned_macs",
    "macs_reduction",
    "flops",
    "pruned_flops",
    "flops_reduction",
    "pruned_arch",
    "checkpoint",
)


def _arch_summary(arch: Mapping[str, Any]) -> str:
    """``resnet56 blocks=[2, 3, 6]`` / ``vgg19_bn cfg=[...]``: the pruned layout in one cell."""
    keys = [k for k in ("blocks", "cfg") if arch.get(k) is not None]
    return " ".join([str(arch.get("name"))] + [f"{k}={arch[k]}" for k in keys])


def _fmt(value: Any, column: str) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan"
        if column.endswith("reduction") or column.startswith(("acc", "delta")):
            return f"{value:.2f}"
        return f"{value:.4g}"
    if isinstance(value, int) and column in ("params", "pruned_params"):
        return f"{value / 1e6:.3f}M"
    if isinstance(value, int) and column.endswith(("macs", "flops")):
        return f"{value / 1e6:.2f}M"
    return str(value).replace("|", "\\|")


#: Markdown headers (accuracies in %, reductions in % of the parent).
_MD_HEADERS = {
    "model": "model",
    "rule": "rule",
    "params_rule": "rule params",
    "measure": "curve",
    "removed_layers": "removed layers",
    "acc_parent": "acc parent (%)",
    "acc_parent_ft": "acc parent + same FT (%)",
    "acc_pruned_before_ft": "acc pruned, before FT (%)",
    "acc_pruned_after_ft": "acc pruned, after FT (%)",
    "params": "params",
    "pruned_params": "params pruned",
    "params_reduction": "params ↓ (%)",
    "macs": "MACs",
    "pruned_macs": "MACs pruned",
    "macs_reduction": "MACs ↓ (%)",
    "flops": "FLOPs",
    "pruned_flops": "FLOPs pruned",
    "flops_reduction": "FLOPs ↓ (%)",
}


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The papers' table style in Markdown: one row per pruned network."""
    optional = ("acc_parent_ft", "acc_pruned_after_ft")  # absent without fine-tuning
    cols = [
        c for c in _MD_HEADERS if c not in optional or any(r.get(c) not in (None, "") for r in rows)
    ]
    lines = [
        "| " + " | ".join(_MD_HEADERS[c] for c in cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c), c) for c in cols) + " |")
    notes = (
        '\nMACs = multiply-accumulates of conv + linear layers (the papers\' "FLOPs", counted '
        "with thop); FLOPs = 2 × MACs. Reductions are relative to the parent network. "
        "FT = fine-tuning.\n"
    )
    return "\n".join(lines) + "\n" + notes


def delta_m_vs_delta_acc(
    rows: Sequence[Mapping[str, Any]], out_dir: Path, title: str = ""
) -> dict[str, Any]:
    """Paper 1, Fig. 10(b): ΔM of each single removed layer vs the accuracy drop it causes.

    Args:
        rows: one dict per single-layer variant with ``layer``, ``delta_m`` (M_i − M_{i−1} on
            the parent's curve) and ``delta_acc_drop`` (Acc_parent − Acc_pruned after
            fine-tuning, in points); when every row also has ``delta_acc_drop_vs_control``
            (the parent fine-tuned with the same recipe minus the pruned one), that is plotted.
        out_dir: run folder (``delta_m_vs_delta_acc.csv``, ``figures/delta_m_vs_delta_acc.*``).
        title: figure title.

    Returns:
        ``{"csv": path, "y": plotted column, "figure": [png, pdf], "pearson_r": r or nan,
        "slope": s or nan}``.
    """
    csv = write_csv_rows(out_dir / "delta_m_vs_delta_acc.csv", list(rows))
    # With the control run (the parent fine-tuned the same way), the drop is measured against it:
    # extra training alone can move an under-trained parent's accuracy.
    control = all(r.get("delta_acc_drop_vs_control") is not None for r in rows)
    y_key = "delta_acc_drop_vs_control" if control else "delta_acc_drop"
    x = np.asarray([_num(r["delta_m"]) for r in rows], dtype=float)
    y = np.asarray([_num(r[y_key]) for r in rows], dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    r_val = slope = intercept = math.nan
    if ok.sum() >= 2 and np.ptp(x[ok]) > 0:
        slope, intercept = np.polyfit(x[ok], y[ok], 1)
        if ok.sum() >= 3 and np.ptp(y[ok]) > 0:
            r_val = float(np.corrcoef(x[ok], y[ok])[0, 1])
    fig = plot_delta_m_vs_delta_acc(
        x,
        y,
        [str(r["layer"]) for r in rows],
        fit=None if math.isnan(slope) else (float(slope), float(intercept)),
        pearson_r=r_val,
        control=control,
        title=title,
    )
    paths = atomic_save_figure(fig, out_dir / "figures" / "delta_m_vs_delta_acc", close=True)
    return {
        "csv": str(csv),
        "y": y_key,
        "figure": [str(p) for p in paths],
        "pearson_r": r_val,
        "slope": float(slope),
    }


def _num(value: Any) -> float:
    """A float, NaN for a missing value (the first layer has no ΔM)."""
    return math.nan if value is None or value == "" else float(value)


def final_acc(row: Mapping[str, Any]) -> float:
    """The pruned network's reported accuracy: after fine-tuning, or before it without one."""
    after = row.get("acc_pruned_after_ft")
    return float(row["acc_pruned_before_ft"] if after is None else after)


def sweep_row(
    decision: PruningDecision,
    name: str,
    row: Mapping[str, Any],
    measure: str,
    previous_acc: float,
) -> dict[str, Any]:
    """One point of Fig. 10(b): ΔM of the layer ``name`` against the accuracy drop.

    ``delta_acc_drop`` = Acc_parent − Acc_variant (paper 1: "the accuracy of the original model
    and pruned model"); ``delta_acc_step`` = Acc of the previous variant (the parent for the
    first) − Acc_variant, the drop the added layer alone causes in a cumulative sweep.
    """
    idx = decision.layers.index(name)
    final = final_acc(row)
    return {
        "layer": name,
        "layer_index": idx + 1,
        "removed_layers": " ".join(decision.removed),
        "num_removed": len(decision.removed),
        "measure": measure,
        "M_prev": decision.values[idx - 1] if idx > 0 else None,
        "M_layer": decision.values[idx],
        "delta_m": decision.deltas[idx],
        "acc_parent": row["acc_parent"],
        "acc_pruned_before_ft": row["acc_pruned_before_ft"],
        "acc_pruned_after_ft": row["acc_pruned_after_ft"],
        "finetuned": row["acc_pruned_after_ft"] is not None,
        "delta_acc_drop": row["acc_parent"] - final,
        "delta_acc_step": previous_acc - final,
        "params_reduction": row["params_reduction"],
        "flops_reduction": row["flops_reduction"],
    }


def table_row(
    *,
    model: str | None,
    data: str,
    decision: PruningDecision,
    measure: str,
    acc_parent: float,
    acc_before: float,
    finetuned: Mapping[str, Any],
    costs: PruningCosts,
    arch: Mapping[str, Any],
) -> dict[str, Any]:
    """One row of the pruning table (:data:`TABLE_COLUMNS` plus ``finetune_seconds``).

    Args:
        model: The parent's architecture name.
        data: The dataset name.
        decision: The pruning decision.
        measure: The curve measure (empty when no curve was read).
        acc_parent: The parent's test accuracy (%).
        acc_before: The pruned network's test accuracy before fine-tuning (%).
        finetuned: ``{"acc", "epochs", "seconds", "checkpoint"}`` of the fine-tuning (``acc``
            None without one).
        costs: Parent vs pruned costs.
        arch: The pruned network's ``arch_config()``.
    """
    c = costs.to_dict()
    return {
        "model": model,
        "data": data,
        "rule": decision.rule,
        "params_rule": ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in decision.params.items()
            if k != "remove"
        ),
        "measure": measure if decision.values is not None else "",
        "num_removed": len(decision.removed),
        "removed_layers": " ".join(decision.removed),
        "acc_parent": acc_parent,
        "acc_pruned_before_ft": acc_before,
        "acc_pruned_after_ft": finetuned["acc"],
        # Paper 1 (Sec. 5.2, Fig. 10b): ΔAcc = Acc_parent − Acc_pruned, the accuracy *drop*
        # (positive = the pruned network is worse), as in delta_m_vs_delta_acc.csv.
        "delta_acc": None if finetuned["acc"] is None else acc_parent - finetuned["acc"],
        "finetune_epochs": finetuned["epochs"],
        **{k: c[k] for k in TABLE_COLUMNS if k in c},
        "pruned_arch": _arch_summary(arch),
        "checkpoint": finetuned["checkpoint"],
        "finetune_seconds": finetuned["seconds"],
    }


#: Columns of a single pruning's row that become summary metrics (``pruning/<column>``).
_SUMMARY_COLUMNS = (
    "acc_parent",
    "acc_pruned_before_ft",
    "acc_pruned_after_ft",
    "params_reduction",
    "macs_reduction",
    "flops_reduction",
    "num_removed",
)


def summary_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """``pruning/<column>`` metrics of a run that pruned one network (none for a sweep)."""
    if len(rows) != 1:
        return {}
    row = rows[0]
    return {f"pruning/{k}": float(row[k]) for k in _SUMMARY_COLUMNS if row.get(k) is not None}
