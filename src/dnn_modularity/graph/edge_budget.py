"""|E| of paper 2's top-|E| graph for a probe set of N samples: the paper's edge density.

Paper 2 keeps the |E| = 40,000 most similar of the 4,000·3,999/2 pairs of N = 4,000 test images:
a density of 0.50 % (Secs. 4.1-4.3). A fixed |E| = 40,000 on a smaller probe set keeps a far
larger share (27 % of the pairs at N = 540, the whole digits test split), and the ring figure
becomes a solid disc. So by default |E| keeps the paper's density:
|E|(N) = round(40,000 · N(N − 1) / (4,000 · 3,999)), which is exactly 40,000 at N = 4,000. An
explicit |E| still wins (clamped to the N(N − 1)/2 pairs). Every record that uses |E| stores the
value and the density used.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

__all__ = [
    "PAPER2_EDGE_DENSITY",
    "PAPER2_N",
    "PAPER2_NUM_EDGES",
    "EdgeBudget",
    "resolve_num_edges",
]

#: Paper 2's probe size and |E|.
PAPER2_N = 4000
PAPER2_NUM_EDGES = 40000
#: Their edge density, |E| / (N(N − 1)/2) ≈ 0.005001.
PAPER2_EDGE_DENSITY = PAPER2_NUM_EDGES / (PAPER2_N * (PAPER2_N - 1) / 2)


@dataclass(frozen=True)
class EdgeBudget:
    """The |E| used for N nodes and where it came from.

    Attributes:
        num_edges: |E|, 1 <= |E| <= N(N − 1)/2.
        density: |E| / (N(N − 1)/2).
        source: ``paper2_density`` (the default), ``explicit``, or ``explicit_clamped`` (an
            explicit |E| larger than the number of pairs).
    """

    num_edges: int
    density: float
    source: str


def resolve_num_edges(n: int, num_edges: int | None = None, *, warn: bool = True) -> EdgeBudget:
    """|E| for a probe set of ``n`` samples.

    Args:
        n: Number of nodes N (>= 2).
        num_edges: An explicit |E| (wins; clamped to the N(N − 1)/2 pairs, with a warning when
            ``warn``), or None for paper 2's edge density.
        warn: Warn when an explicit |E| is clamped.

    Returns:
        The :class:`EdgeBudget`.

    Raises:
        ValueError: N < 2, or an explicit |E| that is not a positive integer.
    """
    n = int(n)
    if n < 2:
        raise ValueError(f"a top-|E| graph needs N >= 2 samples, got N={n}")
    pairs = n * (n - 1) // 2
    if num_edges is None:
        edges = max(
            1, min(pairs, round(PAPER2_NUM_EDGES * n * (n - 1) / (PAPER2_N * (PAPER2_N - 1))))
        )
        return EdgeBudget(edges, edges / pairs, "paper2_density")
    if isinstance(num_edges, bool) or int(num_edges) != num_edges or int(num_edges) < 1:
        raise ValueError(
            f"num_edges must be a positive integer or null (paper 2's density), got {num_edges!r}"
        )
    edges = int(num_edges)
    if edges > pairs:
        if warn:
            warnings.warn(
                f"num_edges={edges} exceeds the {pairs} pairs of N={n} samples; using "
                f"num_edges={pairs} (the complete graph). num_edges=null keeps paper 2's edge "
                f"density ({PAPER2_EDGE_DENSITY:.4%}) instead",
                stacklevel=2,
            )
        return EdgeBudget(pairs, 1.0, "explicit_clamped")
    return EdgeBudget(edges, edges / pairs, "explicit")
