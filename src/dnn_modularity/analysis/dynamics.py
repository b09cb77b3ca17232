"""Modularity of each layer during training, beside test accuracy (paper 1 Sec. 4.3, Fig. 6b).

Paper 1 saves the model and its test accuracy at each of the first 30 epochs and draws every
layer's modularity against the epoch: shallow layers stay nearly flat, deep layers follow the
accuracy. Two sources:

* ``history`` — the training run's own records: ``modularity.csv`` written by
  :class:`dnn_modularity.callbacks.ModularityMonitor` (columns ``epoch, layer_index, layer, tap,
  N, k, metric, modularity, M, seed``) and ``metrics.csv`` (accuracy per epoch). Free: no model
  is run again.
* ``checkpoints`` — per-epoch checkpoints (``ModelCheckpoint(save_top_k=-1)``): each is loaded,
  its curve computed on one fixed probe set and its accuracy on the full test split.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dnn_modularity.analysis.common import (
    AnalysisOutput,
    layer_modularity,
    metric_key,
    model_device,
)
from dnn_modularity.io import read_csv_rows
from dnn_modularity.plots_analysis import plot_dynamics
from dnn_modularity.progress import track

__all__ = [
    "ACCURACY_KEYS",
    "accuracy_by_epoch",
    "checkpoint_epoch",
    "dynamics_from_checkpoints",
    "dynamics_from_history",
    "evaluate_accuracy",
    "run",
]

#: Accuracy columns looked for in ``metrics.csv``, in order of preference.
ACCURACY_KEYS = ("test/acc", "val/acc", "test_acc", "val_acc", "test/accuracy", "val/accuracy")


def _float(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def accuracy_by_epoch(
    metrics_csv: str | Path, accuracy_key: str | None = None
) -> tuple[str, dict[int, float]]:
    """Per-epoch accuracy from a Lightning-style ``metrics.csv`` (one row per logging step).

    Args:
        metrics_csv: The file.
        accuracy_key: Column to read; default: the first of :data:`ACCURACY_KEYS` logged at two
            or more epochs (a training run logs ``test/acc`` once, after the last epoch, and
            ``val/acc`` every epoch), else the first present.

    Returns:
        ``(column, {epochs completed: last logged value})`` — the convention of
        ``modularity.csv`` (0 = the initialisation). Lightning logs ``val/*`` and ``train/*`` with
        the 0-based index of the epoch they ran in (the accuracy after 1 epoch has ``epoch = 0``),
        so those are shifted by one; ``test/*`` after ``fit`` is logged with ``epoch`` = the
        number of epochs done and is kept as is.

    Raises:
        ValueError: No accuracy column (message lists the columns found).
    """
    rows = read_csv_rows(metrics_csv)
    columns = list(rows[0]) if rows else []

    def per_epoch(key: str) -> dict[int, float]:
        shift = 1 if key.startswith(("val", "train")) else 0
        out: dict[int, float] = {}
        for row in rows:
            value, epoch = _float(row.get(key)), _float(row.get("epoch"))
            if math.isfinite(value) and math.isfinite(epoch):
                out[int(epoch) + shift] = value
        return out

    if accuracy_key is None:
        present = [c for c in ACCURACY_KEYS if c in columns]
        key = next((c for c in present if len(per_epoch(c)) >= 2), present[0] if present else None)
    else:
        key = accuracy_key
    if key is None or key not in columns:
        raise ValueError(
            f"no accuracy column {accuracy_key or list(ACCURACY_KEYS)} in {metrics_csv}; "
            f"columns: {columns}"
        )
    return key, per_epoch(key)


def _build_output(
    rows: list[dict[str, Any]],
    accuracy: Mapping[int, float],
    *,
    measure: str,
    source: str,
    title: str,
    extra_meta: Mapping[str, Any],
    accuracy_key: str = "test/acc",
) -> AnalysisOutput:
    epochs = sorted({int(r["epoch"]) for r in rows})
    layers: dict[int, str] = {}
    table: dict[tuple[int, int], list[float]] = {}
    for r in rows:
        layers[int(r["layer_index"])] = str(r["layer"])
        table.setdefault((int(r["epoch"]), int(r["layer_index"])), []).append(float(r["value"]))
    per_layer = {
        f"{i}: {layers[i]}": [
            sum(table[(e, i)]) / len(table[(e, i)]) if (e, i) in table else math.nan for e in epochs
        ]
        for i in sorted(layers)
    }
    acc_epochs = sorted(accuracy)
    fig = plot_dynamics(
        epochs,
        per_layer,
        [accuracy[e] for e in acc_epochs] if accuracy else None,
        accuracy_epochs=acc_epochs,
        accuracy_label=accuracy_key,
        title=title,
        ylabel="modularity Q" if measure == "modularity" else measure,
    )
    acc_rows = [
        {
            "analysis": "dynamics",
            "variant": "trained",
            "epoch": e,
            "measure": "accuracy",
            "key": accuracy_key,
            "value": accuracy[e],
        }
        for e in acc_epochs
    ]
    last = epochs[-1] if epochs else None
    metrics = (
        {
            metric_key(measure, i, None): per_layer[name][-1]
            for i, name in zip(sorted(layers), per_layer, strict=True)
        }
        if last is not None
        else {}
    )
    meta = {
        "source": source,
        "measure": measure,
        "epochs": epochs,
        "layers": [layers[i] for i in sorted(layers)],
        **extra_meta,
    }
    return AnalysisOutput(
        "dynamics", rows=rows + acc_rows, meta=meta, figures={"dynamics": fig}, metrics=metrics
    )


def dynamics_from_history(
    modularity_csv: str | Path,
    metrics_csv: str | Path | None = None,
    *,
    measure: str = "modularity",
    accuracy_key: str | None = None,
    title: str = "",
) -> AnalysisOutput:
    """Fig. 6b from a training run's ``modularity.csv`` (+ ``metrics.csv`` for accuracy).

    Args:
        modularity_csv: The callback's per-epoch, per-layer record.
        metrics_csv: Lightning ``metrics.csv`` of the same run (None: no accuracy line).
        measure: Column to draw: ``modularity`` (paper 1 Q) or ``M`` (paper 2).
        accuracy_key: Accuracy column of ``metrics_csv`` (default: see :data:`ACCURACY_KEYS`).
        title: Figure title.

    Returns:
        :class:`AnalysisOutput` named ``dynamics`` (rows per epoch and layer, averaged over
        repeats/seeds in the figure; accuracy rows with ``measure=accuracy``).

    Raises:
        ValueError: Missing file/column, or no values in the chosen column.
    """
    source = read_csv_rows(modularity_csv)
    if not source:
        raise ValueError(f"no rows in {modularity_csv} (missing or empty file)")
    if measure not in source[0]:
        raise ValueError(f"column {measure!r} not in {modularity_csv}; columns: {list(source[0])}")
    rows = []
    for r in source:
        value = _float(r[measure])
        if not math.isfinite(value):
            continue
        index = int(r["layer_index"])
        rows.append(
            {
                "analysis": "dynamics",
                "variant": "trained",
                "epoch": int(_float(r["epoch"])),
                "layer_index": index,
                "layer": r.get("layer", ""),
                "tap": r.get("tap", ""),
                "N": r.get("N", ""),
                "k": r.get("k", ""),
                "metric": r.get("metric", ""),
                "seed": r.get("seed", ""),
                "repeat": r.get("repeat", ""),
                "measure": measure,
                "key": metric_key(measure, index),
                "value": value,
            }
        )
    if not rows:
        raise ValueError(f"column {measure!r} of {modularity_csv} holds no finite values")
    accuracy: dict[int, float] = {}
    acc_key = None
    if metrics_csv is not None and Path(metrics_csv).exists():
        acc_key, accuracy = accuracy_by_epoch(metrics_csv, accuracy_key)
    return _build_output(
        rows,
        accuracy,
        measure=measure,
        source="history",
        title=title,
        accuracy_key=acc_key or "test/acc",
        extra_meta={
            "modularity_csv": str(modularity_csv),
            "metrics_csv": str(metrics_csv),
            "accuracy_key": acc_key,
        },
    )


@torch.no_grad()
def evaluate_accuracy(
    model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 512
) -> float:
    """Top-1 accuracy of ``model`` on ``images`` (n, C, H, W) in [0, 1] with ``labels`` (n,)."""
    model.eval()
    device = model_device(model)
    correct = 0
    for x, y in zip(images.split(batch_size), labels.split(batch_size), strict=True):
        correct += int((model(x.to(device)).argmax(1).cpu() == y.cpu()).sum())
    return correct / max(1, len(labels))


_EPOCH_RE = re.compile(r"epoch([=_-]?)(\d+)")


def _epoch_from_name(name: str) -> int | None:
    """Epochs completed from a checkpoint file name, or None when it names no epoch.

    ``epoch_007`` (:class:`~dnn_modularity.callbacks.EpochCheckpoint`'s ``{epochs_done}``) is
    already in epochs completed; ``epoch=7`` is Lightning's own ``{epoch}`` field, the 0-based
    index of the epoch that just finished, i.e. 8 epochs completed.
    """
    match = _EPOCH_RE.search(name)
    if match is None:
        return None
    value = int(match.group(2))
    return value + 1 if match.group(1) == "=" else value


def checkpoint_epoch(path: str | Path) -> int:
    """Epochs completed by a checkpoint's weights (``modularity.csv``'s convention: 0 = init).

    From its name (``epoch_007`` = 7, Lightning's ``epoch=7`` = 8, see :func:`_epoch_from_name`),
    else from the file: the fit loop's processed-epoch count, else Lightning's 0-based ``epoch``
    entry + 1 (ModelCheckpoint saves at the end of that epoch).
    """
    from_name = _epoch_from_name(Path(path).name)
    if from_name is not None:
        return from_name
    from dnn_modularity.checkpoints import checkpoint_epochs_done, load_checkpoint

    # weights_only=True: a shared checkpoint must not run code when we read its epoch.
    epochs = checkpoint_epochs_done(load_checkpoint(path, need_model=False))
    if epochs is None:
        raise ValueError(f"cannot tell the epoch of checkpoint {path}: no 'epoch' in name or file")
    return epochs


def dynamics_from_checkpoints(
    checkpoints: Sequence[tuple[int, nn.Module]],
    images: Tensor,
    labels: Tensor,
    *,
    test_images: Tensor | None = None,
    test_labels: Tensor | None = None,
    k: int = 3,
    metric: str = "cosine",
    taps: Any = "block",
    seed: int = 0,
    batch_size: int = 256,
    block_size: int | None = None,
    dtype: torch.dtype | None = None,
    title: str = "",
) -> AnalysisOutput:
    """Fig. 6b from per-epoch models: each one's curve on one probe set and its accuracy.

    Args:
        checkpoints: ``(epoch, model)`` pairs; models take images in [0, 1].
        images: ``(N, C, H, W)`` probe images (the same for every epoch).
        labels: ``(N,)`` probe labels.
        test_images: Images for the accuracy line (None: no accuracy).
        test_labels: Their labels.
        k: Neighbours per node.
        metric: ``cosine`` or ``pearson``.
        taps: Tap selection.
        seed: ``seed`` column (the probe seed).
        batch_size: Images per forward pass.
        block_size: Engine block size.
        dtype: Optional feature dtype.
        title: Figure title.

    Returns:
        :class:`AnalysisOutput` named ``dynamics``.

    Raises:
        ValueError: No checkpoints.
    """
    if not checkpoints:
        raise ValueError("dynamics_from_checkpoints needs at least one (epoch, model) pair")
    rows: list[dict[str, Any]] = []
    accuracy: dict[int, float] = {}
    tap_name = taps if isinstance(taps, str) else "custom"
    ordered = sorted(checkpoints, key=lambda pair: pair[0])
    for epoch, model in track(ordered, "dynamics: curves of the checkpoints", unit="checkpoints"):
        curve = layer_modularity(
            model,
            images,
            {"trained": labels.long()},
            k=k,
            metric=metric,
            taps=taps,
            batch_size=batch_size,
            block_size=block_size,
            dtype=dtype,
        )
        for index, name, value in zip(
            curve.indices, curve.names, curve.values["trained"], strict=True
        ):
            rows.append(
                {
                    "analysis": "dynamics",
                    "variant": "trained",
                    "epoch": int(epoch),
                    "layer_index": index,
                    "layer": name,
                    "tap": tap_name,
                    "N": len(labels),
                    "k": k,
                    "metric": metric,
                    "seed": seed,
                    "measure": "modularity",
                    "key": metric_key("modularity", index),
                    "value": value,
                }
            )
        if test_images is not None and test_labels is not None:
            accuracy[int(epoch)] = evaluate_accuracy(model, test_images, test_labels)
    return _build_output(
        rows,
        accuracy,
        measure="modularity",
        source="checkpoints",
        title=title,
        extra_meta={"n_checkpoints": len(checkpoints)},
    )


def run(cfg: Any) -> dict[str, Any]:
    """Hydra-facing entry: ``python -m dnn_modularity.analyze analysis=dynamics run_dir=...``.

    ``analysis.source=history`` reads ``<run_dir>/modularity.csv`` and ``metrics.csv``;
    ``analysis.source=checkpoints`` loads every ``<run_dir>/checkpoints/*.ckpt`` with an epoch.
    """
    from dnn_modularity.analysis.context import finish, load_context, load_model, probe_sets

    a = cfg.analysis
    run_dir = Path(str(a.run_dir)) if a.get("run_dir") else None
    if run_dir is None and cfg.get("ckpt_path"):
        run_dir = Path(str(cfg.ckpt_path)).parent.parent  # <run>/checkpoints/x.ckpt
    if run_dir is None or not run_dir.is_dir():
        raise ValueError(
            f"analysis=dynamics needs analysis.run_dir=<training run folder> (or ckpt_path inside "
            f"its checkpoints/); got run_dir={a.get('run_dir')!r} "
            f"ckpt_path={cfg.get('ckpt_path')!r}"
        )
    source = str(a.source)
    if source == "history":
        ctx = load_context(cfg, need_model=False)
        output = dynamics_from_history(
            run_dir / "modularity.csv",
            run_dir / "metrics.csv",
            measure=str(a.measure),
            accuracy_key=a.get("accuracy_key"),
            title=ctx.title("training dynamics", Path(run_dir).name),
        )
        return finish(ctx, output)
    if source != "checkpoints":
        raise ValueError(f"analysis.source={source!r}; valid choices: ['history', 'checkpoints']")
    paths = sorted((run_dir / "checkpoints").rglob("*.ckpt"))
    # Only files named by epoch (epoch_003.ckpt = after 3 epochs, epoch_000 = initialisation;
    # Lightning's epoch=2-step=...ckpt = after 3 epochs):
    # best/last checkpoints duplicate one of them under another numbering.
    epochs: dict[int, Path] = {}
    for path in paths:
        epoch = _epoch_from_name(path.name)
        if epoch is not None:
            epochs.setdefault(epoch, path)
    if not epochs:
        raise ValueError(
            f"no per-epoch checkpoints (epoch_<n>.ckpt) under {run_dir / 'checkpoints'}: "
            f"{[p.name for p in paths]}; train with callbacks.epoch_checkpoints.every_n_epochs=1 "
            "or use analysis.source=history"
        )
    ctx = load_context(cfg, need_model=False)
    (probe,) = probe_sets(ctx, repeats=1)
    test = probe_sets(ctx, repeats=1, n=len(ctx.datamodule.test_labels()), strategy="sequential")[0]
    models = [(e, load_model(str(p), ctx.device)) for e, p in sorted(epochs.items())]
    output = dynamics_from_checkpoints(
        models,
        probe.images,
        probe.labels,
        test_images=test.images,
        test_labels=test.labels,
        k=int(cfg.graph.k),
        metric=str(cfg.graph.metric),
        taps=ctx.taps,
        seed=int(cfg.probe.seed),
        batch_size=int(cfg.batch_size),
        block_size=ctx.block_size,
        dtype=ctx.feature_dtype,
        title=ctx.title("training dynamics", Path(run_dir).name),
    )
    return finish(ctx, output)
