"""Per-layer histograms of all pairwise similarities (paper 2 Sec. 4.1, Figs. 2-5, 11-15).

Paper 2 takes all 10,000 CIFAR-10 test images, computes the cosine similarity of every pair of
them in each layer and counts the similarities in 10 equal bins over [0, 1]: layer by layer the
mass moves to the left (most pairs become dissimilar), which motivates keeping only the top |E|
edges for the ring graphs. The engine's :func:`dnn_modularity.graph.similarity_histogram`
counts blockwise (never an N × N matrix) and reports what falls below/above the range
(negative similarities are common after ReLU-free layers and with Pearson).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dnn_modularity.analysis.common import AnalysisOutput, layer_features, layer_key
from dnn_modularity.plots_analysis import plot_similarity_histograms

__all__ = ["histogram_analysis", "run"]


def histogram_analysis(
    model: nn.Module,
    images: Tensor,
    *,
    bins: int = 10,
    value_range: tuple[float, float] = (0.0, 1.0),
    metric: str = "cosine",
    taps: Any = "block",
    seed: int | None = None,
    batch_size: int = 256,
    block_size: int | None = None,
    dtype: torch.dtype | None = None,
    ncols: int = 4,
    title: str = "",
) -> AnalysisOutput:
    """Similarity histogram of all pairs of ``images`` in every layer.

    Args:
        model: Takes images in [0, 1].
        images: ``(N, C, H, W)`` images (paper 2: the whole 10,000-image test set).
        bins: Number of equal-width bins.
        value_range: ``(low, high)`` of the bins; counts outside go to under/overflow.
        metric: ``cosine`` (paper 2, Eq. 6) or ``pearson``.
        taps: Tap selection.
        seed: ``seed`` column (None when the whole test set is used).
        batch_size: Images per forward pass.
        block_size: Engine block size.
        dtype: Optional feature dtype.
        ncols: Panels per row of the figure.
        title: Figure title.

    Returns:
        :class:`AnalysisOutput` named ``histograms``: one row per layer and bin (``bin`` index,
        ``bin_low``, ``bin_high``, ``count`` and ``value`` = share of all pairs) plus rows
        ``bin=underflow``/``overflow``; figure ``histograms``; metric keys
        ``similarity_mode/layer_07`` (centre of the fullest bin) and
        ``similarity_low_share/layer_07`` (share of pairs below the middle of the range).
    """
    from dnn_modularity.graph import similarity_histogram

    tap_name = taps if isinstance(taps, str) else "custom"
    base = {
        "analysis": "histograms",
        "variant": "trained",
        "tap": tap_name,
        "N": len(images),
        "metric": metric,
        "seed": seed,
        "measure": "pair_share",
    }
    rows: list[dict[str, Any]] = []
    panels: list[dict[str, Any]] = []
    metrics: dict[str, float] = {}
    middle = (value_range[0] + value_range[1]) / 2
    for point, feats in layer_features(
        model,
        images,
        taps=taps,
        batch_size=batch_size,
        dtype=dtype,
        what=f"histograms: all-pairs similarities (N={len(images)})",
        quiet=False,
    ):
        hist = similarity_histogram(
            feats, bins=bins, range=tuple(value_range), metric=metric, block_size=block_size
        )
        del feats
        edges = np.asarray(torch.as_tensor(hist.edges).double().cpu())
        counts = np.asarray(torch.as_tensor(hist.counts).double().cpu())
        under, over = float(hist.underflow), float(hist.overflow)
        total = counts.sum() + under + over
        index, name = int(point.index), str(point.name)
        layer = {**base, "layer_index": index, "layer": name, "pairs": int(total)}
        for b in range(len(counts)):
            rows.append(
                {
                    **layer,
                    "bin": b,
                    "bin_low": float(edges[b]),
                    "bin_high": float(edges[b + 1]),
                    "count": int(counts[b]),
                    "value": counts[b] / total if total else 0.0,
                }
            )
        for which, count, low, high in (
            ("underflow", under, -np.inf, edges[0]),
            ("overflow", over, edges[-1], np.inf),
        ):
            rows.append(
                {
                    **layer,
                    "bin": which,
                    "bin_low": float(low),
                    "bin_high": float(high),
                    "count": int(count),
                    "value": count / total if total else 0.0,
                }
            )
        centers = (edges[:-1] + edges[1:]) / 2
        metrics[f"similarity_mode/{layer_key(index)}"] = float(centers[int(np.argmax(counts))])
        below = under + counts[centers < middle].sum()
        metrics[f"similarity_low_share/{layer_key(index)}"] = float(below / total) if total else 0.0
        panels.append(
            {
                "label": f"{index}: {name}",
                "edges": edges,
                "counts": counts,
                "underflow": under,
                "overflow": over,
            }
        )
    fig = plot_similarity_histograms(
        panels,
        ncols=ncols,
        title=title or f"pairwise {metric} similarity per layer (N={len(images)})",
    )
    meta = {
        "settings": {
            "bins": bins,
            "range": list(value_range),
            "metric": metric,
            "taps": taps,
            "N": len(images),
        },
        "layers": [p["label"] for p in panels],
    }
    return AnalysisOutput(
        "histograms", rows=rows, meta=meta, figures={"histograms": fig}, metrics=metrics
    )


def run(cfg: Any) -> dict[str, Any]:
    """Hydra-facing entry: ``python -m dnn_modularity.analyze analysis=histograms``.

    ``analysis.n: null`` (default) uses the whole test split, in order (paper 2).
    """
    from dnn_modularity.analysis.context import finish, load_context, probe_sets

    ctx = load_context(cfg)
    a = cfg.analysis
    total = len(ctx.datamodule.test_labels())
    n = total if a.get("n") is None else min(int(a.n), total)
    strategy = "sequential" if n == total else str(cfg.probe.strategy)
    (probe,) = probe_sets(ctx, repeats=1, n=n, strategy=strategy)
    output = histogram_analysis(
        ctx.model,
        probe.images,
        bins=int(a.bins),
        value_range=(float(a.low), float(a.high)),
        metric=str(cfg.graph.metric),
        taps=ctx.taps,
        seed=None if n == total else int(cfg.probe.seed),
        batch_size=int(cfg.batch_size),
        block_size=ctx.block_size,
        dtype=ctx.feature_dtype,
        ncols=int(a.ncols),
        title=ctx.title("pairwise similarity histograms"),
    )
    return finish(ctx, output)
