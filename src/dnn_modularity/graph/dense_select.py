"""Exact k-NN selection from a whole (N, N) similarity matrix on the CPU: the dense route's filter.

Up to N = :data:`~dnn_modularity.graph.similarity.DENSE_MAX_N` the float32 k-NN path computes
the whole similarity matrix at once (one symmetric product). What remains is a per-row top-k with
heapq's tie-breaking, which at these sizes is dominated by per-operation overhead, not by data:
on a CPU, torch's ``topk`` / ``argmax`` / ``nonzero`` over many short rows cost 0.3-3 ns per entry
and ~5-10 µs per call, numpy's ``sort`` along short rows ~8x less (measured on a Xeon, 500 × 64:
``torch.topk`` 384 µs, ``np.sort`` 46 µs). So this filter runs in numpy on the matrix's memory
(no copy) and hands back numpy arrays: 0.6-0.9 ms instead of 1.5-3 ms at N = 500, 5 ms
instead of 10-13 ms at N = 2000 (``benchmarks/bench_engine.py``).

The filter (exact, whatever the ties):

1. Columns are cut into G groups of ``g`` consecutive columns. The matrix is exactly symmetric
   (:func:`~dnn_modularity.graph.similarity.dense_similarity`), so row i's group maxima over
   column blocks are the column-wise maxima of row blocks: one vectorised pass over the matrix.
2. The group maxima are folded into m = min(G, 4k) sets; the k-th largest set maximum τ_i is
   reached by k distinct entries of row i (each set maximum is an entry of its own), so τ_i is
   at most the row's k-th largest similarity (counting repeats).
3. Every entry >= τ_i is a candidate: the members of the groups whose maximum reaches τ_i, and
   the few tail columns beyond the last whole group. This holds every entry of row i's top k.
4. The candidates are sorted once by (row, value descending, column) — heapq's order within each
   row — as composite int64 keys; each row's first k are the official algorithm's k neighbours.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from numpy.lib.stride_tricks import as_strided
from torch import Tensor

from dnn_modularity.graph.keys import ordered_bits_numpy

GROUPS = 128
"""About this many groups of columns: N/128 columns per group, within [4, 16]. Fewer, wider groups
make the group maxima cheaper to sort, but every candidate group's members are gathered (measured
at k = 3, µs of the filter for 4 / 8 / 16 columns: N = 500: 457 / 538 / 617; N = 1000: 1356 /
1219 / 1436; N = 2000: 5096 / 4199 / 4098)."""

SETS_PER_NEIGHBOUR = 4
"""Sets of group maxima per neighbour for τ (4k sets: a tight bound from a short row sort)."""

MAX_DENSE_SELECT = 2**15
"""Largest N of :func:`dense_neighbours` (its (row, value, column) keys must fit 64 bits)."""


_LOCAL = threading.local()


def matrix_buffer(n: int) -> Tensor:
    """A float32 (N, N) CPU buffer for the dense route's similarity matrix, reused per thread.

    A fresh N×N allocation per call costs more than its filter: freed, it is handed back to the
    OS (glibc trims its heap above twice its mmap threshold) and faulted in again, page by page,
    on the next call. Measured at N = 500, D = 512 (one thread, 100 calls): 5.8-6.9 ms per
    k-NN-modularity call, against 3.9-5.6 ms with glibc told to keep freed memory
    (``MALLOC_TRIM_THRESHOLD_``); with this buffer a call takes 0.01 page faults on average. The
    buffer grows to the largest N seen: at most DENSE_MAX_N² floats (16 MiB) per thread.
    """
    # a normal tensor, even when first asked for under torch.inference_mode (the training
    # monitor measures there): an inference tensor could not be written outside of it later
    with torch.inference_mode(False):
        buffer = getattr(_LOCAL, "buffer", None)
        if buffer is None or buffer.numel() < n * n:
            buffer = torch.empty(n * n, dtype=torch.float32)
            _LOCAL.buffer = buffer
        return buffer[: n * n].view(n, n)


def _group_size(n: int, k: int) -> int:
    """Columns per group: N/:data:`GROUPS` within [4, 16], and at least 4k groups (for τ)."""
    preferred = min(16, max(4, round(n / GROUPS)))
    return max(1, min(preferred, n // (SETS_PER_NEIGHBOUR * k)))


def dense_neighbours(a: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k nearest neighbours in a whole symmetric similarity matrix (numpy).

    The filter of the module doc; the candidates (a few per row) are then ordered by one sort of
    composite int64 keys (row, value descending, column), and each row's first k are taken.

    Args:
        a: float32 (N, N) C-contiguous similarities, exactly symmetric, with the diagonal set
            as the selection wants it (the official algorithm's 0); N <= 2¹⁵ (the dense route
            stops at :data:`~dnn_modularity.graph.similarity.DENSE_MAX_N`).
        k: Neighbours per row, 1 <= k < N.

    Returns:
        ``(values, cols)``: float32 (N, k) similarities and int64 (N, k) columns of each row's k
        neighbours, largest first: ``heapq.nlargest(k, range(N), row.take)``'s columns.

    Raises:
        ValueError: N above 2¹⁵ (the row-order keys would not fit 64 bits).
    """
    n = a.shape[0]
    if n > MAX_DENSE_SELECT:
        raise ValueError(f"the dense selection takes N <= {MAX_DENSE_SELECT}, got N = {n}")
    group = _group_size(n, k)
    groups = n // group
    main = groups * group  # columns [main, n) are the tail: candidates of their own
    # (groups, N): the column-wise maxima of row block b, which by symmetry are the maxima of each
    # row i over the columns b*group .. b*group + group - 1
    block_max = a[:main].reshape(groups, group, n).max(axis=1)
    sets = min(groups, SETS_PER_NEIGHBOUR * k)
    per = groups // sets
    set_max = block_max[: sets * per].reshape(sets, per, n).max(axis=1)
    tau = np.sort(set_max, axis=0)[sets - k]  # (N,): <= each row's k-th largest entry
    blocks, rows = np.nonzero(block_max >= tau)  # the candidate groups (any order)
    # (N, groups, group) view of the main columns: one gather takes each candidate group's entries
    grouped = as_strided(a, (n, groups, group), (a.strides[0], group * a.itemsize, a.itemsize))
    entries = grouped[rows, blocks]
    pick, offset = np.nonzero(entries >= tau[rows, None])
    values, rows, cols = entries[pick, offset], rows[pick], blocks[pick] * group + offset
    if main < n:
        tail_rows, tail_cols = np.nonzero(a[:, main:] >= tau[:, None])
        tail_cols += main
        values = np.concatenate([values, a[tail_rows, tail_cols]])
        rows = np.concatenate([rows, tail_rows])
        cols = np.concatenate([cols, tail_cols])
    order = np.argsort(_row_order_keys(rows, values, cols, n))
    # k distinct entries reach tau, so every row has at least k candidates: its first k in order
    counts = np.bincount(rows, minlength=n)
    top = order[(np.cumsum(counts) - counts)[:, None] + np.arange(k)]
    return values[top], cols[top]


def _row_order_keys(rows: np.ndarray, values: np.ndarray, cols: np.ndarray, n: int) -> np.ndarray:
    """int64 keys whose ascending order is (row, value descending, column): heapq's order per row.

    Three fields: the row, the complement of the value's order-preserving 32-bit integer
    (:func:`~dnn_modularity.graph.keys.ordered_bits_numpy`, so -0.0 ties with +0.0), the column;
    b = bits of N - 1 each for row and column, 2b + 32 <= 62 bits for N <= 2¹⁵.
    """
    ordered = ordered_bits_numpy(values)
    shift = max(1, int(n - 1).bit_length())
    return (rows << (32 + shift)) + ((np.int64(0x7FFFFFFF) - ordered) << shift) + cols


__all__ = ["GROUPS", "dense_neighbours", "matrix_buffer"]
