"""Plumbing every analysis shares: per-layer features, k-NN modularity, statistics, records.

Nothing here re-implements the engine: graphs and modularity come from
:mod:`dnn_modularity.graph`, layer features from :func:`dnn_modularity.taps.iter_layer_features`
(one layer in memory at a time), files from :mod:`dnn_modularity.io` (atomic writes).

Record layout of an analysis run directory::

    <out_dir>/<name>.csv            tidy long table: one value per row
    <out_dir>/<name>_summary.csv    aggregated rows (mean, std, 95% interval ...) when any
    <out_dir>/<name>.json           meta data + summary (what was run, on what, how long)
    <out_dir>/figures/<fig>.png|pdf figures (and e.g. a GIF)

Tidy rows share the columns of :data:`ROW_COLUMNS` (missing ones are empty); ``metric`` is the
similarity (``cosine``/``pearson``, as in the training callback's ``modularity.csv``) and
``measure`` names the quantity in ``value`` (``modularity`` = paper 1's Newman Q of the k-NN
graph, ``M`` = paper 2's class-separation modularity, ...).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dnn_modularity.callbacks.modularity import layer_key
from dnn_modularity.io import atomic_save_figure, atomic_write_bytes, write_csv_rows, write_json

__all__ = [
    "ROW_COLUMNS",
    "AnalysisOutput",
    "LayerCurve",
    "interval95",
    "layer_key",
    "layer_modularity",
    "metric_key",
    "model_device",
    "random_init_like",
    "save_output",
    "shuffled_labels",
    "summarize_rows",
]

#: Leading columns of every tidy record (others follow in first-seen order).
ROW_COLUMNS: tuple[str, ...] = (
    "analysis",
    "variant",
    "layer_index",
    "layer",
    "tap",
    "N",
    "k",
    "metric",
    "seed",
    "repeat",
    "measure",
    "key",
    "value",
)


def metric_key(measure: str, index: int, prefix: str | None = None) -> str:
    """Metric key ``[prefix/]measure/layer_07`` (e.g. ``adv_pgd/modularity/layer_07``)."""
    key = f"{measure}/{layer_key(index)}"
    return f"{prefix}/{key}" if prefix else key


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter or buffer (CPU for a parameter-free module)."""
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto``/None -> CUDA when available, else CPU; anything else -> ``torch.device``."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def image_batches(images: Tensor, batch_size: int, device: torch.device) -> list[Tensor]:
    """Split ``images`` (n, C, H, W) into a re-iterable list of chunks on ``device``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [chunk.to(device, non_blocking=True) for chunk in images.split(batch_size)]


def shuffled_labels(labels: Tensor, seed: int) -> Tensor:
    """A seeded permutation of ``labels``: the null baseline.

    Class structure is destroyed and class sizes are kept, so modularity against these labels
    is ≈ 0 for any graph.
    """
    generator = torch.Generator().manual_seed(int(seed))
    return labels[torch.randperm(len(labels), generator=generator).to(labels.device)]


def random_init_like(model: nn.Module, seed: int) -> nn.Module:
    """The same architecture at random initialisation (paper 1, Fig. B12).

    The network is rebuilt from ``arch_config()`` (so it gets the constructor's own
    initialisation, exactly like a model before training) under ``seed``; a
    :class:`~dnn_modularity.models.Normalized` wrapper is kept with the same mean/std. The
    global RNG state is left untouched.

    Args:
        model: A zoo model or a ``Normalized`` wrapper around one.
        seed: Seed of the initialisation.

    Returns:
        A new module on the same device, in eval mode.
    """
    from dnn_modularity.models import Normalized, build_model

    inner = model.net if isinstance(model, Normalized) else model
    config = dict(inner.arch_config())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        fresh = build_model(**config)
    if isinstance(model, Normalized):
        fresh = Normalized(fresh, model.mean.flatten().tolist(), model.std.flatten().tolist())
    return fresh.to(model_device(model)).eval()


def interval95(values: Sequence[float]) -> tuple[float, float, float, float]:
    """Mean, sample std and the two-sided 95% t-interval of the mean.

    Args:
        values: Repeated measurements (NaNs ignored).

    Returns:
        ``(mean, std, low, high)``; with one value std is 0 and the interval collapses to it.
    """
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if x.size == 0:
        return (math.nan,) * 4
    mean = float(x.mean())
    if x.size == 1:
        return mean, 0.0, mean, mean
    from scipy import stats

    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.975, df=x.size - 1)) * std / math.sqrt(x.size)
    return mean, std, mean - half, mean + half


@dataclass
class LayerCurve:
    """Per-layer values of one pass over a model's taps.

    Attributes:
        indices: 1-based layer indices.
        names: Layer (module) names.
        values: Label-set name -> per-layer values (same order as ``names``).
        seconds: Time spent.
    """

    indices: list[int] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0


def layer_features(
    model: nn.Module,
    images: Tensor,
    *,
    taps: Any = "block",
    batch_size: int = 256,
    dtype: torch.dtype | None = None,
    what: str | None = None,
    quiet: bool = True,
) -> Iterator[tuple[Any, Tensor]]:
    """``(TapPoint, features (n, D))`` per layer, one layer in memory at a time.

    The pass reports its progress to the log (:class:`dnn_modularity.progress.Progress`, one
    unit per layer, including the caller's work on each layer's features).

    Args:
        model: Takes images in [0, 1] (``Normalized``); put in eval mode here.
        images: ``(n, C, H, W)`` images in [0, 1].
        taps: Tap selection understood by :func:`dnn_modularity.taps.resolve_taps`.
        batch_size: Images per forward pass.
        dtype: Optional feature dtype (e.g. ``torch.float16`` to halve memory).
        what: Name of the pass in the progress lines (default ``layer pass (N=n)``).
        quiet: Log only a pass that outlasts the progress interval (True) or always start,
            progress and end lines (False).
    """
    from dnn_modularity.progress import track
    from dnn_modularity.taps import iter_layer_features, resolve_taps

    model.eval()
    batches = image_batches(images, batch_size, model_device(model))
    yield from track(
        iter_layer_features(model, batches, taps=taps, dtype=dtype),
        what or f"layer pass (N={len(images)})",
        total=len(resolve_taps(model, taps)),
        unit="layers",
        quiet=quiet,
    )


def layer_modularity(
    model: nn.Module,
    images: Tensor,
    label_sets: Mapping[str, Tensor],
    *,
    taps: Any = "block",
    k: int = 3,
    metric: str = "cosine",
    batch_size: int = 256,
    block_size: int | None = None,
    dtype: torch.dtype | None = None,
    what: str | None = None,
) -> LayerCurve:
    """Paper 1's modularity curve (Sec. 3.2, Eqs. 1 and 3).

    Per layer: the k-NN graph of the flattened features and its Newman modularity for each set
    of labels. One graph per layer serves every label set (e.g. true and shuffled labels).

    Args:
        model: Takes images in [0, 1].
        images: ``(N, C, H, W)`` probe images.
        label_sets: Name -> ``(N,)`` labels (communities).
        taps: Tap selection.
        k: Neighbours per node.
        metric: ``cosine`` or ``pearson``.
        batch_size: Images per forward pass.
        block_size: Row block of the engine's blockwise similarity (None: engine default).
        dtype: Optional feature dtype.
        what: Name of the pass in progress lines (logged only when it outlasts the interval).

    Returns:
        The :class:`LayerCurve`.
    """
    from dnn_modularity.graph import knn_graph, modularity

    for name, labels in label_sets.items():
        if len(labels) != len(images):
            raise ValueError(
                f"label set {name!r} has {len(labels)} labels for {len(images)} images"
            )
    start = time.perf_counter()
    curve = LayerCurve(values={name: [] for name in label_sets})
    for point, features in layer_features(
        model,
        images,
        taps=taps,
        batch_size=batch_size,
        dtype=dtype,
        what=what or f"modularity curve (N={len(images)}, k={k})",
    ):
        graph = knn_graph(features, k=k, metric=metric, block_size=block_size)
        curve.indices.append(int(point.index))
        curve.names.append(str(point.name))
        for name, labels in label_sets.items():
            curve.values[name].append(float(modularity(graph, labels.cpu())))
        del features, graph
    curve.seconds = time.perf_counter() - start
    return curve


def summarize_rows(
    rows: Sequence[Mapping[str, Any]],
    group_by: Sequence[str] = ("variant", "measure", "layer_index", "layer"),
) -> list[dict[str, Any]]:
    """Aggregate tidy rows over repeats: mean, std, 95% interval and count per group.

    Args:
        rows: Tidy rows with a numeric ``value``.
        group_by: Columns that identify a group (other columns must be constant within it to
            be kept; columns that vary, like ``repeat`` and ``seed``, are dropped).

    Returns:
        One row per group (first-seen order) with ``mean``, ``std``, ``ci95_low``,
        ``ci95_high`` and ``n``.
    """
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(c) for c in group_by), []).append(row)
    out = []
    for members in groups.values():
        first = members[0]
        kept = {
            c: first[c]
            for c in first
            if c not in ("value", "repeat", "seed") and all(m.get(c) == first[c] for m in members)
        }
        mean, std, low, high = interval95([float(m["value"]) for m in members])
        out.append(
            {
                **kept,
                "mean": mean,
                "std": std,
                "ci95_low": low,
                "ci95_high": high,
                "n": len(members),
            }
        )
    return out


@dataclass
class AnalysisOutput:
    """Everything one analysis produced, before it is written.

    Attributes:
        name: Analysis name (file stem of its records).
        rows: Tidy long table.
        summary: Aggregated table (may be empty).
        meta: JSON-ready description of the run (settings, timings, extra results).
        figures: Name -> matplotlib figure.
        files: Extra files: relative path -> bytes (e.g. ``figures/ring.gif``).
        metrics: Flat metric keys -> value, for experiment loggers.
        tables: Name -> rows to log as logger tables (default: rows and summary).
    """

    name: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def _ordered_columns(rows: Sequence[Mapping[str, Any]], *, all_lead: bool = False) -> list[str]:
    """Header: :data:`ROW_COLUMNS` first (all of them, empty where absent, when ``all_lead``)."""
    present: list[str] = []
    for row in rows:
        for key in row:
            if key not in present:
                present.append(key)
    lead = [c for c in ROW_COLUMNS if all_lead or c in present]
    return lead + [c for c in present if c not in lead]


def save_output(
    output: AnalysisOutput,
    out_dir: str | Path,
    *,
    dpi: int | None = None,
    started: float | None = None,
) -> dict[str, Any]:
    """Write an :class:`AnalysisOutput` atomically and close its figures.

    The JSON record is written last, after the figures, so that with ``started`` its
    ``total_seconds`` covers the figure writing too.

    Args:
        output: What to write.
        out_dir: Run directory.
        dpi: PNG resolution (default: the figures' own, :data:`plots_analysis.DPI`).
        started: ``time.perf_counter()`` at the start of the command: sets
            ``meta["total_seconds"]`` just before the JSON record is written.

    Returns:
        ``{"records": [paths], "figures": {name: [png, pdf]}, "files": [paths]}``.
    """
    import matplotlib.pyplot as plt

    from dnn_modularity.plots_analysis import DPI
    from dnn_modularity.progress import Progress

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = []
    if output.rows:
        records.append(
            write_csv_rows(
                out_dir / f"{output.name}.csv",
                output.rows,
                _ordered_columns(output.rows, all_lead=True),
            )
        )
    if output.summary:
        records.append(
            write_csv_rows(
                out_dir / f"{output.name}_summary.csv",
                output.summary,
                _ordered_columns(output.summary),
            )
        )
    figures = {}
    with Progress(
        f"{output.name}: writing figures",
        len(output.figures),
        unit="figures",
        enabled=bool(output.figures),
    ) as progress:
        for name, fig in output.figures.items():
            figures[name] = atomic_save_figure(fig, out_dir / "figures" / name, dpi=dpi or DPI)
            plt.close(fig)
            progress.advance()
    files = [atomic_write_bytes(out_dir / rel, data) for rel, data in output.files.items()]
    if started is not None:
        output.meta["total_seconds"] = time.perf_counter() - started
    records.append(
        write_json(
            out_dir / f"{output.name}.json",
            {"analysis": output.name, **output.meta, "metrics": output.metrics},
        )
    )
    return {"records": records, "figures": figures, "files": files}
