"""Which classes separate where, for one layer: the per-class and accuracy diagnostics in one call.

Paper 1 gives one number per layer, Newman's Q of the k-NN graph of the probe features. From the
same graph (one k-NN pass, :func:`~dnn_modularity.graph.classes.knn_graph_with_neighbors`) this
module reads, on request, the finer quantities of :mod:`dnn_modularity.graph.classes`, and beside
them a linear probe of the same features (Alain & Bengio 2016, :mod:`dnn_modularity.linear_probe`):

=============  ====================================================================================
``purity``     per-class Q terms Q_c (summing to Q) and per-class k-NN purity (edge-weight share
               staying inside the class)
``pairs``      the C × C class-pair edge weights and the per-pair entanglement (1: as mixed as
               random labels, 0: no edge between the two classes)
``knn_acc``    leave-one-out k-NN accuracy (overall and per class) from the graph's own lists
``linear_probe``  ridge probe accuracy: trained on a seeded class-stratified part of the probe
               set and tested on the rest (``probe_test_fraction``), or trained on other given
               samples and tested on the whole probe set; the split is written in each row
=============  ====================================================================================

The first three reuse the graph the modularity is computed from, so they cost little beyond it;
the probe solves a ridge problem per layer. Both the ``diagnostics`` analysis and the training
monitor (``callbacks.modularity.diagnostics=[...]``) call :func:`diagnose_layer` and write
:func:`diagnostic_rows`, so their records agree.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from dnn_modularity.graph import Graph, modularity
from dnn_modularity.graph.classes import (
    class_modularity_terms,
    class_pair_weights,
    class_purity,
    knn_graph_with_neighbors,
    knn_predict,
    pair_entanglement,
)
from dnn_modularity.graph.validation import check_labels
from dnn_modularity.linear_probe import LinearProbeResult, linear_probe

__all__ = [
    "CHEAP_DIAGNOSTICS",
    "DIAGNOSTICS",
    "LayerDiagnostics",
    "check_diagnostics",
    "class_names_of",
    "diagnose_layer",
    "diagnostic_rows",
    "pair_label",
]

#: The diagnostics by name (the order of their columns and timings).
DIAGNOSTICS: tuple[str, ...] = ("purity", "pairs", "knn_acc", "linear_probe")
#: Those computed from the k-NN graph the modularity needs anyway.
CHEAP_DIAGNOSTICS: tuple[str, ...] = ("purity", "pairs", "knn_acc")


def check_diagnostics(names: Any) -> tuple[str, ...]:
    """Validate a selection of diagnostics.

    Args:
        names: None or ``[]`` (none), ``"all"``, one name, or a sequence of names from
            :data:`DIAGNOSTICS`.

    Returns:
        The selected names in :data:`DIAGNOSTICS` order, without repeats.

    Raises:
        ValueError: An unknown name (the message names it and the valid choices).
    """
    if names is None:
        return ()
    if isinstance(names, str):
        names = list(DIAGNOSTICS) if names == "all" else [names]
    chosen = [str(n) for n in names]
    bad = [n for n in chosen if n not in DIAGNOSTICS]
    if bad:
        raise ValueError(
            f"unknown diagnostics {bad}; valid choices: {list(DIAGNOSTICS)} (or 'all', or [])"
        )
    return tuple(n for n in DIAGNOSTICS if n in chosen)


def class_names_of(datamodule: Any) -> list[str] | None:
    """Class names indexed by label, when the data module (or its test dataset) has them.

    Read from ``datamodule.classes`` / ``class_names``, else from its test dataset's
    ``classes`` (torchvision's CIFAR-10/100 and ``ImageFolder`` keep them there).
    """
    for source in (datamodule, getattr(datamodule, "test_set", None)):
        names = getattr(source, "classes", None) or getattr(source, "class_names", None)
        if names and all(isinstance(n, str) for n in names):
            return list(names)
    return None


def pair_label(a: Any, b: Any, class_names: Sequence[str] | None = None) -> str:
    """``"3/8"`` (label values) or ``"cat/dog"`` (with class names indexed by label)."""

    def name(v: Any) -> str:
        if class_names is not None and isinstance(v, int) and 0 <= v < len(class_names):
            return str(class_names[v])
        return str(v)

    return f"{name(a)}/{name(b)}"


@dataclass
class LayerDiagnostics:
    """One layer's diagnostics (C classes, class c = the c-th smallest label value).

    Attributes:
        modularity: Newman Q of the k-NN graph (equal to ``knn_modularity`` of the features).
        classes: (C,) label values.
        counts: LongTensor (C,) samples per class.
        class_q: float64 (C,) per-class Q terms (``purity``), else None.
        purity: float64 (C,) per-class k-NN purity (``purity``), else None.
        pair_weight: float64 (C, C) class-pair edge weights (``pairs``), else None.
        entanglement: float64 (C, C) per-pair entanglement, NaN diagonal (``pairs``), else None.
        knn_accuracy: Leave-one-out k-NN accuracy (``knn_acc``), else None.
        class_knn_accuracy: float64 (C,) per-class k-NN accuracy (``knn_acc``), else None.
        probe: The linear probe (``linear_probe``), else None.
        seconds: Wall time per part: ``graph`` (the k-NN pass and Q) and one per diagnostic.
    """

    modularity: float
    classes: Tensor
    counts: Tensor
    class_q: Tensor | None = None
    purity: Tensor | None = None
    pair_weight: Tensor | None = None
    entanglement: Tensor | None = None
    knn_accuracy: float | None = None
    class_knn_accuracy: Tensor | None = None
    probe: LinearProbeResult | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def most_entangled_pairs(self, top: int = 3) -> list[tuple[Any, Any, float]]:
        """The ``top`` pairs of largest entanglement: ``(label a, label b, value)``, a < b."""
        if self.entanglement is None:
            return []
        c = int(self.classes.numel())
        a, b = torch.triu_indices(c, c, offset=1)
        values = self.entanglement.cpu()[a, b]
        order = torch.sort(values, descending=True, stable=True).indices[: max(0, top)]
        labels = self.classes.tolist()
        return [(labels[int(a[i])], labels[int(b[i])], float(values[i])) for i in order.tolist()]


def diagnose_layer(
    features: Tensor,
    labels: Tensor,
    which: Iterable[str] = DIAGNOSTICS,
    *,
    k: int = 3,
    metric: str = "cosine",
    block_size: int | None = None,
    probe_seed: int = 0,
    probe_test_fraction: float = 0.5,
    probe_train: tuple[Tensor, Tensor] | None = None,
) -> LayerDiagnostics:
    """Q and the selected diagnostics of one layer's probe features, from one k-NN pass.

    Args:
        features: (N, ...) features of the N probe samples (flattened to (N, D)), CPU or CUDA.
        labels: (N,) integer class labels.
        which: Names from :data:`DIAGNOSTICS` (checked by :func:`check_diagnostics`).
        k: Neighbours per node of the k-NN graph.
        metric: ``cosine`` or ``pearson``.
        block_size: Engine block size (None: its default).
        probe_seed: Seed of the linear probe's class-stratified train/test split.
        probe_test_fraction: Share of each class the probe is tested on.
        probe_train: Optional ``(features (M, ...), labels (M,))`` of other samples (e.g. a
            seeded subset of the training split) at the same layer: the probe is then trained
            on them and tested on all N probe samples (split ``"given"``), instead of the split.

    Returns:
        :class:`LayerDiagnostics` (CPU tensors).

    Raises:
        ValueError: Bad features, labels, k, metric or diagnostics names.
    """
    chosen = check_diagnostics(list(which))
    start = time.perf_counter()
    graph, neighbors = knn_graph_with_neighbors(features, k=k, metric=metric, block_size=block_size)
    labels = torch.as_tensor(labels).to(graph.device)
    q = modularity(graph, labels)  # the same graph and function as knn_modularity: the same Q
    codes, num_classes = check_labels(labels, graph.num_nodes, device=graph.device)
    out = LayerDiagnostics(
        modularity=q,
        classes=torch.unique(labels).cpu(),
        counts=torch.bincount(codes, minlength=num_classes).cpu(),
    )
    out.seconds["graph"] = time.perf_counter() - start
    if "purity" in chosen:
        start = time.perf_counter()
        out.class_q = class_modularity_terms(graph, labels).cpu()
        out.purity = class_purity(graph, labels).cpu()
        out.seconds["purity"] = time.perf_counter() - start
    if "pairs" in chosen:
        start = time.perf_counter()
        out.pair_weight = class_pair_weights(graph, labels).cpu()
        # the entanglement counts positive weight only (see dnn_modularity.graph.classes)
        out.entanglement = pair_entanglement(class_pair_weights(_positive(graph), labels)).cpu()
        out.seconds["pairs"] = time.perf_counter() - start
    if "knn_acc" in chosen:
        start = time.perf_counter()
        pred = knn_predict(neighbors, codes, num_classes)
        right = (pred == codes).double()
        per_class = torch.zeros(num_classes, dtype=torch.float64, device=codes.device)
        per_class.index_add_(0, codes, right)
        out.knn_accuracy = float(right.mean())
        out.class_knn_accuracy = (per_class / out.counts.to(codes.device)).cpu()
        out.seconds["knn_acc"] = time.perf_counter() - start
    if "linear_probe" in chosen:
        start = time.perf_counter()
        flat = features.reshape(features.shape[0], -1)
        if probe_train is None:
            out.probe = linear_probe(
                flat, labels, test_fraction=probe_test_fraction, seed=probe_seed
            )
        else:
            train_x, train_y = probe_train
            out.probe = linear_probe(train_x, train_y, flat, labels)
        out.seconds["linear_probe"] = time.perf_counter() - start
    return out


def _positive(graph: Graph) -> Graph:
    """The graph with negative edge weights set to 0 (itself when it has none)."""
    if bool((graph.weight >= 0).all()):
        return graph
    return Graph(graph.num_nodes, graph.src, graph.dst, graph.weight.clamp(min=0))


def diagnostic_rows(
    diag: LayerDiagnostics,
    base: Mapping[str, Any],
    *,
    layer_index: int,
    class_names: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Long-format rows of one layer's diagnostics: one value per row.

    ``measure`` names the quantity: ``modularity``, ``class_q``, ``purity``,
    ``class_knn_accuracy`` (one row per class, ``class`` = label value), ``knn_accuracy``,
    ``probe_accuracy`` (with the probe's split and penalty in ``probe_*`` columns),
    ``pair_weight`` (a ≤ b) and ``pair_entanglement`` (a < b; ``class``/``class_b``). ``key`` is
    ``measure/layer_07`` for per-layer values, ``measure/layer_07/<class>`` or
    ``measure/layer_07/<a>-<b>`` for per-class and per-pair ones.

    Args:
        diag: The layer's diagnostics.
        base: Columns every row carries first (analysis, variant, layer, tap, N, k, metric, ...).
        layer_index: 1-based layer index (for the key).
        class_names: Class names indexed by label value, for the ``class_name`` column.

    Returns:
        Row dicts.
    """
    prefix = f"layer_{int(layer_index):02d}"
    labels = diag.classes.tolist()
    rows: list[dict[str, Any]] = []

    def name_of(v: Any) -> str | None:
        if class_names is not None and isinstance(v, int) and 0 <= v < len(class_names):
            return str(class_names[v])
        return None

    def add(measure: str, value: Any, key_tail: str = "", **extra: Any) -> None:
        rows.append(
            {
                **base,
                "measure": measure,
                "key": f"{measure}/{prefix}{key_tail}",
                "value": float(value),
                **extra,
            }
        )

    add("modularity", diag.modularity)
    per_class = {
        "class_q": diag.class_q,
        "purity": diag.purity,
        "class_knn_accuracy": diag.class_knn_accuracy,
    }
    if diag.knn_accuracy is not None:
        add("knn_accuracy", diag.knn_accuracy)
    if diag.probe is not None:
        details = diag.probe.record()
        add("probe_accuracy", details.pop("probe_accuracy"), **details)
    for measure, values in per_class.items():
        if values is None:
            continue
        for c, label in enumerate(labels):
            add(
                measure,
                values[c],
                f"/{label}",
                **{"class": label, "class_name": name_of(label), "count": int(diag.counts[c])},
            )
    if diag.pair_weight is not None and diag.entanglement is not None:
        c_count = len(labels)
        for a in range(c_count):
            for b in range(a, c_count):
                cells = {"class": labels[a], "class_b": labels[b]}
                names = {"class_name": name_of(labels[a]), "class_b_name": name_of(labels[b])}
                tail = f"/{labels[a]}-{labels[b]}"
                add("pair_weight", diag.pair_weight[a, b], tail, **cells, **names)
                if a != b:
                    add("pair_entanglement", diag.entanglement[a, b], tail, **cells, **names)
    return rows
