"""Ring graphs per layer; paper 2's modularity M beside Newman Q (paper 2 Figs. 6-10).

Paper 2 draws, per layer, the "important relationship subgraph": N = 4000 test images as nodes
grouped by class around a circle and the |E| = 40000 most similar pairs as edges, intra-class
edges in the class colour and inter-class edges in red; over the layers red edges give way to
coloured ones. On the same graph it defines M = r × AQ × (1 − EQ) (Eqs. 3-5) and compares the
M curve with paper 1's modularity curve (Fig. 10). Here, per layer:

* the graph is :func:`dnn_modularity.graph.top_edges_graph` (global top-|E| pairs);
* ``M, AQ, EQ, r`` come from :func:`dnn_modularity.graph.class_separation`;
* Newman Q is given twice: of the same top-|E| graph, and paper 1's k-NN modularity of the same
  features (the blue curve of Fig. 10);
* figures: a grid of ring graphs, an animated GIF over the layers, and the M-vs-Q curves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dnn_modularity.analysis.common import AnalysisOutput, layer_features, metric_key
from dnn_modularity.plots_analysis import (
    RingLayer,
    plot_m_vs_q,
    plot_ring_grid,
    ring_gif_bytes,
)

__all__ = ["MEASURES", "ring_analysis", "run"]

#: Per-layer quantities recorded (``modularity`` = paper 1's k-NN Newman Q).
MEASURES = ("M", "AQ", "EQ", "r", "Q_top_edges", "modularity", "intra_edges", "inter_edges")


def ring_analysis(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    num_edges: int | None = None,
    k: int = 3,
    metric: str = "cosine",
    taps: Any = "block",
    seed: int = 0,
    batch_size: int = 256,
    block_size: int | None = None,
    dtype: torch.dtype | None = None,
    class_names: Sequence[str] | None = None,
    gif: bool = True,
    gif_frame_seconds: float = 0.8,
    max_edges_drawn: int | None = None,
    ncols: int = 4,
    title: str = "",
) -> AnalysisOutput:
    """Top-|E| graph of every layer: ring pictures, M (paper 2) and Newman Q.

    Args:
        model: Takes images in [0, 1].
        images: ``(N, C, H, W)`` probe images (paper 2: N = 4000).
        labels: ``(N,)`` labels.
        num_edges: |E|, the number of most similar pairs kept (paper 2: 40000 of N = 4000);
            None: paper 2's edge density for this N
            (:func:`dnn_modularity.graph.resolve_num_edges`). Rows record ``num_edges`` and
            ``edge_density``.
        k: Neighbours per node for the paper-1 k-NN Q curve.
        metric: ``cosine`` (paper 2) or ``pearson``.
        taps: Tap selection.
        seed: ``seed`` column (probe seed).
        batch_size: Images per forward pass.
        block_size: Engine block size.
        dtype: Optional feature dtype.
        class_names: Legend names indexed by label.
        gif: Also render the animated GIF (``figures/ring.gif``).
        gif_frame_seconds: Seconds per GIF frame.
        max_edges_drawn: Cap on drawn edges per panel (None: all |E|; the numbers always use
            all of them).
        ncols: Panels per row of the grid.
        title: Figure title prefix.

    Returns:
        :class:`AnalysisOutput` named ``ring``: rows per layer and measure (:data:`MEASURES`),
        figures ``ring_grid`` and ``m_vs_q``, file ``figures/ring.gif``, metric keys
        ``M/layer_07``, ``Q_top_edges/layer_07``, ``modularity/layer_07``.
    """
    from dnn_modularity.graph import (
        class_separation,
        knn_modularity,
        modularity,
        resolve_num_edges,
        top_edges_graph,
    )

    labels = labels.long().cpu()
    budget = resolve_num_edges(len(labels), num_edges)
    num_edges = budget.num_edges
    tap_name = taps if isinstance(taps, str) else "custom"
    base = {
        "analysis": "ring",
        "variant": "trained",
        "tap": tap_name,
        "N": len(labels),
        "k": k,
        "num_edges": num_edges,
        "edge_density": budget.density,
        "metric": metric,
        "seed": seed,
    }
    rows: list[dict[str, Any]] = []
    frames: list[RingLayer] = []
    per_measure: dict[str, list[float]] = {m: [] for m in MEASURES}
    names: list[str] = []
    label_np = labels.numpy()
    for point, feats in layer_features(
        model,
        images,
        taps=taps,
        batch_size=batch_size,
        dtype=dtype,
        what=f"ring: top-{num_edges} graphs, M and Q (N={len(labels)})",
        quiet=False,
    ):
        graph = top_edges_graph(feats, num_edges=num_edges, metric=metric, block_size=block_size)
        sep = class_separation(graph, labels)
        src = graph.src.cpu().numpy()
        dst = graph.dst.cpu().numpy()
        intra = int((label_np[src] == label_np[dst]).sum())
        values = {
            "M": float(sep.m),
            "AQ": float(sep.aq),
            "EQ": float(sep.eq),
            "r": float(sep.r),
            "Q_top_edges": float(modularity(graph, labels)),
            "modularity": float(
                knn_modularity(feats, labels, k=k, metric=metric, block_size=block_size)
            ),
            "intra_edges": float(intra),
            "inter_edges": float(len(src) - intra),
        }
        del feats
        index, name = int(point.index), str(point.name)
        names.append(name)
        for measure, value in values.items():
            per_measure[measure].append(value)
            rows.append(
                {
                    **base,
                    "layer_index": index,
                    "layer": name,
                    "measure": measure,
                    "key": metric_key(measure, index),
                    "value": value,
                }
            )
        frames.append(
            RingLayer(
                f"{index}: {name}",
                src,
                dst,
                label_np,
                subtitle=f"M={values['M']:.3f}  r={values['r']:.2f}",
            )
        )
    prefix = f"{title}: " if title else ""
    figures = {
        "ring_grid": plot_ring_grid(
            frames,
            ncols=ncols,
            class_names=class_names,
            max_edges_drawn=max_edges_drawn,
            title=f"{prefix}top-{num_edges} similarity graph per layer (N={len(labels)}, "
            f"{budget.density:.2%} of the pairs)",
        ),
        "m_vs_q": plot_m_vs_q(
            per_measure["M"],
            {
                f"Q, k-NN graph (paper 1, k={k})": per_measure["modularity"],
                f"Q, top-{num_edges} graph": per_measure["Q_top_edges"],
            },
            layer_names=names,
            title=f"{prefix}M vs Newman Q",
        ),
    }
    files = {}
    if gif and frames:
        files["figures/ring.gif"] = ring_gif_bytes(
            frames,
            class_names=class_names,
            frame_seconds=gif_frame_seconds,
            max_edges_drawn=max_edges_drawn,
        )
    metrics = {
        r["key"]: r["value"] for r in rows if r["measure"] in ("M", "Q_top_edges", "modularity")
    }
    corr = float("nan")
    if len(names) >= 3 and np.std(per_measure["M"]) > 0 and np.std(per_measure["modularity"]) > 0:
        corr = float(np.corrcoef(per_measure["M"], per_measure["modularity"])[0, 1])
    meta = {
        "settings": {
            "num_edges": num_edges,
            "edge_density": budget.density,
            "num_edges_source": budget.source,
            "k": k,
            "metric": metric,
            "taps": taps,
            "N": len(labels),
        },
        "layers": names,
        "curves": per_measure,
        "pearson_M_vs_knn_Q": corr,
    }
    return AnalysisOutput(
        "ring", rows=rows, meta=meta, figures=figures, files=files, metrics=metrics
    )


def run(cfg: Any) -> dict[str, Any]:
    """Hydra-facing entry: ``python -m dnn_modularity.analyze analysis=ring``."""
    from dnn_modularity.analysis.context import finish, load_context, probe_sets

    ctx = load_context(cfg)
    a = cfg.analysis
    total = len(ctx.datamodule.test_labels())
    n = min(int(a.n), total)
    (probe,) = probe_sets(ctx, repeats=1, n=n)
    output = ring_analysis(
        ctx.model,
        probe.images,
        probe.labels,
        num_edges=None if a.get("num_edges") is None else int(a.num_edges),
        k=int(cfg.graph.k),
        metric=str(cfg.graph.metric),
        taps=ctx.taps,
        seed=int(cfg.probe.seed),
        batch_size=int(cfg.batch_size),
        block_size=ctx.block_size,
        dtype=ctx.feature_dtype,
        class_names=ctx.class_names,
        gif=bool(a.gif),
        gif_frame_seconds=float(a.gif_frame_seconds),
        max_edges_drawn=a.get("max_edges_drawn"),
        ncols=int(a.ncols),
        title=ctx.title(""),
    )
    return finish(ctx, output)
