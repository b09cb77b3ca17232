"""A sweep's comparison figures (``report``): curves per swept value, last layer, attacks, M."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from dnn_modularity.plots.curves import DPI, draw_curve, layer_ticks
from dnn_modularity.sweeps import Job, curve_series, job_label, number, setting, sort_key

__all__ = ["adversarial_figure", "curve_figure", "last_layer_figure", "ring_figure"]


def curve_figure(jobs: Sequence[Job], keys: Sequence[str], include_nulls: bool) -> Any:
    """Per-layer modularity, mean ± std band, one line per swept value (paper 1 Figs. 4-7, B11-B13).

    Args:
        jobs: The ``curve`` jobs.
        keys: The swept settings (line labels, order).
        include_nulls: Also draw each job's random-init and shuffled-label curves (Fig. B12).
    """
    # A sweep over models (Figs. 4, 5, 9) puts every model of a data set in one panel, labelled
    # by model; any other sweep draws one panel per model, one line per swept value.
    model_sweep = bool(keys) and all(k in ("ckpt_path", "model") for k in keys)
    panels: dict[str, list[Job]] = {}
    for job in jobs:
        panel = f"on {job.meta.get('data')}" if model_sweep else job.model
        panels.setdefault(panel, []).append(job)
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(6.4 * ncols, 4.2 * nrows), dpi=DPI, squeeze=False
    )
    cmap = plt.get_cmap("viridis")
    for ax, (title, members) in zip(axes.flat, panels.items(), strict=False):
        members = sorted(members, key=lambda j: sort_key(j, keys))
        layer_names: list[str] = []
        for i, job in enumerate(members):
            color = cmap(i / max(1, len(members) - 1) * 0.9) if len(members) > 1 else "#1f77b4"
            variants = [("trained", "-")] + (
                [("random_init", "--"), ("shuffled", ":")] if include_nulls else []
            )
            for variant, style in variants:
                mean, std, names = curve_series(job, variant)
                layer_names = layer_names or ([] if model_sweep else names)
                if not mean:
                    continue
                name = f"{job.meta.get('model')} ({job.path.name})" if model_sweep else None
                label = (name or job_label(job, keys)) + (
                    "" if variant == "trained" else f" ({variant})"
                )
                draw_curve(
                    ax, mean, std, fmt=style, color=color, marker="o", markersize=3, label=label,
                    band_alpha=0.15,
                )  # fmt: skip
        if layer_names:
            layer_ticks(ax, len(layer_names), layer_names)
        ax.set_title(title)
        ax.set_xlabel("layer")
        ax.set_ylabel("modularity Q (mean ± std)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def last_layer_figure(jobs: Sequence[Job], key: str) -> Any:
    """The last layer's modularity (mean ± std) against the numeric swept setting ``key``."""
    fig, ax = plt.subplots(figsize=(5.0, 3.6), dpi=DPI)
    panels: dict[str, list[tuple[float, float, float]]] = {}
    for job in jobs:
        mean, std, _ = curve_series(job, "trained")
        x = number(setting(job, key))
        if mean and math.isfinite(x):
            panels.setdefault(job.model, []).append((x, mean[-1], std[-1]))
    for name, points in panels.items():
        points.sort()
        xs, ys, es = zip(*points, strict=True)
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=name)
    ax.set_xlabel(key)
    ax.set_ylabel("last-layer modularity Q")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def adversarial_figure(jobs: Sequence[Job], keys: Sequence[str]) -> Any:
    """Attack success rate per attack and job (paper 1 Fig. 6a's left panel, over a sweep)."""
    attacks = list(dict.fromkeys(r["attack"] for job in jobs for r in job.summary))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(attacks) + 2), 3.8), dpi=DPI)
    width = 0.8 / max(1, len(jobs))
    for i, job in enumerate(jobs):
        rates = {r["attack"]: number(r.get("success_rate")) for r in job.summary}
        values = [np.nan_to_num(rates.get(a, math.nan)) * 100 for a in attacks]
        ax.bar(
            np.arange(len(attacks)) + i * width,
            values,
            width,
            label=f"{job.model} {job_label(job, keys)}".strip(),
        )
    ax.set_xticks(np.arange(len(attacks)) + 0.4 - width / 2)
    ax.set_xticklabels(attacks)
    ax.set_ylabel("attack success rate (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def ring_figure(jobs: Sequence[Job], keys: Sequence[str]) -> Any:
    """Paper 2's M = r·AQ·(1−EQ) per layer, one line per job."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=DPI)
    for job in jobs:
        rows = sorted(
            (r for r in job.rows if r["measure"] == "M"), key=lambda r: int(r["layer_index"])
        )
        ax.plot(
            range(1, len(rows) + 1),
            [number(r["value"]) for r in rows],
            marker="o",
            markersize=3,
            label=f"{job.model} {job_label(job, keys)}".strip(),
        )
    ax.set_xlabel("layer")
    ax.set_ylabel("M = r·AQ·(1-EQ)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
