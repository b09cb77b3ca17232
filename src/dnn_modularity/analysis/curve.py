"""Modularity curves with repeats and null baselines (paper 1 Figs. 4, 5, 7, B11, B12, B13).

For R seeded, class-balanced probe sets of N test images, the k-NN modularity of every layer
(:func:`~dnn_modularity.analysis.common.layer_modularity`) gives per layer a mean, a standard
deviation and a 95% t-interval over the repeats (paper 1 Sec. 4.1 repeats each experiment to
show mean and variance; the official code's "repeats" were the first five unshuffled test
batches instead). Two null baselines go into the same record:

* ``shuffled``: the same graphs with permuted labels — class structure destroyed, so Q ≈ 0;
* ``random_init``: the same architecture at random initialisation (Fig. B12), whose curve
  stays nearly flat while the trained one rises.

The ablations of Figs. 7a (N), 7b/B13 (k) and B11 (Pearson) are sweeps of this analysis over
``probe.n``, ``graph.k`` and ``graph.metric`` that ``dnn_modularity.report`` combines.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dnn_modularity.analysis.common import (
    AnalysisOutput,
    layer_modularity,
    metric_key,
    random_init_like,
    shuffled_labels,
    summarize_rows,
)
from dnn_modularity.plots_analysis import CurveSeries, plot_curve_series
from dnn_modularity.progress import track

__all__ = ["VARIANTS", "as_probe", "curve_analysis", "rise", "run"]

log = logging.getLogger(__name__)

#: Record variants: the trained model and the two null baselines.
VARIANTS = ("trained", "random_init", "shuffled")
_STYLE = {
    "trained": {"color": "#1f77b4"},
    "random_init": {"color": "#ff7f0e", "linestyle": "--"},
    "shuffled": {"color": "#7f7f7f", "linestyle": ":"},
}
_LABEL = {
    "trained": "trained",
    "random_init": "random init (B12)",
    "shuffled": "shuffled labels (null)",
}


def as_probe(probe: Any) -> tuple[Tensor, Tensor, int | None]:
    """``(images, labels, seed)`` of a ``ProbeSet``-like object or an ``(images, labels)`` pair."""
    if isinstance(probe, tuple | list):
        images, labels = probe[0], probe[1]
        return images, torch.as_tensor(labels).long(), None
    meta = getattr(probe, "meta", None) or {}
    return probe.images, probe.labels.long(), meta.get("seed")


def rise(values: Sequence[float]) -> float:
    """Mean of the last third of a curve minus the mean of its first third (> 0: rising)."""
    x = np.asarray(values, dtype=float)
    third = max(1, len(x) // 3)
    return float(x[-third:].mean() - x[:third].mean())


def curve_analysis(
    model: nn.Module,
    probes: Sequence[Any],
    *,
    k: int = 3,
    metric: str = "cosine",
    taps: Any = "block",
    seed: int = 0,
    shuffled_null: bool = True,
    random_init: bool = True,
    random_init_seed: int = 12345,
    batch_size: int = 256,
    block_size: int | None = None,
    dtype: torch.dtype | None = None,
    title: str = "",
    reference: tuple[str, Sequence[float]] | None = None,
) -> AnalysisOutput:
    """Per-layer modularity over R probe sets, with the shuffled-label and random-init nulls.

    Args:
        model: Takes images in [0, 1] (``Normalized`` zoo model).
        probes: R probe sets: ``ProbeSet`` objects or ``(images (N, C, H, W), labels (N,))``.
        k: Neighbours per node of the k-NN graph.
        metric: ``cosine`` or ``pearson`` (Fig. B11).
        taps: Tap selection (``block`` = the paper's layers).
        seed: Seed of repeat 0's label shuffle (repeat r uses ``seed + r``); also the ``seed``
            column when a probe carries none.
        shuffled_null: Add the shuffled-label baseline.
        random_init: Add the random-initialisation baseline (repeat r initialised with
            ``random_init_seed + r``).
        random_init_seed: Base seed of the random initialisations.
        batch_size: Images per forward pass.
        block_size: Engine block size.
        dtype: Optional feature dtype.
        title: Figure title.
        reference: Optional ``(label, (L,) values)``: a published curve drawn dashed in the
            figure (``run`` passes the authors' ResNet-56 curve for ResNet-56 on CIFAR-10/100,
            :mod:`dnn_modularity.reference`); ignored when its length differs from L.

    Returns:
        :class:`AnalysisOutput` named ``curve`` with tidy rows (variant, repeat, layer, value),
        the per-layer summary (mean, std, 95% interval), figure ``curve`` and metric keys
        ``modularity/layer_07``, ``random_init/modularity/layer_07``,
        ``shuffled/modularity/layer_07`` (means).

    Raises:
        ValueError: No probe sets.
    """
    if not probes:
        raise ValueError("curve_analysis needs at least one probe set, got 0")
    rows: list[dict[str, Any]] = []
    timings: dict[str, float] = {"trained": 0.0, "random_init": 0.0}
    names: list[str] = []
    tap_name = taps if isinstance(taps, str) else "custom"
    switches = (("trained", True), ("shuffled", shuffled_null), ("random init", random_init))
    variants = ", ".join(v for v, on in switches if on)
    for repeat, probe in enumerate(track(probes, f"curve: {variants}", unit="probe sets")):
        images, labels, probe_seed = as_probe(probe)
        row_seed = probe_seed if probe_seed is not None else seed + repeat
        label_sets = {"trained": labels}
        if shuffled_null:
            label_sets["shuffled"] = shuffled_labels(labels, seed + repeat)
        common = {
            "k": k,
            "metric": metric,
            "taps": taps,
            "batch_size": batch_size,
            "block_size": block_size,
            "dtype": dtype,
        }
        curves = {"trained": layer_modularity(model, images, label_sets, **common)}
        timings["trained"] += curves["trained"].seconds
        if random_init:
            fresh = random_init_like(model, random_init_seed + repeat)
            curves["random_init"] = layer_modularity(
                fresh, images, {"random_init": labels}, **common
            )
            timings["random_init"] += curves["random_init"].seconds
            del fresh
        names = curves["trained"].names
        for curve in curves.values():
            for variant, values in curve.values.items():
                for index, name, value in zip(curve.indices, curve.names, values, strict=True):
                    rows.append(
                        {
                            "analysis": "curve",
                            "variant": variant,
                            "layer_index": index,
                            "layer": name,
                            "tap": tap_name,
                            "N": len(labels),
                            "k": k,
                            "metric": metric,
                            "seed": row_seed,
                            "repeat": repeat,
                            "measure": "modularity",
                            "key": metric_key(
                                "modularity", index, None if variant == "trained" else variant
                            ),
                            "value": value,
                        }
                    )
    summary = summarize_rows(rows)
    metrics = {row["key"]: row["mean"] for row in summary}
    series = []
    rises = {}
    for variant in VARIANTS:
        part = [r for r in summary if r["variant"] == variant]
        if not part:
            continue
        means = [r["mean"] for r in part]
        rises[variant] = rise(means)
        series.append(
            CurveSeries(_LABEL[variant], means, [r["std"] for r in part], style=_STYLE[variant])
        )
    drawn_reference = None
    if reference is not None and len(reference[1]) == len(names):
        drawn_reference = reference[0]
        series.append(
            CurveSeries(
                reference[0],
                list(reference[1]),
                style={"color": "black", "linestyle": "--", "marker": None, "zorder": 5},
            )
        )
    n = len(as_probe(probes[0])[1])
    fig = plot_curve_series(
        series,
        title=title or f"modularity curve (N={n}, k={k}, {metric}, R={len(probes)})",
        layer_names=names,
    )
    meta = {
        "settings": {
            "k": k,
            "metric": metric,
            "taps": taps,
            "N": n,
            "repeats": len(probes),
            "seed": seed,
            "shuffled_null": shuffled_null,
            "random_init": random_init,
            "random_init_seed": random_init_seed,
        },
        "layers": names,
        "reference": drawn_reference,
        "rise_last_minus_first_third": rises,
        "seconds": timings,
    }
    return AnalysisOutput(
        "curve", rows=rows, summary=summary, meta=meta, figures={"curve": fig}, metrics=metrics
    )


def _authors_reference(model: str | None, data: str | None) -> tuple[str, list[float]] | None:
    """The authors' published curve when the run matches it (ResNet-56 on CIFAR-10/100)."""
    from dnn_modularity.reference import matching_authors_curve

    ref = matching_authors_curve(model, data)
    return None if ref is None else (ref.label, list(ref.values))


def run(cfg: Any) -> dict[str, Any]:
    """Hydra-facing entry: ``python -m dnn_modularity.analyze analysis=curve``.

    Args:
        cfg: The composed ``analyze`` config.

    Returns:
        The run summary of :func:`dnn_modularity.analysis.context.finish`.
    """
    from dnn_modularity.analysis.context import finish, load_context, probe_sets
    from dnn_modularity.data.probe import ProbeSizeError

    ctx = load_context(cfg)
    a = cfg.analysis
    repeats = int(a.repeats)
    disjoint = a.get("disjoint")
    disjoint = bool(cfg.probe.get("disjoint", True)) if disjoint is None else bool(disjoint)
    fallback = None
    try:
        probes = probe_sets(ctx, repeats=repeats, disjoint=disjoint)
    except ValueError as error:
        if isinstance(error, ProbeSizeError) or not disjoint or a.get("disjoint") is not None:
            raise
        # e.g. digits: 54 test images per class cannot give 5 disjoint sets of 50 per class.
        fallback = f"independent draws: {error}"
        log.warning("curve: %s", fallback)
        probes = probe_sets(ctx, repeats=repeats, disjoint=False)
    output = curve_analysis(
        ctx.model,
        probes,
        k=int(cfg.graph.k),
        metric=str(cfg.graph.metric),
        taps=ctx.taps,
        seed=int(cfg.seed),
        shuffled_null=bool(a.shuffled_null),
        random_init=bool(a.random_init),
        random_init_seed=int(a.random_init_seed),
        batch_size=int(cfg.batch_size),
        block_size=ctx.block_size,
        dtype=ctx.feature_dtype,
        title=ctx.title("modularity curve"),
        reference=_authors_reference(ctx.model_name, getattr(ctx.datamodule, "name", None)),
    )
    output.meta["settings"]["disjoint_repeats"] = fallback is None and disjoint
    output.meta["settings"]["probe_fallback"] = fallback
    output.meta["settings"]["strategy"] = str(cfg.probe.get("strategy", "balanced"))
    return finish(ctx, output)
