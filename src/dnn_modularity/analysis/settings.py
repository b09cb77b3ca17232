"""The settings every analysis shares: graph, taps, seed, batching and feature dtype.

One frozen :class:`AnalysisSettings` replaces the seven keyword arguments (``k``, ``metric``,
``taps``, ``seed``, ``batch_size``, ``block_size``, ``dtype``) that each analysis function
would otherwise restate. ``run(cfg)`` gets it from the analysis context
(:func:`AnalysisSettings.from_cfg`, built once in
:func:`dnn_modularity.analysis.context.load_context`); plain calls pass one or use the
defaults.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["FEATURE_DTYPES", "AnalysisSettings", "feature_dtype"]

#: ``feature_dtype`` config values -> torch dtypes (None: the model's own dtype).
FEATURE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def feature_dtype(name: Any) -> torch.dtype | None:
    """The torch dtype named by a ``feature_dtype`` config value.

    Raises:
        ValueError: A name outside :data:`FEATURE_DTYPES` (and not None).
    """
    if name is None:
        return None
    if str(name) not in FEATURE_DTYPES:
        raise ValueError(f"feature_dtype={name!r}; valid choices: {[*FEATURE_DTYPES, None]}")
    return FEATURE_DTYPES[str(name)]


@dataclass(frozen=True)
class AnalysisSettings:
    """Graph, tap and batching settings of an analysis.

    Attributes:
        k: Neighbours per node of the k-NN graph (paper 1).
        metric: Feature similarity, ``cosine`` or ``pearson`` (Fig. B11).
        taps: Tap selection understood by :func:`dnn_modularity.taps.resolve_taps`
            (``block`` = the papers' layers).
        seed: The run's seed (label shuffles, attacks, sample draws) and the rows' ``seed``
            column where the probe set carries none.
        batch_size: Images per forward pass.
        block_size: Row block of the engine's blockwise similarity (None: engine default).
        dtype: Optional feature dtype (e.g. ``torch.float16`` to halve memory).
    """

    k: int = 3
    metric: str = "cosine"
    taps: Any = "block"
    seed: int = 0
    batch_size: int = 256
    block_size: int | None = None
    dtype: torch.dtype | None = None

    @classmethod
    def from_cfg(cls, cfg: Any) -> AnalysisSettings:
        """The settings of a composed ``analyze`` config.

        Read from ``graph`` (k, metric, block_size), ``probe.taps``, ``seed``, ``batch_size``
        and ``feature_dtype``.

        Raises:
            ValueError: An unknown ``feature_dtype``.
        """
        graph = cfg.get("graph") or {}
        taps = cfg.probe.get("taps", "block") if cfg.get("probe") else "block"
        return cls(
            k=int(graph.get("k", cls.k)),
            metric=str(graph.get("metric", cls.metric)),
            taps=taps if isinstance(taps, str) else list(taps),
            seed=int(cfg.get("seed", cls.seed)),
            batch_size=int(cfg.get("batch_size", cls.batch_size)),
            block_size=graph.get("block_size"),
            dtype=feature_dtype(cfg.get("feature_dtype")),
        )

    def replace(self, **changes: Any) -> AnalysisSettings:
        """A copy with ``changes`` (e.g. ``seed=`` the probe seed for the rows' column)."""
        return dataclasses.replace(self, **changes)

    @property
    def tap_name(self) -> str:
        """The rows' ``tap`` column: the tap mode, or ``custom`` for a list of layers."""
        return self.taps if isinstance(self.taps, str) else "custom"

    def feature_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`dnn_modularity.analysis.measure.layer_features`."""
        return {"taps": self.taps, "batch_size": self.batch_size, "dtype": self.dtype}

    def engine_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the engine's k-NN functions (``knn_graph``, ``knn_modularity``)."""
        return {"k": self.k, "metric": self.metric, "block_size": self.block_size}

    def record_fields(self) -> dict[str, Any]:
        """The rows' ``tap``, ``k``, ``metric`` and ``seed`` columns."""
        return {"tap": self.tap_name, "k": self.k, "metric": self.metric, "seed": self.seed}
