"""The training monitor's measurement: the probe forward pass and each layer's Q (and M).

:class:`ProbeMeasurement` is a part of
:class:`~dnn_modularity.callbacks.modularity.ModularityMonitor` (it reads the monitor's settings
attributes): how layer features are read (:data:`FEATURE_MODES`) and the per-layer values of
one probe set, gathered over DDP ranks by the torchmetrics wrappers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import lightning.pytorch as L
import torch
from torch import Tensor, nn

from dnn_modularity.metrics import ClassSeparationModularity, KNNModularity
from dnn_modularity.models.unwrap import eval_mode
from dnn_modularity.progress import track
from dnn_modularity.taps import LayerTaps, feature_dims, iter_layer_features, resolve_taps

__all__ = ["FEATURE_MODES", "ProbeMeasurement"]


#: How features are collected:
#: - "per_layer": one layer's (N, D_l) features in memory at a time (`iter_layer_features`, which
#:   stops each pass after the tapped module: ~L/2 full forward passes for L layers);
#: - "all_layers": one forward pass holding every layer's features (`LayerTaps`);
#: - "auto": consecutive layers grouped so that each group's features fit in `feature_memory_mb`
#:   (a layer larger than the budget forms its own group), one forward pass per group; falls back
#:   to "per_layer" when that would need more passes. Memory is bounded by
#:   max(budget, one layer); small models on CIFAR-size probes need a single pass.
FEATURE_MODES = ("auto", "per_layer", "all_layers")


class _Batches:
    """Re-iterable batches of a (shard of a) probe set, moved to `device` on the fly."""

    def __init__(self, images: Tensor, batch_size: int, device: torch.device) -> None:
        self.images, self.batch_size, self.device = images, batch_size, device

    def __iter__(self) -> Iterator[Tensor]:
        for start in range(0, self.images.shape[0], self.batch_size):
            yield self.images[start : start + self.batch_size].to(self.device, non_blocking=True)

    def __len__(self) -> int:
        return math.ceil(self.images.shape[0] / self.batch_size)


class ProbeMeasurement:
    """Probe forward passes and per-layer k-NN Q / M (a part of ``ModularityMonitor``)."""

    def _metrics(
        self, device: torch.device
    ) -> tuple[KNNModularity, ClassSeparationModularity | None]:
        if self._knn is None:
            self._knn = KNNModularity(k=self.k, metric=self.metric)
            if self.compute_M:
                self._sep = ClassSeparationModularity(num_edges=self.num_edges, metric=self.metric)
        self._knn = self._knn.to(device)
        if self._sep is not None:
            self._sep = self._sep.to(device)
        return self._knn, self._sep

    def _plan(self, model: nn.Module, images: Tensor) -> None:
        """Choose how to read features: `self._groups` = layer groups, or None for per_layer."""
        if self.feature_mode == "per_layer":
            self._groups, self.resolved_mode = None, "per_layer"
            return
        dims = list(feature_dims(model, tuple(images.shape[1:]), self.taps).values())
        if self.feature_mode == "all_layers":
            self._groups = [list(range(1, len(dims) + 1))]
            self.resolved_mode = "all_layers"
            return
        dtype = self.feature_dtype or next(model.parameters()).dtype
        itemsize = torch.empty((), dtype=dtype).element_size()
        budget = self.feature_memory_mb * 2**20
        groups: list[list[int]] = []
        used = 0.0
        for index, dim in enumerate(dims, start=1):
            size = images.shape[0] * dim * itemsize
            if groups and used + size <= budget:
                groups[-1].append(index)
                used += size
            else:
                groups.append([index])
                used = size
        if len(groups) > math.ceil(len(dims) / 2):
            # iter_layer_features' early-stopped passes cost ~L/2 full passes: cheaper here.
            self._groups, self.resolved_mode = None, "per_layer"
        else:
            self._groups = groups
            self.resolved_mode = "all_layers" if len(groups) == 1 else f"{len(groups)}_groups"

    def _layer_features(
        self, model: nn.Module, batches: _Batches
    ) -> Iterator[tuple[int, str, Tensor]]:
        """(1-based index, name, (n_local, D) features) per tap, in tap order."""
        if self._groups is None:
            for point, feats in iter_layer_features(
                model, batches, self.taps, dtype=self.feature_dtype
            ):
                yield point.index, point.name, feats
            return
        for group in self._groups:
            with LayerTaps(model, self.taps, layers=group, dtype=self.feature_dtype) as taps:
                for batch in batches:
                    model(batch)
            features = taps.features
            taps.clear()
            for point in taps.points:
                yield point.index, point.name, features.pop(point.name)
            del features

    def measure(
        self, pl_module: L.LightningModule, rank: int = 0, world_size: int = 1
    ) -> list[dict[str, Any]]:
        """Compute one row per (repeat, layer) for the module's current weights.

        Works outside a Trainer too (e.g. on a loaded checkpoint, after `setup_probes`). Runs in
        eval mode under `inference_mode` and restores the previous train/eval mode.

        Args:
            pl_module: The classifier (its `.model` is forwarded; else the module itself).
            rank: This process's rank (its shard of the probe set is `rank::world_size`).
            world_size: Number of processes taking part (all must call this together).

        Returns:
            Rows without `epoch` (the caller adds it).
        """
        if not self.probes:
            raise RuntimeError("ModularityMonitor.measure: no probe set; call setup_probes(dm)")
        model = getattr(pl_module, "model", pl_module)
        device = next(pl_module.parameters()).device
        knn, sep = self._metrics(device)
        rows: list[dict[str, Any]] = []
        # eval_mode restores every submodule's own flag (a frozen BN may be in eval on purpose).
        # inference_mode: no autograd bookkeeping at all (no_grad still tracks versions, views)
        with eval_mode(model), torch.inference_mode():
            if self.resolved_mode is None:
                self._plan(model, self.probes[0].images)
            num_layers = len(resolve_taps(model, self.taps))
            for repeat, probe in enumerate(self.probes):
                positions = torch.arange(len(probe))[rank::world_size]
                labels = probe.labels[positions].to(device)
                index = positions.to(device)
                batches = _Batches(probe.images[positions], self.batch_size, device)
                # Silent unless a measurement outlasts the progress interval (a big N).
                layers = track(
                    self._layer_features(model, batches),
                    f"modularity measurement (N={len(probe)}, repeat {repeat})",
                    total=num_layers,
                    unit="layers",
                    quiet=True,
                    enabled=rank == 0,
                )
                for layer_index, name, feats in layers:
                    knn.reset()
                    knn.update(feats, labels, index)
                    if self._diag is None:
                        q = float(knn.compute())
                    else:  # Q and the diagnostics from one k-NN graph
                        where = {"layer_index": int(layer_index), "layer": name}
                        where.update(tap=self.tap_label, N=len(probe), repeat=repeat)
                        q = self._diag.measure(knn, where)
                    knn.reset()
                    m_value: float | None = None
                    if sep is not None:
                        sep.reset()
                        sep.update(feats, labels, index)
                        m_value = float(sep.compute())
                        sep.reset()
                    del feats
                    rows.append(
                        {
                            "layer_index": int(layer_index),
                            "layer": name,
                            "tap": self.tap_label,
                            "N": len(probe),
                            "k": self.k,
                            "metric": self.metric,
                            "modularity": q,
                            "M": m_value,
                            "seed": self.seed,
                            "repeat": repeat,
                            "num_edges": self.num_edges if sep is not None else None,
                            "edge_density": self.edge_density if sep is not None else None,
                        }
                    )
        return rows
