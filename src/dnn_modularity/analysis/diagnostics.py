"""Which classes separate where: per-class and class-pair diagnostics, k-NN and probe accuracy.

Beyond both papers, which report one number per layer. For R seeded probe sets and every tapped
layer, one k-NN pass (paper 1's graph) gives Newman's Q and, from the same graph
(:func:`dnn_modularity.layer_diagnostics.diagnose_layer`):

* per-class Q terms Q_c (summing to Q) and per-class k-NN purity;
* the C × C class-pair edge weights and the per-pair entanglement (1: as mixed as random labels);
* leave-one-out k-NN accuracy;

and beside them a ridge linear probe of the same features (Alain & Bengio 2016), trained on a
seeded class-stratified half of each probe set and tested on the other half (the split is in
every row and in ``settings``), plus paper 2's M on the top-|E| graph. Spearman correlations of
Q, M, k-NN accuracy and probe accuracy over the layers go into the JSON record.

Figures: the class × layer purity heatmap with the first layer at which each class reaches
``purity_threshold``; pair matrices at the first, middle and last layer and where Q rises most;
and "when do they come apart": the entanglement over layers of the pairs most entangled at the
last layer; the four curves side by side.

Over 500 lines: one analysis (its function, record assembly, closing summary and ``run``); its
figures already live in :mod:`dnn_modularity.plots.diagnostics`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from dnn_modularity.analysis.curve import as_probe
from dnn_modularity.analysis.measure import AnalysisOutput, layer_features, summarize_rows
from dnn_modularity.analysis.settings import AnalysisSettings
from dnn_modularity.graph import class_separation, resolve_num_edges, top_edges_graph
from dnn_modularity.graph.classes import first_crossing
from dnn_modularity.layer_diagnostics import (
    DIAGNOSTICS,
    LayerDiagnostics,
    check_diagnostics,
    class_names_of,
    diagnose_layer,
    diagnostic_rows,
    pair_label,
)
from dnn_modularity.plots.diagnostics import (
    plot_class_layer_heatmap,
    plot_pair_matrices,
    plot_pair_separation,
    plot_separability_curves,
)
from dnn_modularity.stats import spearman_matrix

__all__ = [
    "CURVES",
    "PROBE_TRAIN_SOURCES",
    "chosen_layers",
    "diagnostics_analysis",
    "run",
    "training_subset",
]

log = logging.getLogger(__name__)

#: Where the linear probe's training samples come from (``analysis.linear_probe_train``).
PROBE_TRAIN_SOURCES = ("probe_split", "train_subset")
#: The per-layer curves correlated over layers (Spearman) and drawn side by side.
CURVES = ("modularity", "M", "knn_accuracy", "probe_accuracy")


def chosen_layers(q: Sequence[float]) -> dict[str, int]:
    """Layers for the pair matrices: first, middle, last, and the one where Q rises most.

    Args:
        q: (L,) modularity per layer.

    Returns:
        ``{what: 0-based layer}`` for ``first``, ``middle``, ``last`` and ``largest rise`` (the
        layer i ≥ 1 maximising Q_i − Q_{i−1}; absent for one layer); the same layer may appear
        under several names.
    """
    n = len(q)
    if n == 0:
        return {}
    out = {"first": 0, "middle": (n - 1) // 2, "last": n - 1}
    if n > 1:
        out["largest rise"] = int(np.argmax(np.diff(np.asarray(q, dtype=float)))) + 1
    return out


def _probe_protocol(
    probe_train: tuple[torch.Tensor, torch.Tensor] | None, test_fraction: float, seed: int
) -> dict[str, Any]:
    """How the linear probe was trained and tested, for the record."""
    classifier = (
        "ridge (one-hot least squares + bias), L2 chosen by exact leave-one-out on the "
        "training samples over linear_probe.DEFAULT_L2_GRID"
    )
    if probe_train is None:
        return {
            "classifier": classifier,
            "split": "stratified",
            "train": f"{1 - test_fraction:g} of each class of each probe set (seeded split)",
            "test": f"the other {test_fraction:g} of each class",
            "seed": f"{seed} + repeat",
        }
    return {
        "classifier": classifier,
        "split": "given",
        "train": f"{len(probe_train[1])} training-split images (seeded subset)",
        "test": "every probe set, whole",
    }


def training_subset(datamodule: Any, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded subset of ``n`` images of the data module's training split (as training sees them).

    Args:
        datamodule: A set-up data module with ``train_set``.
        n: Images wanted (at most the split's size).
        seed: Seed of the permutation the subset is the head of.

    Returns:
        ``(images (n, C, H, W) in [0, 1], labels (n,))`` on the CPU.

    Raises:
        ValueError: No training split, or ``n`` < 2.
    """
    dataset = getattr(datamodule, "train_set", None)
    if dataset is None:
        raise ValueError(
            f"analysis.linear_probe_train=train_subset needs the data module's training split; "
            f"{type(datamodule).__name__} has none (use linear_probe_train=probe_split)"
        )
    if int(n) < 2:
        raise ValueError(f"analysis.linear_probe_train_n={n} must be >= 2")
    generator = torch.Generator().manual_seed(int(seed))
    order = torch.randperm(len(dataset), generator=generator)[: int(n)].tolist()
    items = [dataset[i] for i in order]
    images = torch.stack([torch.as_tensor(item[0]) for item in items]).float()
    labels = torch.as_tensor([int(item[1]) for item in items], dtype=torch.long)
    return images, labels


def _mean_over(diags: Sequence[LayerDiagnostics], field: str) -> np.ndarray | None:
    values = [getattr(d, field) for d in diags]
    if any(v is None for v in values):
        return None
    return np.mean([np.asarray(v, dtype=float) for v in values], axis=0)


def diagnostics_analysis(
    model: nn.Module,
    probes: Sequence[Any],
    settings: AnalysisSettings = AnalysisSettings(),
    *,
    which: Sequence[str] = DIAGNOSTICS,
    compute_m: bool = True,
    num_edges: int | None = None,
    probe_test_fraction: float = 0.5,
    probe_train: tuple[torch.Tensor, torch.Tensor] | None = None,
    purity_threshold: float = 0.8,
    apart_threshold: float = 0.5,
    top_pairs: int = 8,
    class_names: Sequence[str] | None = None,
    variant: str = "trained",
    title: str = "",
) -> AnalysisOutput:
    """Per-class and class-pair diagnostics, k-NN and linear-probe accuracy of every layer.

    Args:
        model: Takes images in [0, 1] (``Normalized`` zoo model or any adopted model).
        probes: R probe sets: ``ProbeSet`` objects or ``(images (N, C, H, W), labels (N,))``.
        settings: Graph, taps and batching; ``settings.seed`` seeds the linear probe's
            train/test split of repeat 0 (repeat r: + r) and is the ``seed`` column when a
            probe set carries none.
        which: Diagnostics (:data:`~dnn_modularity.layer_diagnostics.DIAGNOSTICS`).
        compute_m: Also compute paper 2's M on the top-|E| graph (for the correlations).
        num_edges: |E| of that graph (None: paper 2's density).
        probe_test_fraction: Share of each class of a probe set the linear probe is tested on.
        probe_train: Optional ``(images (M, C, H, W), labels (M,))`` to train the linear probe
            on instead (e.g. :func:`training_subset`); it is then tested on every probe set
            whole. Their features come from the same forward passes as the probe set's.
        purity_threshold: Level marked in the purity heatmap (first layer ≥ it per class).
        apart_threshold: Entanglement level at which a pair counts as apart.
        top_pairs: Pairs in the "when do they come apart" chart.
        class_names: Class names indexed by label value (None: the label values).
        variant: The ``variant`` column (``trained`` or ``random_init``).
        title: Figure title prefix.

    Returns:
        :class:`AnalysisOutput` named ``diagnostics``.

    Raises:
        ValueError: No probe sets, or bad diagnostics names.
    """
    chosen = check_diagnostics(list(which))
    if not probes:
        raise ValueError("diagnostics_analysis needs at least one probe set, got 0")
    k, metric, block_size, probe_seed = (
        settings.k,
        settings.metric,
        settings.block_size,
        settings.seed,
    )
    rows: list[dict[str, Any]] = []
    per_layer: list[list[LayerDiagnostics]] = []  # [layer][repeat]
    m_values: list[list[float]] = []
    names: list[str] = []
    indices: list[int] = []
    seconds: dict[str, float] = {"M": 0.0}
    started = time.perf_counter()
    edges = None
    for repeat, probe in enumerate(probes):
        images, labels, probe_set_seed = as_probe(probe)
        n = len(labels)
        edges = resolve_num_edges(n, num_edges, warn=compute_m) if compute_m else None
        base_seed = probe_set_seed if probe_set_seed is not None else probe_seed + repeat
        if probe_train is not None:  # one pass over both: rows [:n] probe set, [n:] training
            images = torch.cat([images, probe_train[0].to(images.dtype)])
        layers = layer_features(
            model,
            images,
            settings,
            what=f"diagnostics (N={n}, k={k}, repeat {repeat})",
        )
        for position, (point, both) in enumerate(layers):
            features = both[:n]
            train = None if probe_train is None else (both[n:], probe_train[1])
            diag = diagnose_layer(
                features,
                labels,
                chosen,
                k=k,
                metric=metric,
                block_size=block_size,
                probe_seed=probe_seed + repeat,
                probe_test_fraction=probe_test_fraction,
                probe_train=train,
            )
            for part, value in diag.seconds.items():
                seconds[part] = seconds.get(part, 0.0) + value
            if repeat == 0:
                names.append(str(point.name))
                indices.append(int(point.index))
                per_layer.append([])
                m_values.append([])
            per_layer[position].append(diag)
            base = {
                "analysis": "diagnostics",
                "variant": variant,
                "layer_index": int(point.index),
                "layer": str(point.name),
                **settings.record_fields(),
                "N": n,
                "seed": base_seed,
                "repeat": repeat,
            }
            rows += diagnostic_rows(diag, base, layer_index=point.index, class_names=class_names)
            if edges is not None:
                start = time.perf_counter()
                graph = top_edges_graph(features, edges.num_edges, metric, block_size)
                m = class_separation(graph, labels.to(graph.device)).m
                seconds["M"] += time.perf_counter() - start
                m_values[position].append(m)
                rows.append(
                    {
                        **base,
                        "measure": "M",
                        "key": f"M/layer_{point.index:02d}",
                        "value": m,
                        "num_edges": edges.num_edges,
                        "edge_density": edges.density,
                    }
                )
            del features, both, train
    seconds["total_layers"] = time.perf_counter() - started
    group = ("variant", "measure", "layer_index", "layer", "class", "class_b")
    summary = summarize_rows(rows, group_by=group)
    return _assemble(
        rows=rows,
        summary=summary,
        per_layer=per_layer,
        m_values=m_values,
        names=names,
        indices=indices,
        chosen=chosen,
        settings={
            "diagnostics": list(chosen),
            "k": k,
            "metric": metric,
            "taps": settings.taps if isinstance(settings.taps, str) else list(settings.taps),
            "N": len(as_probe(probes[0])[1]),
            "repeats": len(probes),
            "variant": variant,
            "compute_M": bool(compute_m),
            "num_edges": None if edges is None else edges.num_edges,
            "linear_probe": _probe_protocol(probe_train, probe_test_fraction, probe_seed),
            "purity_threshold": purity_threshold,
            "apart_threshold": apart_threshold,
            "top_pairs": top_pairs,
        },
        seconds=seconds,
        class_names=class_names,
        title=title,
    )


def _assemble(
    *,
    rows: list[dict[str, Any]],
    summary: list[dict[str, Any]],
    per_layer: list[list[LayerDiagnostics]],
    m_values: list[list[float]],
    names: list[str],
    indices: list[int],
    chosen: tuple[str, ...],
    settings: dict[str, Any],
    seconds: dict[str, float],
    class_names: Sequence[str] | None,
    title: str,
) -> AnalysisOutput:
    """Curves, correlations, per-layer notes and figures from the per-layer diagnostics."""
    classes = per_layer[0][0].classes.tolist()
    a, b = np.triu_indices(len(classes), k=1)
    class_labels = [pair_label(c, c, class_names).split("/")[0] for c in classes]
    curves: dict[str, tuple[list[float], list[float]]] = {}

    def curve(values: list[list[float | None]]) -> tuple[list[float], list[float]] | None:
        if not values or any(v is None for layer in values for v in layer) or not values[0]:
            return None
        arr = np.asarray(values, dtype=float)  # (L, R)
        std = arr.std(axis=1, ddof=1) if arr.shape[1] > 1 else np.zeros(arr.shape[0])
        return arr.mean(axis=1).tolist(), std.tolist()

    probe_acc = [[d.probe.accuracy if d.probe else None for d in layer] for layer in per_layer]
    for name, values in (
        ("modularity", [[d.modularity for d in layer] for layer in per_layer]),
        ("M", m_values),
        ("knn_accuracy", [[d.knn_accuracy for d in layer] for layer in per_layer]),
        ("probe_accuracy", probe_acc),
    ):
        got = curve(values)
        if got is not None:
            curves[name] = got
    rho = spearman_matrix({name: mean for name, (mean, _) in curves.items()})
    q_mean = curves["modularity"][0]
    figures: dict[str, Any] = {}
    notes: list[dict[str, Any]] = []
    meta_extra: dict[str, Any] = {}
    what = title or "diagnostics"

    purity = [_mean_over(layer, "purity") for layer in per_layer]
    if "purity" in chosen and all(p is not None for p in purity):
        matrix = np.stack(purity)  # (L, C)
        threshold = float(settings["purity_threshold"])
        first = first_crossing(torch.as_tensor(matrix), threshold).tolist()
        meta_extra["purity_first_layer"] = {
            str(label): (names[f] if f >= 0 else None)
            for label, f in zip(classes, first, strict=True)
        }
        figures["purity_heatmap"] = plot_class_layer_heatmap(
            matrix.T,
            layer_names=names,
            class_labels=class_labels,
            threshold=threshold,
            first=first,
            title=f"{what}: k-NN purity per class (▼ first layer ≥ {threshold:g})",
        )
    entangled = [_mean_over(layer, "entanglement") for layer in per_layer]
    if "pairs" in chosen and all(e is not None for e in entangled):
        stack = np.stack(entangled)  # (L, C, C)
        picks = chosen_layers(q_mean)
        by_layer: dict[int, list[str]] = {}
        for label, layer in picks.items():
            by_layer.setdefault(layer, []).append(label)
        figures["pair_matrices"] = plot_pair_matrices(
            [(f"{names[i]} ({', '.join(w)})", stack[i]) for i, w in sorted(by_layer.items())],
            class_labels=class_labels,
            title=f"{what}: class-pair entanglement",
        )
        meta_extra["pair_matrix_layers"] = {w: names[i] for w, i in picks.items()}
        last = stack[-1][a, b]
        order = np.argsort(-last, kind="stable")[: max(1, int(settings["top_pairs"]))]
        series = stack[:, a[order], b[order]].T  # (P, L)
        apart = float(settings["apart_threshold"])
        first = first_crossing(torch.as_tensor(series.T), apart, above=False).tolist()
        labels = [pair_label(classes[a[i]], classes[b[i]], class_names) for i in order]
        figures["pair_separation"] = plot_pair_separation(
            series,
            layer_names=names,
            pair_labels=labels,
            threshold=apart,
            first=first,
            title=f"{what}: when do the pairs most entangled at the last layer come apart",
        )
        meta_extra["last_layer_pairs"] = [
            {
                "pair": label,
                "entanglement_last": float(series[p, -1]),
                "apart_at": names[first[p]] if first[p] >= 0 else None,
            }
            for p, label in enumerate(labels)
        ]
    for position, name in enumerate(names):
        note: dict[str, Any] = {"layer_index": indices[position], "layer": name}
        for curve_name, (mean, _) in curves.items():
            note[curve_name] = mean[position]
        if entangled[position] is not None:
            e = entangled[position]
            top = np.argsort(-e[a, b], kind="stable")[:3]
            note["most_entangled"] = [
                [pair_label(classes[a[i]], classes[b[i]], class_names), float(e[a[i], b[i]])]
                for i in top
            ]
        notes.append(note)
    figures["separability_curves"] = plot_separability_curves(
        {name: (mean, std) for name, (mean, std) in curves.items()},
        layer_names=names,
        spearman=rho,
        title=f"{what}: Q, M, k-NN and linear-probe accuracy per layer",
    )
    metrics = {
        f"{name}/layer_{index:02d}": mean[i]
        for name, (mean, _) in curves.items()
        for i, index in enumerate(indices)
    }
    meta = {
        "settings": settings,
        "layers": names,
        "classes": classes,
        "class_names": list(class_names) if class_names is not None else None,
        "spearman": rho,
        "per_layer": notes,
        **meta_extra,
        "seconds": seconds,
    }
    return AnalysisOutput(
        "diagnostics", rows=rows, summary=summary, meta=meta, figures=figures, metrics=metrics
    )


def closing_lines(meta: dict[str, Any]) -> list[str]:
    """Log lines: per layer Q, the accuracies and its most entangled pairs; the correlations."""
    lines = []
    for note in meta.get("per_layer", []):
        parts = [f"Q {note['modularity']:.3f}"]
        if "knn_accuracy" in note:
            parts.append(f"kNN {note['knn_accuracy']:.1%}")
        if "probe_accuracy" in note:
            parts.append(f"probe {note['probe_accuracy']:.1%}")
        pairs = ", ".join(f"{p} {v:.2f}" for p, v in note.get("most_entangled", []))
        tail = f"; most entangled: {pairs}" if pairs else ""
        lines.append(f"  {note['layer']}: {', '.join(parts)}{tail}")
    rho = meta.get("spearman", {}).get("modularity", {})
    shown = ", ".join(f"{k} {v:+.2f}" for k, v in rho.items() if k != "modularity")
    if shown:
        lines.append(f"  Spearman ρ over layers of Q with: {shown}")
    return lines


def run(cfg: Any) -> dict[str, Any]:
    """Hydra-facing entry: ``python -m dnn_modularity.analyze analysis=diagnostics``.

    Args:
        cfg: The composed ``analyze`` config.

    Returns:
        The run summary of :func:`dnn_modularity.analysis.context.finish`.
    """
    # local: Hydra and Lightning (the config side) load only for run(cfg)
    from dnn_modularity.analysis.context import finish, load_context, probe_sets

    a = cfg.analysis
    which = check_diagnostics(list(a.which) if a.get("which") is not None else None)
    ctx = load_context(cfg)
    repeats = int(a.repeats)
    probes = probe_sets(ctx, repeats=repeats, disjoint=bool(cfg.probe.get("disjoint", True)))
    source = str(a.get("linear_probe_train", "probe_split"))
    if source not in PROBE_TRAIN_SOURCES:
        raise ValueError(
            f"analysis.linear_probe_train={source!r}; valid choices: {list(PROBE_TRAIN_SOURCES)}"
        )
    probe_train = None
    if source == "train_subset" and "linear_probe" in which:
        probe_train = training_subset(ctx.datamodule, int(a.linear_probe_train_n), int(cfg.seed))
    num_edges = cfg.graph.get("num_edges")
    output = diagnostics_analysis(
        ctx.model,
        probes,
        ctx.settings,
        which=which,
        compute_m=bool(a.compute_M),
        num_edges=None if num_edges is None else int(num_edges),
        probe_test_fraction=float(a.probe_test_fraction),
        probe_train=probe_train,
        purity_threshold=float(a.purity_threshold),
        apart_threshold=float(a.apart_threshold),
        top_pairs=int(a.top_pairs),
        class_names=ctx.class_names or class_names_of(ctx.datamodule),
        variant="trained" if cfg.get("ckpt_path") else "random_init",
        title=ctx.title(""),
    )
    output.meta["settings"]["strategy"] = str(cfg.probe.get("strategy", "balanced"))
    result = finish(ctx, output)
    log.info("diagnostics per layer:\n%s", "\n".join(closing_lines(output.meta)))
    return result
