"""The undirected weighted edge-list graph shared by the engine, and (A + Aᵀ)/2 symmetrisation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class Graph:
    """Undirected weighted graph as an edge list.

    Attributes:
        num_nodes: Number of nodes N (nodes are 0..N-1; isolated nodes count).
        src: LongTensor (E,) of edge end points, ``src < dst`` elementwise.
        dst: LongTensor (E,).
        weight: float64 Tensor (E,) edge weights (may be negative or zero for top-|E| graphs).
    """

    num_nodes: int
    src: Tensor
    dst: Tensor
    weight: Tensor

    def __post_init__(self) -> None:
        if not (self.src.shape == self.dst.shape == self.weight.shape and self.src.dim() == 1):
            raise ValueError(
                "src, dst and weight must be 1-D tensors of the same length, got shapes "
                f"{tuple(self.src.shape)}, {tuple(self.dst.shape)}, {tuple(self.weight.shape)}"
            )

    @property
    def num_edges(self) -> int:
        """Number of undirected edges E."""
        return int(self.src.numel())

    @property
    def device(self) -> torch.device:
        """Device of the edge tensors."""
        return self.src.device

    def to(self, device: torch.device | str) -> Graph:
        """Return the same graph with its tensors on ``device``."""
        return Graph(
            self.num_nodes, self.src.to(device), self.dst.to(device), self.weight.to(device)
        )

    def degrees(self) -> Tensor:
        """Weighted degrees (strengths), float64 (N,)."""
        deg = torch.zeros(self.num_nodes, dtype=torch.float64, device=self.device)
        w = self.weight.to(torch.float64)
        return deg.index_add_(0, self.src, w).index_add_(0, self.dst, w)


def symmetrize(num_nodes: int, src: Tensor, dst: Tensor, weight: Tensor) -> Graph:
    """Undirected graph of (A + Aᵀ)/2 for the directed entries A[src, dst] = weight.

    A pair present in both directions keeps (w_ij + w_ji)/2 (= s for a mutual k-NN pair), a
    one-way pair gets w/2. Self loops and zero weights must already be removed by the caller.

    Args:
        num_nodes: N.
        src: LongTensor (M,) directed sources.
        dst: LongTensor (M,) directed targets; each (src, dst) at most once.
        weight: (M,) weights (converted to float64).

    Returns:
        A :class:`Graph` with edges sorted by (src, dst).
    """
    lo = torch.minimum(src, dst)
    hi = torch.maximum(src, dst)
    pair, inverse = torch.unique(lo * num_nodes + hi, return_inverse=True)
    total = torch.zeros(pair.numel(), dtype=torch.float64, device=weight.device)
    total.index_add_(0, inverse, weight.to(torch.float64))
    return Graph(num_nodes, pair // num_nodes, pair % num_nodes, total / 2)


def symmetrize_numpy(num_nodes: int, src: np.ndarray, dst: np.ndarray, weight: np.ndarray) -> Graph:
    """:func:`symmetrize` in numpy (CPU): the same graph, with ~5x less per-call overhead.

    Small graphs (the dense route's N <= 2048) take ~0.1 ms here against ~0.4 ms in torch, whose
    per-operation dispatch dominates at this size. Each pair has at most two directed entries, so
    their float64 sum, and the graph, are bit for bit those of :func:`symmetrize`.

    Args:
        num_nodes: N.
        src: int64 (M,) directed sources.
        dst: int64 (M,) directed targets; each (src, dst) at most once.
        weight: (M,) weights (converted to float64).

    Returns:
        A CPU :class:`Graph` with edges sorted by (src, dst).
    """
    lo = np.minimum(src, dst)
    hi = np.maximum(src, dst)
    pair, inverse = np.unique(lo * num_nodes + hi, return_inverse=True)
    total = np.bincount(inverse, weights=weight.astype(np.float64), minlength=pair.size)
    return Graph(
        num_nodes,
        torch.from_numpy(pair // num_nodes),
        torch.from_numpy(pair % num_nodes),
        torch.from_numpy(total / 2),
    )
