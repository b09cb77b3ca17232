"""k-NN graph (paper 1, Sec. 3.2) and top-|E| "important relationship subgraph" (paper 2).

Both are computed from strips S_I = X_I X_{i0:}ᵀ (a block of rows I times every later row; X the
row-normalised features), each used for its rows and, transposed, for its columns: the upper
triangle of the symmetric N×N product, about half its matmul work, with only one strip plus
O(N·k) (resp. O(|E|)) running candidates in memory.

Exactness. The k-NN graph is the graph of paper 1's official code: the similarity diagonal is 0
(not -inf), each row keeps the k columns that ``heapq.nlargest(k, range(N), row.take)`` keeps
(largest value first, among equal values the lower column index), and the directed matrix A is
symmetrised as (A + Aᵀ)/2. Candidates are merged as int64 sort keys
(:mod:`~dnn_modularity.graph.keys`) whose order is heapq's, so ties are broken exactly as the
official code breaks them, whatever the order in which candidates arrive.

Over 500 lines: the blockwise k-NN graph and the top-|E| subgraph share the screened top-k
machinery.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dnn_modularity.graph.dense_select import dense_neighbours, matrix_buffer
from dnn_modularity.graph.edges import Graph, symmetrize, symmetrize_numpy
from dnn_modularity.graph.kernels import (
    KernelChoice,
    choose_by_speed,
    resolve_kernel,
    symmetric_route,
)
from dnn_modularity.graph.keys import (
    INT64_MIN,
    MAX_INDEX,
    decode_keys,
    decode_keys_numpy,
    sort_keys,
    sort_keys_numpy,
)
from dnn_modularity.graph.screen import (
    LowPrecisionRows,
    ScreenBound,
    pair_similarities,
    round_down,
)
from dnn_modularity.graph.similarity import (
    DENSE_SUB_BLOCK,
    SUB_BLOCK,
    block_bounds,
    compute_strip,
    dense_applies,
    dense_similarity,
    iter_similarity_strips,
    normalize_features,
    resolve_block_size,
    strict_matmul_precision,
    strip_buffer_size,
)
from dnn_modularity.graph.validation import (
    check_block_size,
    check_k,
    check_metric,
    check_num_edges,
)

__all__ = [
    "Graph",
    "choose_kernel",
    "graph_from_knn_keys",
    "graph_from_neighbours",
    "knn_graph",
    "knn_graph_of_rows",
    "knn_keys",
    "top_edges_graph",
]

log = logging.getLogger(__name__)


def _group_layout(width: int, k: int) -> tuple[int, int, int]:
    """Split ``width`` columns into strided groups for the group-maximum filter.

    Returns:
        ``(group, n_groups, main)``: column c < main belongs to group c mod n_groups, so group
        maxima are elementwise maxima of ``group`` contiguous slabs (one vectorised pass); the
        ``width - main`` tail columns are handled one by one. n_groups is a multiple of 64 (the
        reductions are only vectorised then) and at least 4(k+1); group = 1 means no grouping.
    """
    n_groups = 64 * max(1, round(width / (64 * 32)), -(-4 * (k + 1) // 64))
    group = width // n_groups
    if group < 2:
        return 1, width, width
    return group, n_groups, group * n_groups


def _merge_top_k(
    table: Tensor, rows: Tensor, values: Tensor, empty: float | int, presorted: bool = False
) -> Tensor:
    """Merge candidate ``values`` of (global) ``rows`` into ``table`` (N, k): keep the k largest.

    ``presorted``: ``rows`` are already in ascending order (no sort needed).

    Returns the rows that changed (sorted, unique); ``table[rows]`` is sorted descending.
    """
    k = table.shape[1]
    if not presorted:
        rows, order = torch.sort(rows, stable=True)
        values = values[order]
    urows, inverse, counts = torch.unique_consecutive(rows, return_inverse=True, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(inverse.numel(), device=rows.device) - starts[inverse]
    merged = torch.full(
        (urows.numel(), k + int(counts.max())), empty, dtype=table.dtype, device=rows.device
    )
    merged[:, :k] = table[urows]
    merged[inverse, k + slot] = values
    table[urows] = merged.topk(k, dim=1).values  # sorted: column k-1 is the k-th largest
    return urows


class _KnnState:
    """Running exact top-k per row: int64 keys (N, k) and the k-th best value (N,) (-inf = <k)."""

    def __init__(self, n: int, k: int, device: torch.device) -> None:
        self.k = k
        self.keys = torch.full((n, k), INT64_MIN, dtype=torch.int64, device=device)
        self.kth = torch.full((n,), float("-inf"), dtype=torch.float32, device=device)

    def merge(self, rows: Tensor, keys: Tensor, presorted: bool = False) -> None:
        """Merge candidate ``keys`` of (global) ``rows``: keep each row's k largest keys."""
        if rows.numel() == 0:
            return
        urows = _merge_top_k(self.keys, rows, keys, INT64_MIN, presorted)
        kth_key = self.keys[urows, -1]
        kth_value = decode_keys(kth_key)[0]
        self.kth[urows] = torch.where(kth_key == INT64_MIN, float("-inf"), kth_value)


class _LowerBounds:
    """Per row, the k largest lower bounds seen (N, k): the k-th bounds the final k-th from below.

    k entries whose exact similarities are at least these bounds exist, so the row's final k-th
    best exact similarity is at least the k-th of them (``kth``).
    """

    def __init__(self, n: int, k: int, device: torch.device) -> None:
        self.table = torch.full((n, k), float("-inf"), dtype=torch.float32, device=device)
        self.kth = torch.full((n,), float("-inf"), dtype=torch.float32, device=device)

    def merge(self, rows: Tensor, lower: Tensor) -> None:
        """Merge the lower bounds ``lower`` of entries of (global) ``rows``."""
        if rows.numel() == 0:
            return
        urows = _merge_top_k(self.table, rows, lower, float("-inf"))
        self.kth[urows] = self.table[urows, -1]


def _kth_largest(values: Tensor, k: int) -> Tensor:
    """k-th largest entry of each row of a 2-D ``values`` (counting repeated values), float32."""
    if k > 4:
        return values.topk(k, dim=1, sorted=False).values.amin(dim=1).to(torch.float32)
    # k rounds of max-and-remove: ~2x faster than topk for small k on CPUs
    work = values.to(torch.float32, copy=True)
    for _ in range(k - 1):
        idx = work.argmax(dim=1, keepdim=True)
        work.scatter_(1, idx, float("-inf"))
    return work.amax(dim=1)


SETS_PER_NEIGHBOUR = 4
"""Sets per neighbour of :func:`_k_set_bound` (4k sets): a tight bound at a small cost."""


def _k_set_bound(values: Tensor, k: int, dim: int) -> Tensor:
    """A value that at least k distinct entries along ``dim`` reach, close to the k-th largest.

    The entries along ``dim`` are cut into m = min(4k, count) disjoint sets of equal size (a
    remainder is left out); each set's maximum is an entry of its own, so k distinct entries are
    >= the k-th largest of the m set maxima, which is therefore <= the k-th largest entry (and
    equal to it when the k largest entries lie in distinct sets). Two fast max-reductions and a
    k-th largest of m values per row, instead of a k-th largest of all entries (``topk`` or
    ``argmax`` rounds, 10-40x slower than a max-reduction on CPUs).

    Args:
        values: 2-D tensor with at least k entries along ``dim``.
        k: How many distinct entries must reach the result.
        dim: 0 or 1.

    Returns:
        float32 tensor of ``values``' shape without ``dim``.
    """
    sets = min(SETS_PER_NEIGHBOUR * k, values.shape[dim])
    per = values.shape[dim] // sets
    maxima = values.narrow(dim, 0, sets * per).unflatten(dim, (sets, per)).amax(dim=dim + 1)
    if dim == 0:
        maxima = maxima.T.contiguous()  # (rows, sets): row-wise reductions run fastest
    return _kth_largest(maxima, k)


def _strip_candidates(
    s: Tensor,
    c_lo: int,
    lower: Tensor,
    k: int,
    transposed: bool,
    first: bool,
    bound: ScreenBound,
) -> Tensor:
    """Entries of a strip that may enter their row's top-k.

    The view is ``s[:, c_lo:]`` (rows of the strip) or its transpose (``transposed``: the strip's
    columns as rows). ``lower`` holds lower bounds on each view row's final k-th best exact
    similarity; an entry whose exact value cannot reach it is not among that row's k nearest
    neighbours. Group maxima find the few groups of columns that hold such entries with one
    vectorised max pass. On a row's first strip (``first``) a value that k distinct group maxima
    reach is a lower bound too (k distinct entries reach it; :func:`_k_set_bound`), which makes
    the filter tight at once.

    Args:
        s: Contiguous (R, W) strip (float32, or the screen's bf16/fp16).
        c_lo: First strip column of the view.
        lower: float32 lower bounds, one per view row (-inf where unknown).
        k: Neighbours per row.
        transposed: The view's rows are the strip's columns c_lo.. .
        first: These view rows have not been seen before.
        bound: Screened-to-exact error bound.

    Returns:
        LongTensor (P,) of positions in ``s.view(-1)``, in view-row order when not
        ``transposed``.
    """
    r_s, w_s = s.shape
    part = s[:, c_lo:]
    width = r_s if transposed else w_s - c_lo
    group, n_groups, main = _group_layout(width, k)
    tail = width - main  # < n_groups: the tail column main + g joins group g
    if group == 1:
        gmax = part  # every column is its own group
    elif transposed:
        gmax = part[:main].unflatten(0, (group, n_groups)).amax(0)  # (n_groups, rows)
        if tail:
            torch.maximum(gmax[:tail], part[main:], out=gmax[:tail])
    else:
        gmax = part[:, :main].unflatten(1, (group, n_groups)).amax(1)  # (rows, n_groups)
        if tail:
            torch.maximum(gmax[:, :tail], part[:, main:], out=gmax[:, :tail])
    if first and n_groups >= k:
        # k distinct entries (maxima of distinct groups) reach it: a lower bound on the k-th.
        lower = torch.maximum(lower, bound.lower(_k_set_bound(gmax, k, 0 if transposed else 1)))
    limit = round_down(bound.limit(lower), s.dtype)  # compare in s's dtype: no promoted copies
    if transposed:
        grp, a = (gmax >= limit.unsqueeze(0)).nonzero().unbind(1)
    else:
        a, grp = (gmax >= limit.unsqueeze(1)).nonzero().unbind(1)
    # Members of the candidate groups as flat positions in s (a: row of the view); with a tail,
    # every group gets one more member, which exists (< width) for the first `tail` groups only.
    stop = main + (n_groups if tail else 0)
    members = grp.unsqueeze(1) + torch.arange(0, stop, n_groups, device=s.device)
    real = None
    if tail:
        real = members < width
        members = torch.where(real, members, grp.unsqueeze(1))  # a stand-in, masked out below
    if transposed:
        flat = members * w_s + (a + c_lo).unsqueeze(1)
    else:
        flat = (members + c_lo) + (a * w_s).unsqueeze(1)
    keep = s.view(-1).take(flat) >= limit[a].unsqueeze(1)
    return flat.masked_select(keep if real is None else keep & real)


class _StripSweep:
    """Runs the strip sweep of :func:`knn_keys` (screened by a low-precision matmul, or float32).

    Float32 strips merge their candidates' exact values into the running top-k at once. Screened
    strips defer: their candidates (screened value, row, column) are kept while every row's k
    largest *lower bounds* (:class:`_LowerBounds`) tighten, pruned against those bounds as they
    rise, and only the survivors are recomputed in float32 at the end — entries within the
    screen's error of a row's final k-th neighbour, instead of everything that was close to the
    weak bounds of the first strips (4× fewer recomputations at N = 10⁴, D = 8192).
    """

    # A screened strip is recomputed in float32 (and screening stopped) when more than this
    # fraction of its entries are candidates: the recomputations would then cost more than the
    # screen's matmul saves (similarities spread less than the screen's error, e.g. very high D).
    # On a CPU a recomputation costs ~2·D·4 bytes of memory traffic (~0.4·D ns) and the bf16
    # matmul saves ~0.011·D ns per entry: break-even near 3%.
    MAX_SCREENED_FRACTION = 1 / 32

    def __init__(
        self,
        x: Tensor,
        k: int,
        block_size: int,
        screen: torch.dtype | None,
        sub_block: int = SUB_BLOCK,
        converted: LowPrecisionRows | None = None,
    ) -> None:
        n, dim = x.shape
        self.x = x
        self.sub_block = sub_block
        self.state = _KnnState(n, k, x.device)
        self.bounds = block_bounds(n, block_size)
        self.exact_bound = ScreenBound(dim, None)
        self.xs: Tensor | None = None
        self.screen_bound = self.exact_bound
        self.fallback_row: int | None = None  # first row of the first float32 strip, if any
        self.lower = _LowerBounds(n, k, x.device)
        # deferred screened candidates: directed (row, column) and screened value (float32)
        self.deferred: list[tuple[Tensor, Tensor, Tensor]] = []
        self.deferred_size = 0
        self.pruned_size = 0
        if screen is not None:
            if converted is None or converted.data.dtype != screen:
                converted = LowPrecisionRows(x, screen)
            self.xs = converted.convert(n)
            self.screen_bound = ScreenBound(dim, converted.r_max, screen, x.device.type)
        self.buffers: dict[torch.dtype, Tensor] = {}

    def _strip(self, rows: Tensor, i0: int, i1: int) -> Tensor:
        """S = rows[i0:i1] rows[i0:]ᵀ in a reused buffer, with the zeroed diagonal."""
        n = rows.shape[0]
        if rows.dtype not in self.buffers:
            size = strip_buffer_size(self.bounds)
            self.buffers[rows.dtype] = torch.empty(size, dtype=rows.dtype, device=rows.device)
        s = self.buffers[rows.dtype][: (i1 - i0) * (n - i0)].view(i1 - i0, n - i0)
        compute_strip(rows, i0, i1, s, mirror=True, sub_block=self.sub_block)
        s[:, : i1 - i0].fill_diagonal_(0.0)  # the official code zeroes the diagonal (not -inf)
        return s

    def _kth_lower(self) -> Tensor:
        """Lower bounds on every row's final k-th best exact similarity."""
        return torch.maximum(self.state.kth, self.lower.kth)

    def _candidates(self, s: Tensor, i0: int, i1: int, bound: ScreenBound) -> list[Tensor]:
        """Flat positions in S of the candidates of rows I and of the later rows (columns)."""
        k, kth, first = self.state.k, self._kth_lower(), i0 == 0
        parts = [_strip_candidates(s, 0, kth[i0:i1], k, False, first, bound)]
        if i1 < self.x.shape[0]:
            parts.append(_strip_candidates(s, i1 - i0, kth[i1:], k, True, first, bound))
        return parts

    @staticmethod
    def _directed(parts: list[Tensor], i0: int, width: int) -> tuple[Tensor, Tensor]:
        """Global (row, column) of the candidates: row-view parts as is, column views swapped."""
        rows, cols = [], []
        for index, flat in enumerate(parts):
            r, c = flat // width + i0, flat % width + i0
            rows.append(r if index == 0 else c)
            cols.append(c if index == 0 else r)
        return torch.cat(rows), torch.cat(cols)

    def _defer(self, rows: Tensor, cols: Tensor, screened: Tensor) -> None:
        """Keep screened candidates for the end; tighten the lower bounds with them."""
        self.lower.merge(rows, self.screen_bound.lower(screened))
        self.deferred.append((rows, cols, screened))
        self.deferred_size += rows.numel()
        if self.deferred_size > 2 * max(self.pruned_size, 2**16):
            self._prune()

    def _prune(self) -> None:
        """Drop deferred candidates that can no longer reach their row's k-th best."""
        rows, cols, screened = (torch.cat(parts) for parts in zip(*self.deferred, strict=True))
        keep = screened >= self.screen_bound.limit(self._kth_lower()[rows])
        self.deferred = [(rows[keep], cols[keep], screened[keep])]
        self.deferred_size = self.pruned_size = int(keep.sum())

    def finish(self) -> None:
        """Recompute the surviving deferred candidates in float32 and merge them (exact top-k)."""
        if not self.deferred:
            return
        self._prune()
        rows, cols, _ = self.deferred[0]
        self.deferred = []
        if rows.numel() == 0:
            return
        # Each unordered pair once (it may be a survivor both ways): its float32 dot product then
        # depends only on its two rows.
        n = self.x.shape[0]
        lo, hi = torch.minimum(rows, cols), torch.maximum(rows, cols)
        code, inverse = torch.unique(lo * n + hi, return_inverse=True)
        first, second = code // n, code % n
        exact = pair_similarities(self.x, self.x, first, second)
        exact.masked_fill_(first == second, 0.0)  # the zeroed diagonal
        self.state.merge(rows, sort_keys(exact[inverse], cols))

    def process(self, i0: int, i1: int) -> None:
        """Compute the strip of rows i0:i1 and merge its candidates into all rows it touches."""
        if self.xs is not None:
            s = self._strip(self.xs, i0, i1)
            parts = self._candidates(s, i0, i1, self.screen_bound)
            if sum(p.numel() for p in parts) <= s.numel() * self.MAX_SCREENED_FRACTION:
                rows, cols = self._directed(parts, i0, s.shape[1])
                screened = s.view(-1).take(torch.cat(parts)).to(torch.float32)
                self._defer(rows, cols, screened)
                return
            # the screen cannot separate these similarities: float32 from now on
            self.buffers.pop(self.xs.dtype, None)
            self.xs = None
            self.fallback_row = i0
        s = self._strip(self.x, i0, i1)
        parts = self._candidates(s, i0, i1, self.exact_bound)
        rows, cols = self._directed(parts, i0, s.shape[1])
        values = s.view(-1).take(torch.cat(parts))
        # the row view's candidates come in row order (the strip filter emits them so)
        self.state.merge(rows, sort_keys(values, cols), presorted=len(parts) == 1)
        if self.deferred:
            self.lower.merge(rows, values)  # exact values bound the deferred candidates too


SEPARATION_SHARE = 1 / 4000
"""Multiply-adds of the separation probe (float32), as a share of the call's N²·D/2."""


def _screen_separates(
    x: Tensor, k: int, dtype: torch.dtype, low: LowPrecisionRows | None = None
) -> bool:
    """Probe whether the screen separates these similarities well enough to pay.

    A few rows (64) against the first c columns (c sized to :data:`SEPARATION_SHARE` of the
    call), with the first-strip filter and the screen's error bound at the neighbour rank that k
    has among N columns (max(1, round(k·c/N)), so a small c estimates the real threshold): when
    more than ``_StripSweep.MAX_SCREENED_FRACTION`` of the entries remain candidates (the
    similarities spread less than the screen's error, as in very high-dimensional noise), the
    float32 recomputations would cost more than the screen saves. The sweep checks every strip
    again, so an estimate suffices: the probe multiplies in float32 (the screened values differ
    from these by at most the bound), which compiles no low-precision kernel for a shape only the
    probe uses (oneDNN's bf16: ~10-25 ms each on a Xeon). The bound needs the c rows' rounding
    residuals: they are converted into ``low`` if given (the sweep's own copy, reused when the
    screen is chosen).
    """
    n, dim = x.shape
    rows = min(64, n)
    cols = int(min(n, max(256, n * n / 2 * SEPARATION_SHARE / rows)))
    if low is None or low.data.dtype != dtype:
        low = LowPrecisionRows(x, dtype)
    low.convert(cols)
    bound = ScreenBound(dim, low.r_max, dtype, x.device.type)
    probe = x[:cols]
    with strict_matmul_precision():
        s = probe[:rows] @ probe.T
    s[:, :rows].fill_diagonal_(0.0)
    lower = torch.full((rows,), float("-inf"), device=x.device)
    rank = min(cols - 1, max(1, round(k * cols / n)))
    candidates = _strip_candidates(s, 0, lower, rank, False, True, bound).numel()
    return candidates <= s.numel() * _StripSweep.MAX_SCREENED_FRACTION


def choose_kernel(x: Tensor, k: int, kernel: str | None = None) -> KernelChoice:
    """The strip kernel :func:`knn_keys` uses for these rows (see :mod:`.kernels`).

    ``"auto"`` screens only where the screen's matmul is measured to be fast enough on this
    device (on GPUs: where it has the tensor cores and the call is large enough; see
    :func:`~dnn_modularity.graph.kernels.choose_by_speed`) *and* a small probe shows that it
    separates these similarities; a forced kernel is used as asked.

    Args:
        x: float32 (N, D) row-normalised features.
        k: Neighbours per row.
        kernel: A kernel name, or None for the :data:`~.kernels.KERNEL_ENV` default.

    Returns:
        The :class:`~dnn_modularity.graph.kernels.KernelChoice`.
    """
    name = resolve_kernel(kernel)
    choice = choose_by_speed(x, name)
    if name != "auto" or choice.dtype is None:
        return choice
    low = LowPrecisionRows(x, choice.dtype)
    if not _screen_separates(x, k, choice.dtype, low):
        return KernelChoice(None, f"{choice.reason}, but it cannot separate these similarities")
    return dataclasses.replace(choice, rows=low)


def knn_keys(
    x: Tensor,
    k: int,
    block_size: int,
    screen: bool | None = None,
    *,
    kernel: str | None = None,
) -> Tensor:
    """Exact k-NN selection over row-normalised features, as int64 keys.

    Implements steps 3-4 of the official algorithm of paper 1 (similarity with a zero diagonal,
    per-row ``heapq.nlargest``) by strips: the strip S = X_I X_{i0:}ᵀ of each block of rows I
    updates the running top-k of rows I (its rows) and of every later row (its columns), so every
    pair is computed once. Only entries that can still enter a row's top-k (not below its current
    k-th best) are extracted.

    With a screen (bf16 or fp16), strips are computed by a low-precision matmul and every entry
    that could be in the top-k given the rigorous error bound of :class:`ScreenBound` is
    recomputed in float32, so the selection is exact with respect to float32 similarities (those
    computed by a float32 dot product instead of a float32 matmul, which may round differently in
    the last bit: the two paths can differ only where two similarities are within an ulp). When a
    strip yields more candidates than 1/32 of its entries (the similarities spread less than the
    screen's error, as in very high-dimensional noise), the sweep switches to float32 strips for
    the rest. Which kernel runs is decided by :func:`choose_kernel`. Up to N =
    :data:`~.similarity.DENSE_MAX_N` the float32 path takes the whole matrix as one strip; on a
    CPU its top-k filter runs in numpy (:mod:`~dnn_modularity.graph.dense_select`).

    Args:
        x: float32 (N, D) row-normalised features.
        k: Neighbours per row, 1 <= k < N.
        block_size: Rows per strip.
        screen: Shorthand kept for callers of earlier versions: True forces the bf16 screen,
            False float32; None (default) defers to ``kernel``.
        kernel: ``"auto"``, ``"float32"``, ``"bfloat16"`` or ``"float16"``; None = the
            :data:`~.kernels.KERNEL_ENV` environment variable, else ``"auto"``.

    Returns:
        int64 (N, k) keys (see :func:`sort_keys`) of each row's k neighbours; row i may contain i
        itself (similarity 0) when fewer than k other columns are larger.
    """
    if screen is not None:
        kernel = "bfloat16" if screen else "float32"
    choice, dense = _route(x, k, kernel)
    if dense and x.device.type == "cpu":
        return torch.from_numpy(sort_keys_numpy(*_dense_cpu_neighbours(x, k, choice)))
    return _sweep_keys(x, k, block_size, choice, dense)


def knn_graph_of_rows(x: Tensor, k: int, block_size: int, kernel: str | None = None) -> Graph:
    """:func:`graph_from_knn_keys` of :func:`knn_keys`, without the keys on the CPU dense route.

    There the neighbours come from numpy as (value, column) arrays and the graph is built from
    them directly (:func:`graph_from_neighbours`): the same graph, without encoding and decoding
    N·k keys.

    Args:
        x: float32 (N, D) row-normalised features.
        k: Neighbours per row, 1 <= k < N.
        block_size: Rows per strip.
        kernel: As in :func:`knn_keys`.

    Returns:
        The symmetrised k-NN :class:`Graph` (on x's device).
    """
    choice, dense = _route(x, k, kernel)
    if dense and x.device.type == "cpu":
        return graph_from_neighbours(*_dense_cpu_neighbours(x, k, choice))
    return graph_from_knn_keys(_sweep_keys(x, k, block_size, choice, dense))


def _route(x: Tensor, k: int, kernel: str | None) -> tuple[KernelChoice, bool]:
    """The kernel choice for rows x, and whether the dense (whole-matrix) route takes them."""
    n = x.shape[0]
    if n > MAX_INDEX:
        raise ValueError(f"at most {MAX_INDEX} samples are supported, got N = {n}")
    symmetric_route()  # an unknown route in the environment fails before any work
    choice = choose_kernel(x, k, kernel)
    return choice, choice.dtype is None and dense_applies(n, x.shape[1])


def _dense_cpu_neighbours(x: Tensor, k: int, choice: KernelChoice) -> tuple[np.ndarray, np.ndarray]:
    """The whole similarity matrix in a reused buffer, filtered in numpy: (N, k) values, columns."""
    n = x.shape[0]
    a = dense_similarity(x, out=matrix_buffer(n)).numpy()
    a.ravel()[:: n + 1] = 0.0  # the official code zeroes the diagonal (not -inf)
    log.debug("kernel %s (%s), dense", choice.name, choice.reason)
    return dense_neighbours(a, k)


def _sweep_keys(x: Tensor, k: int, block_size: int, choice: KernelChoice, dense: bool) -> Tensor:
    """The strip sweep's keys (on CUDA the dense route is one strip of the whole matrix)."""
    n = x.shape[0]
    if dense:  # one strip: the whole matrix
        sweep = _StripSweep(x, k, n, None, DENSE_SUB_BLOCK)
    else:
        sweep = _StripSweep(x, k, block_size, choice.dtype, converted=choice.rows)
    with strict_matmul_precision():
        for i0, i1 in itertools.pairwise(sweep.bounds):
            sweep.process(i0, i1)
        sweep.finish()
    if sweep.fallback_row is not None:
        row = sweep.fallback_row
        log.debug("kernel %s (%s); float32 from row %d", choice.name, choice.reason, row)
    else:
        log.debug("kernel %s (%s)%s", choice.name, choice.reason, ", dense" if dense else "")
    return sweep.state.keys


def graph_from_knn_keys(keys: Tensor) -> Graph:
    """Build the symmetrised k-NN graph from :func:`knn_keys` output (steps 4-6 of paper 1's code).

    Entries that point to the row itself or have similarity 0 are not edges (the official code's
    ``networkx.from_numpy_array`` skips zero entries). CPU keys are processed in numpy (a
    fraction of torch's per-operation overhead at these sizes), others in torch: the same graph.
    """
    if keys.device.type == "cpu":
        return _graph_from_keys_numpy(keys)
    return _graph_from_keys_torch(keys)


def _graph_from_keys_torch(keys: Tensor) -> Graph:
    n, k = keys.shape
    values, cols = decode_keys(keys.reshape(-1))
    rows = torch.arange(n, device=keys.device).repeat_interleave(k)
    # one nonzero and three gathers: each boolean-mask index would run its own nonzero
    keep = ((cols != rows) & (values != 0)).nonzero().squeeze(1)
    return symmetrize(n, rows[keep], cols[keep], values[keep])


def _graph_from_keys_numpy(keys: Tensor) -> Graph:
    values, cols = decode_keys_numpy(keys.numpy())
    return graph_from_neighbours(values, cols)


def graph_from_neighbours(values: np.ndarray, cols: np.ndarray) -> Graph:
    """The symmetrised k-NN graph of each row's neighbours given as arrays (CPU, numpy).

    Entries that point to the row itself or have similarity 0 are not edges, as in
    :func:`graph_from_knn_keys`.

    Args:
        values: float32 (N, k) similarities of each row's neighbours.
        cols: int64 (N, k) their columns.

    Returns:
        The undirected CPU :class:`Graph`.
    """
    n, k = values.shape
    values, cols = values.ravel(), cols.ravel()
    rows = np.arange(n).repeat(k)
    keep = np.flatnonzero((values != 0) & (cols != rows))
    return symmetrize_numpy(n, rows[keep], cols[keep], values[keep])


def knn_graph(
    features: Any,
    k: int = 3,
    metric: str = "cosine",
    block_size: int | None = None,
    *,
    kernel: str | None = None,
) -> Graph:
    """Symmetrised k-NN similarity graph of paper 1 (Sec. 3.2, Eq. 3), as its official code has it.

    Features (N, ...) are flattened to (N, D) and row-normalised (centred first for Pearson); each
    node keeps its k most similar nodes (the similarity diagonal is 0, so a row with fewer than k
    positive similarities keeps itself with weight 0, i.e. no edge); equal similarities go to the
    lower index first; the directed k-NN matrix A is symmetrised as (A + Aᵀ)/2, so a mutual pair
    keeps weight s and a one-way pair gets s/2.

    Args:
        features: (N, ...) tensor or array-like, any real dtype, CPU or CUDA.
        k: Neighbours per node, 1 <= k < N.
        metric: ``"cosine"`` or ``"pearson"``.
        block_size: Rows per similarity strip (None = about N/8 within a memory budget).
            Memory is O(N·D + N·k + block_size·N); the result does not depend on it.
        kernel: Strip matmul: ``"auto"`` (by measured speed), ``"float32"``, ``"bfloat16"`` or
            ``"float16"`` (None = the ``DNN_MODULARITY_KERNEL`` environment variable, else
            ``"auto"``). The graph is exact with each; see :func:`knn_keys`.

    Returns:
        The undirected :class:`Graph` (on the features' device).

    Raises:
        ValueError: Bad features (NaN/inf, wrong shape), N <= k, unknown metric, bad block_size,
            unknown kernel.
    """
    check_metric(metric)
    check_block_size(block_size)
    resolve_kernel(kernel)
    x = normalize_features(features, metric)
    n = x.shape[0]
    check_k(k, n)
    return knn_graph_of_rows(x, k, resolve_block_size(block_size, n, x.device), kernel)


def _top_pairs(
    values: Tensor, codes: Tensor, best_v: Tensor, best_c: Tensor, num_edges: int
) -> tuple[Tensor, Tensor]:
    """The num_edges largest of two candidate sets by (value desc, pair code asc)."""
    v = torch.cat([best_v, values])
    c = torch.cat([best_c, codes])
    if v.numel() <= num_edges:
        return v, c
    order = torch.argsort(c)  # codes are unique: this is the tie-break order
    v, c = v[order], c[order]
    order = torch.sort(v, descending=True, stable=True).indices[:num_edges]
    return v[order], c[order]


def top_edges_graph(
    features: Any,
    num_edges: int = 40000,
    metric: str = "cosine",
    block_size: int | None = None,
) -> Graph:
    """The "important relationship subgraph" of paper 2 (Sec. 4.1-4.3): the |E| most similar pairs.

    Paper 2 keeps, out of the complete graph of all N(N-1)/2 pairs, the ``num_edges`` edges of
    greatest cosine similarity (|E| = 40,000 for N = 4,000). Each edge carries its similarity as
    weight. Equal similarities are ordered by the lower (i, j) pair first (i < j), so the result
    is deterministic.

    Args:
        features: (N, ...) features.
        num_edges: |E|, 1 <= |E| <= N(N-1)/2.
        metric: ``"cosine"`` or ``"pearson"``.
        block_size: Rows per similarity strip (None = about N/8 within a memory budget).

    Returns:
        A :class:`Graph` with exactly ``num_edges`` edges sorted by (src, dst); weights are the
        float32 similarities as float64 (possibly zero or negative).

    Raises:
        ValueError: Bad features, metric or block_size, or num_edges > N(N-1)/2.
    """
    check_metric(metric)
    check_block_size(block_size)
    x = normalize_features(features, metric)
    n = x.shape[0]
    check_num_edges(num_edges, n)
    dev = x.device
    best_v = torch.empty(0, dtype=torch.float32, device=dev)
    best_c = torch.empty(0, dtype=torch.int64, device=dev)
    bsize = resolve_block_size(block_size, n, dev)
    for i0, _, s in iter_similarity_strips(x, bsize):
        rows, width = s.shape
        # the diagonal and lower triangle of the strip's diagonal block are not pairs i < j
        lower = torch.ones(rows, rows, dtype=torch.bool, device=dev).tril_()
        s[:, :rows].masked_fill_(lower, float("-inf"))
        vals = s.view(-1)
        # Only values >= the current |E|-th best (or the strip's own |E|-th) can enter; ties
        # with it are kept because a lower pair code may win them.
        current = best_v.min() if best_v.numel() == num_edges else None
        sel = None if current is None else (vals >= current).nonzero().squeeze(1)
        if sel is None or sel.numel() > num_edges:
            thr = vals.topk(min(num_edges, vals.numel()), sorted=False).values.min()
            if current is not None:
                thr = torch.maximum(thr, current)
            sel = (vals >= thr).nonzero().squeeze(1)
        sel = sel[vals[sel] > float("-inf")]
        if sel.numel() == 0:
            continue
        codes = (i0 + sel // width) * n + (i0 + sel % width)
        best_v, best_c = _top_pairs(vals[sel], codes, best_v, best_c, num_edges)
    order = torch.argsort(best_c)
    best_v, best_c = best_v[order], best_c[order]
    return Graph(n, best_c // n, best_c % n, best_v.to(torch.float64))
