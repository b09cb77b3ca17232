"""The ``report`` figure of a sweep of ``analysis=diagnostics`` jobs.

``diagnostics_curves``: one panel per measure — modularity Q, k-NN accuracy (leave-one-out),
linear-probe accuracy (and paper 2's M when the jobs computed it) — with one line per job
(labelled by its swept settings) and a mean ± std band over the job's probe-set repeats, so the
accuracy curves of a sweep are read beside its modularity curves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt

from dnn_modularity.plots.curves import DPI, draw_curve, layer_ticks
from dnn_modularity.sweeps import job_label, sort_key

__all__ = ["PANELS", "diagnostics_report_figures", "layer_series"]

#: Panels of the figure: (measure in the records, axis label).
PANELS = (
    ("modularity", "modularity Q"),
    ("knn_accuracy", "k-NN accuracy (leave-one-out)"),
    ("probe_accuracy", "linear-probe accuracy"),
    ("M", "class-separation M"),
)


def layer_series(job: Any, measure: str) -> tuple[list[float], list[float], list[str]]:
    """``(means, stds, layer names)`` of one per-layer measure of a job, in layer order.

    Read from the job's summary (``diagnostics_summary.csv``: mean and std over repeats), the
    per-layer rows only (not the per-class or per-pair ones).
    """
    rows = [
        r
        for r in job.summary
        if r.get("measure") == measure and not r.get("class") and not r.get("class_b")
    ]
    rows.sort(key=lambda r: int(r["layer_index"]))

    def number(text: Any) -> float:
        try:
            return float(text)
        except (TypeError, ValueError):
            return math.nan

    return (
        [number(r["mean"]) for r in rows],
        [number(r["std"]) for r in rows],
        [r["layer"] for r in rows],
    )


def diagnostics_report_figures(jobs: Sequence[Any], keys: Sequence[str]) -> dict[str, Any]:
    """``{"diagnostics_curves": Figure}`` for a sweep's diagnostics jobs.

    Args:
        jobs: :class:`dnn_modularity.report.Job` objects of analysis ``diagnostics``.
        keys: The swept settings (line labels and order).

    Returns:
        The figures by name (none when no job holds a per-layer summary).
    """
    panels = [(m, label) for m, label in PANELS if any(layer_series(j, m)[0] for j in jobs)]
    if not panels:
        return {}
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.6 * len(panels), 3.9), dpi=DPI, squeeze=False
    )
    members = sorted(jobs, key=lambda j: sort_key(j, keys))
    cmap = plt.get_cmap("viridis")
    for ax, (measure, label) in zip(axes[0], panels, strict=True):
        names: list[str] = []
        for i, job in enumerate(members):
            mean, std, layer_names = layer_series(job, measure)
            if not mean:
                continue
            names = names or layer_names
            color = cmap(i / max(1, len(members) - 1) * 0.9) if len(members) > 1 else "#1f77b4"
            text = f"{job.model} {job_label(job, keys)}".strip()
            draw_curve(
                ax, mean, std, band_alpha=0.15, marker="o", markersize=3, color=color, label=text
            )
        layer_ticks(ax, len(names), names)
        ax.set_xlabel("layer")
        ax.set_ylabel(f"{label} (mean ± std)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return {"diagnostics_curves": fig}
