"""torchmetrics wrappers over :mod:`dnn_modularity.graph`.

Both metrics accumulate the probe samples' flattened features and labels in ``cat`` states, so
under DDP every rank's ``compute()`` sees all ranks' samples (torchmetrics gathers them), and then
call the engine once. Optional sample ``indices`` restore the probe set's original order and drop
the duplicates that a distributed sampler adds as padding, so the result equals one functional call
on the probe set in its original order.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from dnn_modularity.graph import (
    class_separation,
    knn_modularity,
    resolve_num_edges,
    top_edges_graph,
)
from dnn_modularity.graph.validation import check_metric


def _cat(state: list[Tensor] | Tensor) -> Tensor:
    """A ``cat`` state as one tensor; a single update's tensor as it is (no copy)."""
    if isinstance(state, list) and len(state) == 1:
        return state[0]
    return dim_zero_cat(state)


class _ProbeFeatureMetric(Metric):
    """Accumulates (features, labels[, indices]) and hands the probe set to ``_compute_value``."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    features: list[Tensor]
    labels: list[Tensor]
    indices: list[Tensor]

    def __init__(self, metric: str, max_samples: int | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.metric = check_metric(metric)
        if max_samples is not None and (
            isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 2
        ):
            raise ValueError(f"max_samples must be None or an integer >= 2, got {max_samples!r}")
        self.max_samples = max_samples
        self.add_state("features", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")
        self.add_state("indices", default=[], dist_reduce_fx="cat")

    def update(self, features: Tensor, labels: Tensor, indices: Tensor | None = None) -> None:
        """Add a batch.

        Args:
            features: (B, ...) features of B samples, any float dtype (stored as float32 (B, D)).
            labels: Integer labels (B,).
            indices: Optional (B,) positions of the samples in the probe set; give them in every
                update or in none.

        Raises:
            ValueError: Mismatched batch sizes, bad shapes or dtypes, or indices given in some
                updates only.
        """
        if features.dim() < 2:
            raise ValueError(
                "features must have shape (B, ...) with at least 2 dims, got "
                f"{tuple(features.shape)}"
            )
        batch = features.shape[0]
        if labels.dim() != 1 or labels.shape[0] != batch:
            raise ValueError(
                f"labels must have shape ({batch},) to match features, got {tuple(labels.shape)}"
            )
        if labels.is_floating_point() or labels.is_complex():
            raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
        seen_rows = sum(f.shape[0] for f in self.features)
        seen_indices = sum(i.shape[0] for i in self.indices)
        if indices is None:
            if seen_indices:
                raise ValueError("indices were given in earlier updates; give them in every update")
        else:
            if indices.dim() != 1 or indices.shape[0] != batch:
                raise ValueError(
                    f"indices must have shape ({batch},) to match features, got "
                    f"{tuple(indices.shape)}"
                )
            if seen_rows != seen_indices:
                raise ValueError(
                    "indices were missing in earlier updates; give them in every update"
                )
            self.indices.append(indices.detach().to(device=self.device, dtype=torch.long))
        self.features.append(features.detach().reshape(batch, -1).to(self.device, torch.float32))
        self.labels.append(labels.detach().to(device=self.device, dtype=torch.long))

    def probe_set(self) -> tuple[Tensor, Tensor]:
        """The accumulated probe set ``(features (N, D), labels (N,))``.

        Sorted by index with duplicate indices dropped when indices were given, then cut to the
        first ``max_samples`` samples.

        Raises:
            ValueError: No samples were added, or only some updates carried indices.
        """
        if isinstance(self.features, list) and not self.features:
            raise ValueError(f"{type(self).__name__}.compute() called before any update")
        features = _cat(self.features)
        labels = _cat(self.labels)
        has_indices = isinstance(self.indices, Tensor) or len(self.indices) > 0
        if has_indices:
            indices = dim_zero_cat(self.indices)
            if indices.shape[0] != features.shape[0]:
                raise ValueError(
                    f"got {indices.shape[0]} indices for {features.shape[0]} samples; give "
                    "indices in every update or in none"
                )
            indices, order = torch.sort(indices, stable=True)
            first = torch.ones_like(indices, dtype=torch.bool)
            first[1:] = indices[1:] != indices[:-1]  # DDP padding repeats samples
            keep = order[first]
            in_order = keep.numel() == features.shape[0] and bool(
                (keep == torch.arange(keep.numel(), device=keep.device)).all()
            )
            if not in_order:  # (a single process adds them in order: no copy of the features)
                features, labels = features[keep], labels[keep]
        if self.max_samples is not None:
            features, labels = features[: self.max_samples], labels[: self.max_samples]
        return features, labels

    @abstractmethod
    def _compute_value(self, features: Tensor, labels: Tensor) -> float:
        """The metric's value on the probe set (features (N, D), labels (N,))."""

    def compute(self) -> Tensor:
        """The metric on the whole probe set, as a float64 scalar tensor."""
        features, labels = self.probe_set()
        value = self._compute_value(features, labels)
        return torch.tensor(value, dtype=torch.float64, device=self.device)


class KNNModularity(_ProbeFeatureMetric):
    """Modularity of the k-NN graph of a layer's features, classes as communities (paper 1).

    ``compute()`` equals :func:`dnn_modularity.graph.knn_modularity` on the accumulated probe set.

    Args:
        k: Neighbours per node.
        metric: ``"cosine"`` or ``"pearson"``.
        max_samples: Use only the first ``max_samples`` samples (by index when indices are
            given, else in arrival order); None = all.
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    def __init__(
        self, k: int = 3, metric: str = "cosine", max_samples: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(metric, max_samples, **kwargs)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        self.k = k

    def _compute_value(self, features: Tensor, labels: Tensor) -> float:
        return knn_modularity(features, labels, k=self.k, metric=self.metric)


class ClassSeparationModularity(_ProbeFeatureMetric):
    """Paper 2's M = r × AQ × (1 − EQ) on the top-|E| similarity subgraph of a layer's features.

    ``compute()`` equals ``class_separation(top_edges_graph(features, num_edges, metric),
    labels).m`` on the accumulated probe set.

    Args:
        num_edges: |E|, the number of most similar pairs kept (40,000 of N = 4,000 in paper 2);
            None (default): paper 2's edge density for the accumulated N
            (:func:`dnn_modularity.graph.resolve_num_edges`).
        metric: ``"cosine"`` or ``"pearson"``.
        max_samples: Use only the first ``max_samples`` samples; None = all.
        **kwargs: Passed to :class:`torchmetrics.Metric`.
    """

    def __init__(
        self,
        num_edges: int | None = None,
        metric: str = "cosine",
        max_samples: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(metric, max_samples, **kwargs)
        if num_edges is not None and (
            isinstance(num_edges, bool) or not isinstance(num_edges, int) or num_edges < 1
        ):
            raise ValueError(f"num_edges must be a positive integer or None, got {num_edges!r}")
        self.num_edges = num_edges

    def _compute_value(self, features: Tensor, labels: Tensor) -> float:
        edges = self.num_edges  # explicit: passed on as is (the engine refuses too many)
        if edges is None:
            edges = resolve_num_edges(features.shape[0]).num_edges
        graph = top_edges_graph(features, num_edges=edges, metric=self.metric)
        return class_separation(graph, labels).m
