"""|ΔM| between layers beside linear CKA of the same layers (paper 1 Sec. 5.1, Fig. 8).

Paper 1 represents the difference of two layers by the difference of their modularity,
``D_ij = |M_i − M_j|``, and shows that its heatmap has the block structure of the linear-CKA
heatmap (Kornblith et al. 2019) of the same layers. Both come from one pass over the taps on one
probe set; the record also holds how well the two agree: the Pearson and Spearman correlation
between ``|ΔM|`` and ``1 − CKA`` over the layer pairs ``i < j``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dnn_modularity.analysis.common import AnalysisOutput, layer_features, metric_key
from dnn_modularity.plots_analysis import plot_difference_vs_cka

__all__ = ["difference_analysis", "run"]


def _correlations(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    from scipy import stats

    iu = np.triu_indices(a.shape[0], k=1)
    x, y = a[iu], b[iu]
    if x.size < 3 or np.std(x) == 0 or np.std(y) == 0:
        return {"pearson": float("nan"), "spearman": float("nan"), "pairs": int(x.size)}
    return {
        "pearson": float(stats.pearsonr(x, y)[0]),
        "spearman": float(stats.spearmanr(x, y)[0]),
        "pairs": int(x.size),
    }


def difference_analysis(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    *,
    k: int = 3,
    metric: str = "cosine",
    taps: Any = "block",
    seed: int = 0,
    debiased: bool = False,
    batch_size: int = 256,
    block_size: int | None = None,
    dtype: torch.dtype | None = None,
    title: str = "",
) -> AnalysisOutput:
    """Modularity curve, ``|M_i − M_j|`` and linear CKA of every pair of layers.

    Features of all layers are kept on the CPU for CKA: memory is ``N × Σ_l D_l`` values
    (use ``dtype=torch.float16`` or fewer images for wide early layers).

    Args:
        model: Takes images in [0, 1].
        images: ``(N, C, H, W)`` probe images.
        labels: ``(N,)`` labels.
        k: Neighbours per node.
        metric: ``cosine`` or ``pearson``.
        taps: Tap selection.
        seed: ``seed`` column (probe seed).
        debiased: Debiased CKA estimator.
        batch_size: Images per forward pass.
        block_size: Engine block size.
        dtype: Optional feature dtype.
        title: Figure title.

    Returns:
        :class:`AnalysisOutput` named ``difference``: rows of measures ``modularity`` (per
        layer), ``abs_delta_modularity`` and ``linear_cka`` (per pair: ``layer_index`` i,
        ``layer_j_index`` j); figure ``difference``; correlations in ``meta``.
    """
    from dnn_modularity.graph import cka_matrix, knn_modularity, modularity_difference

    labels = labels.long().cpu()
    names: list[str] = []
    indices: list[int] = []
    curve: list[float] = []
    features: list[Tensor] = []
    for point, feats in layer_features(
        model,
        images,
        taps=taps,
        batch_size=batch_size,
        dtype=dtype,
        what=f"difference: Q and features for CKA (N={len(labels)})",
        quiet=False,
    ):
        curve.append(
            float(knn_modularity(feats, labels, k=k, metric=metric, block_size=block_size))
        )
        names.append(str(point.name))
        indices.append(int(point.index))
        features.append(feats.detach().cpu())
    cka = cka_matrix(features, debiased=debiased).double().cpu().numpy()
    del features
    diff = modularity_difference(curve).double().cpu().numpy()
    tap_name = taps if isinstance(taps, str) else "custom"
    base = {
        "analysis": "difference",
        "variant": "trained",
        "tap": tap_name,
        "N": len(labels),
        "k": k,
        "metric": metric,
        "seed": seed,
    }
    rows = [
        {
            **base,
            "layer_index": i,
            "layer": n,
            "measure": "modularity",
            "key": metric_key("modularity", i),
            "value": v,
        }
        for i, n, v in zip(indices, names, curve, strict=True)
    ]
    for a in range(len(names)):
        for b in range(len(names)):
            for measure, matrix in (("abs_delta_modularity", diff), ("linear_cka", cka)):
                rows.append(
                    {
                        **base,
                        "layer_index": indices[a],
                        "layer": names[a],
                        "layer_j_index": indices[b],
                        "layer_j": names[b],
                        "measure": measure,
                        "value": float(matrix[a, b]),
                    }
                )
    agreement = _correlations(diff, 1.0 - cka)
    fig = plot_difference_vs_cka(
        diff, cka, layer_names=names, title=title or f"|ΔM| vs linear CKA (N={len(labels)}, k={k})"
    )
    meta = {
        "settings": {
            "k": k,
            "metric": metric,
            "taps": taps,
            "N": len(labels),
            "debiased": debiased,
        },
        "layers": names,
        "curve": curve,
        "agreement_abs_delta_m_vs_1_minus_cka": agreement,
    }
    metrics = {r["key"]: r["value"] for r in rows if r["measure"] == "modularity"}
    metrics["difference/pearson_vs_1_minus_cka"] = agreement["pearson"]
    return AnalysisOutput(
        "difference", rows=rows, meta=meta, figures={"difference": fig}, metrics=metrics
    )


def run(cfg: Any) -> dict[str, Any]:
    """Hydra-facing entry: ``python -m dnn_modularity.analyze analysis=difference``."""
    from dnn_modularity.analysis.context import finish, load_context, probe_sets

    ctx = load_context(cfg)
    (probe,) = probe_sets(ctx, repeats=1)
    output = difference_analysis(
        ctx.model,
        probe.images,
        probe.labels,
        k=int(cfg.graph.k),
        metric=str(cfg.graph.metric),
        taps=ctx.taps,
        seed=int(cfg.probe.seed),
        debiased=bool(cfg.analysis.debiased),
        batch_size=int(cfg.batch_size),
        block_size=ctx.block_size,
        dtype=ctx.feature_dtype,
        title=ctx.title("|ΔM| vs linear CKA"),
    )
    return finish(ctx, output)
