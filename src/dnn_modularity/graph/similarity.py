"""Cosine / Pearson similarity, computed blockwise, and the all-pairs similarity histogram.

The N×N similarity matrix is never materialised: callers iterate over strips S_I = X_I X_{i0:}ᵀ
(a block of rows times all later rows; X the row-normalised features), the upper triangle of the
symmetric matrix, which roughly halves the matrix-multiply work.
"""

from __future__ import annotations

import itertools
import math
import mmap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from dnn_modularity.graph.kernels import strict_matmul_precision, symmetric_product
from dnn_modularity.graph.validation import (
    check_bins,
    check_block_size,
    check_features,
    check_finite,
    check_metric,
    check_range,
)

NORM_EPS = 1e-8
"""The official code of paper 1 clamps row norms at this value before dividing. Here rows are first
scaled by a power of two (exact), so every non-zero row has norm >= 1 when the clamp applies and is
normalised exactly whatever its scale; the clamp only keeps an all-zero row all-zero (similarity 0
with every row)."""

# Memory budget for one strip of similarity rows (its values and the temporaries of the same size
# that consumers create): ~12 bytes per entry covers a float32 strip plus an int64 temporary
# (bucketize) or a bool mask.
_STRIP_BUDGET_BYTES = {"cpu": 256 * 2**20, "cuda": 4096 * 2**20}
_BYTES_PER_ENTRY = 12


def times_power_of_two(x: Tensor, exponent: Tensor) -> Tensor:
    """Return ``x · 2^-exponent``, exactly.

    The power is applied as two factors, each representable in x's dtype (a float32 exponent
    spans [-149, 128], float64's [-1074, 1024]), so each product is exact.
    """
    half = torch.div(exponent, 2, rounding_mode="floor")
    return x * torch.exp2((-half).to(x.dtype)) * torch.exp2((half - exponent).to(x.dtype))


def _scale_rows(x: Tensor) -> Tensor:
    """Divide each row by the power of two at or above its largest magnitude (exact, in x's dtype).

    Afterwards every non-zero row has max |x_ij| in [0.5, 1): its float32 copy neither overflows
    (|x| ~ 1e39 in float64, or x² of |x| ~ 1e20 in float32) nor loses its norm below the clamp
    (|x| ~ 1e-9). Scaling by a power of two commutes with float rounding in the normal range, so
    for ordinary inputs the normalised rows are bit for bit those of the unscaled algorithm.
    """
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.to(torch.float32)  # exact; their range needs no scaling, float32's rules apply
    low, high = torch.aminmax(x, dim=1, keepdim=True)
    peak = torch.maximum(high, -low)
    _, exponent = torch.frexp(peak)  # peak = m·2^e with m in [0.5, 1); e = 0 for a zero row
    lo, hi = _SAFE_EXPONENTS
    if x.dtype == torch.float32 and bool(((exponent >= lo) & (exponent <= hi)).all()):
        # Moderate rows: their squares and norms stay far inside float32's range and above the
        # clamp, and scaling would change no bit of the result (it commutes with the rounding).
        return x
    return times_power_of_two(x, exponent)


HUGE_PAGE_BYTES = 64 * 2**20
"""Normalised float32 copies of at least this size (the rows of :func:`normalize_features` that
need no scaling, i.e. nearly all) go on transparent huge pages where Linux offers them: a fresh
512 MiB copy is then faulted in as 256 pages of 2 MiB, not 131,072 of 4 KiB (measured on a Xeon:
0.24 s of page faults in a 0.32 s normalisation at N = 2000, D = 65,536)."""


def empty_rows(shape: tuple[int, int], device: torch.device) -> Tensor:
    """An uninitialised float32 (N, D) tensor; on huge pages for large CPU tensors (Linux).

    torch's CPU allocator takes huge pages only with ``THP_MEM_ALLOC_ENABLE=1`` set before its
    first allocation; an anonymous mapping advised ``MADV_HUGEPAGE`` gets them under the default
    ``madvise`` setting of ``/sys/kernel/mm/transparent_hugepage/enabled`` (elsewhere: ordinary
    pages, the same result). The tensor keeps the mapping alive and unmaps it when freed.
    """
    nbytes = math.prod(shape) * 4
    if device.type != "cpu" or nbytes < HUGE_PAGE_BYTES or not hasattr(mmap, "MADV_HUGEPAGE"):
        return torch.empty(shape, dtype=torch.float32, device=device)
    mapping = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    mapping.madvise(mmap.MADV_HUGEPAGE)
    return torch.frombuffer(mapping, dtype=torch.float32).view(shape)


def _divide_rows(x: Tensor, norms: Tensor) -> Tensor:
    """Rows of x (N, D) float32 divided by norms (N, 1), into a new :func:`empty_rows` tensor."""
    return torch.div(x, norms, out=empty_rows(tuple(x.shape), x.device))


def _moderate_norms(norms: Tensor, dim: int) -> bool:
    """Whether float32 row norms prove that every row is finite and needs no scaling.

    A row passes when its norm is 0 (an all-zero row) or within [2^-20·√D, 2^39): its largest
    magnitude then lies in [norm/√D, norm] (with a factor-2 margin for the norm's own rounding
    and any underflow of tiny squares, which only lower it), inside :data:`_SAFE_EXPONENTS`, so
    :func:`_scale_rows` would return it unchanged; a NaN or inf anywhere makes its norm fail.
    """
    low, high = 2.0**-20 * dim**0.5, 2.0**39
    smallest, largest = (float(v) for v in torch.aminmax(norms))
    if low <= smallest and largest < high:  # the common case, in one reduction (NaN fails it)
        return True
    ok = (norms == 0) | ((norms >= low) & (norms < high))
    return bool(ok.all())


_SAFE_EXPONENTS = (-20, 40)
"""Rows of float32 features whose largest magnitude is in [2^-21, 2^40) need no scaling: their
norms are far above the 1e-8 clamp and cannot overflow, and the squares of their significant
components stay normal (a zero row has exponent 0)."""


def normalize_features(features: Any, metric: str = "cosine") -> Tensor:
    """Flatten, convert to float32 and L2-normalise the rows (centred first for Pearson).

    This is steps 1-2 of the official algorithm of paper 1 (Sec. 3.2, Eq. 3): after it, the
    cosine similarity of rows i and j is the dot product ``x_i · x_j``; for ``"pearson"`` each row
    is centred on its own mean first, which makes that dot product the Pearson correlation
    (paper 1, appendix A, Fig. B11).

    Scale invariance: rows are scaled by a power of two before the float32 conversion and the
    norm (see :func:`_scale_rows`), so the result does not depend on the features' scale: tiny
    rows (norm < 1e-8, which the official code's clamp would shrink) and huge ones (which would
    overflow float32) are normalised exactly. For ordinary features the values are bit for bit
    those of the official steps. An all-zero row stays zero; for Pearson a constant row (whose
    correlation is undefined) becomes zero too, so it has similarity 0 with every row.

    Args:
        features: (N, ...) tensor or array-like, any real dtype, on any device (detached).
        metric: ``"cosine"`` or ``"pearson"``.

    Returns:
        float32 tensor (N, D), D the product of the trailing dimensions, on the input's device.

    Raises:
        ValueError: Bad metric or bad features (see :func:`check_features`).
    """
    check_metric(metric)
    flat = check_features(features, min_samples=1, finite=False)
    if metric == "cosine" and flat.dtype == torch.float32:
        norms = torch.linalg.vector_norm(flat, dim=1, keepdim=True)
        if _moderate_norms(norms, flat.shape[1]):
            # finite, moderate rows: the steps below would neither check anything new nor scale
            # (see _moderate_norms); two passes over the data instead of four
            return _divide_rows(flat, norms.clamp_min_(NORM_EPS))
    check_finite(flat)
    if not flat.is_floating_point():
        flat = flat.to(torch.float32)  # integers (int64 up to 9.2e18) fit float32's range
    x = _scale_rows(flat)
    if x.dtype != torch.float32:
        x = x.to(torch.float32)
    if metric == "pearson":
        low, high = torch.aminmax(x, dim=1)
        x = x - x.mean(dim=1, keepdim=True)
        x[low == high] = 0.0  # rounding of the mean would otherwise leave a tiny residue
    norms = torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min_(NORM_EPS)
    if x is flat or x.data_ptr() == flat.data_ptr():
        return _divide_rows(x, norms)  # the caller's memory: divide into a new tensor
    return x.div_(norms)  # our own copy: no second large allocation


def default_block_size(n: int, device: torch.device | str = "cpu") -> int:
    """Rows per strip: about N/8, at least 128, at most what a per-device memory budget allows.

    A strip of R rows is the R×(N − i0) product of those rows with all later rows. With nb strips
    the matmul work is (nb + 1)/(2·nb) of the full N×N product (1 for one strip, 0.56 for 8), so
    strips are kept thin enough for the symmetry to pay and thick enough for an efficient matmul
    and few per-strip steps (measured: 8 strips beat 4 and 16 from N = 500 to 10,000).

    Args:
        n: Number of samples N (the strip never has more rows).
        device: Where the strips are computed; CUDA devices get a larger budget.

    Returns:
        A block size R with 1 <= R <= max(N, 1).
    """
    kind = torch.device(device).type
    budget = _STRIP_BUDGET_BYTES.get(kind, _STRIP_BUDGET_BYTES["cpu"])
    by_memory = max(MIN_BLOCK_SIZE, budget // (_BYTES_PER_ENTRY * max(n, 1)))
    return max(1, min(max(128, -(-n // 8)), by_memory, n))


MIN_BLOCK_SIZE = 32
"""Smallest strip used. Tiny strips are slow, and float32 matmuls with fewer than ~4 rows or
~12 columns take another kernel path whose rounding differs from that of a full N×N matmul."""


def resolve_block_size(block_size: int | None, n: int, device: torch.device | str) -> int:
    """Validate ``block_size`` (None = :func:`default_block_size`) and clip it to [32, N]."""
    check_block_size(block_size)
    if block_size is None:
        block_size = default_block_size(n, device)
    return max(1, min(max(block_size, MIN_BLOCK_SIZE), n))


def block_bounds(n: int, block_size: int) -> list[int]:
    """Boundaries 0 = b_0 < b_1 < ... < b_nb = N of ceil(N / block_size) near-equal strips.

    Splitting evenly (sizes differ by at most one) avoids a small last strip, which would run
    slowly and (see :data:`MIN_BLOCK_SIZE`) round differently.
    """
    nb = max(1, -(-n // block_size))
    return [(i * n) // nb for i in range(nb + 1)]


def strip_buffer_size(bounds: list[int]) -> int:
    """Entries of the largest strip (rows i0:i1 times columns i0:N) for these boundaries."""
    n = bounds[-1]
    return max((i1 - i0) * (n - i0) for i0, i1 in itertools.pairwise(bounds))


DENSE_MAX_N = 2048
"""Up to this N the float32 k-NN selection takes the whole N×N similarity matrix (16 MiB at most)
as one strip: one symmetric product (numpy's ``syrk`` on CPUs, else thin triangular sub-strips of
:data:`DENSE_SUB_BLOCK` rows) and one filter pass (on CPUs numpy's,
:mod:`~dnn_modularity.graph.dense_select`) beat several strips' steps."""

DENSE_SUB_BLOCK = 128


def dense_applies(n: int, dim: int) -> bool:
    """Whether the float32 k-NN path of (N, D) takes the dense route (:data:`DENSE_MAX_N`)."""
    return n <= DENSE_MAX_N


def dense_similarity(x: Tensor, out: Tensor | None = None) -> Tensor:
    """The full (N, N) similarity of row-normalised ``x`` as the dense k-NN route computes it.

    One strip of all rows (:func:`compute_strip`): numpy's ``syrk`` on CPUs, else triangular
    sub-strips of :data:`DENSE_SUB_BLOCK` rows; exactly symmetric either way.

    Args:
        x: (N, D) row-normalised features.
        out: Optional contiguous (N, N) tensor of x's dtype and device to write into.

    Returns:
        The (N, N) similarity (``out`` when given).
    """
    n = x.shape[0]
    if out is None:
        out = torch.empty(n, n, dtype=x.dtype, device=x.device)
    with strict_matmul_precision():
        compute_strip(x, 0, n, out, mirror=True, sub_block=DENSE_SUB_BLOCK)
    return out


SUB_BLOCK = 256
"""Rows of the triangular sub-strips of a strip's diagonal block (see :func:`compute_strip`). Every
matmul tile keeps >= 256 rows and columns where the strip has them: BLAS libraries switch to
small-matrix kernels (which round differently) below ~200 columns, so tiles this large give the
values of one big product."""


def sub_strip_bounds(rows: int, sub_block: int = SUB_BLOCK) -> list[int]:
    """Boundaries of near-equal sub-strips of >= ``sub_block`` rows (one below 2·sub_block)."""
    pieces = max(1, rows // sub_block)
    return [(i * rows) // pieces for i in range(pieces + 1)]


def compute_strip(
    x: Tensor, i0: int, i1: int, out: Tensor, *, mirror: bool, sub_block: int = SUB_BLOCK
) -> None:
    """Write the strip S = x[i0:i1] @ x[i0:]ᵀ into ``out`` (R, N − i0), R = i1 − i0.

    The off-diagonal columns (later rows) take R-wide matmul tiles. The symmetric diagonal block
    S_II = x_I x_Iᵀ is computed by a BLAS ``syrk`` (numpy's, on CPUs for float32 rows:
    :func:`~dnn_modularity.graph.kernels.symmetric_product`), which computes its upper triangle
    and mirrors it. Elsewhere (GPUs, bf16/fp16 screens) it is computed in triangular sub-strips
    (rows a:b against columns a:R) — only its upper triangle plus the small diagonal sub-blocks,
    ~1/2 instead of all of its work — and with ``mirror`` its lower part is copied from the upper
    (one pass over R²/2 entries); without, the entries strictly below the diagonal sub-blocks may
    be left unset (callers that read only pairs i < j). Either way each pair's value is computed
    once and the copy is exact, so the block is exactly symmetric.

    Args:
        x: (N, D) row-normalised features (float32, or a screen's bf16/fp16 copy).
        i0: First row of the strip.
        i1: End row of the strip.
        out: Contiguous (R, N − i0) output of x's dtype.
        mirror: Also fill the lower part of the diagonal block.
        sub_block: Rows of the diagonal block's sub-strips (at least; see
            :func:`sub_strip_bounds`), where no ``syrk`` applies.
    """
    n, rows = x.shape[0], i1 - i0
    # Off-diagonal columns in chunks of the strip's height (the last one takes the remainder):
    # every strip then has the same few tile shapes, and libraries that compile a kernel per
    # matmul shape (oneDNN's bf16 kernels: tens of ms each) compile a handful, not dozens.
    chunks = max(1, (n - i1) // rows)
    cuts = [i1 + c * rows for c in range(chunks)] + [n]
    for c0, c1 in itertools.pairwise(cuts):
        if c1 > c0:
            torch.mm(x[i0:i1], x[c0:c1].T, out=out[:, c0 - i0 : c1 - i0])
    if symmetric_product(x[i0:i1], out[:, :rows]):
        return
    for a, b in itertools.pairwise(sub_strip_bounds(rows, sub_block)):
        torch.mm(x[i0 + a : i0 + b], x[i0 + a : i1].T, out=out[a:b, a:rows])
        if mirror and b < rows:
            out[b:rows, a:b].copy_(out[a:b, b:rows].T)


def iter_similarity_strips(x: Tensor, block_size: int) -> Iterator[tuple[int, int, Tensor]]:
    """Yield ``(i0, i1, S)`` with S = x[i0:i1] @ x[i0:]ᵀ: the upper-triangular part by strips.

    Column c of S is sample i0 + c, so S[:, :i1-i0] is the diagonal block and S[:, i1-i0:] holds
    every later sample: each unordered pair (i < j) appears once, in the strip of i. Only the
    diagonal block's upper part is computed (:func:`compute_strip`): entries below its diagonal
    are undefined. The strip buffer is reused (a yielded S is overwritten by the next one).

    Args:
        x: Row-normalised features (N, D) (see :func:`normalize_features`), or their bf16 copy.
        block_size: Rows per strip (at most; strips are near-equal).

    Yields:
        ``i0, i1`` and the contiguous (i1 - i0, N - i0) strip (its diagonal included).
    """
    n = x.shape[0]
    bounds = block_bounds(n, block_size)
    buf = torch.empty(strip_buffer_size(bounds), dtype=x.dtype, device=x.device)
    for i0, i1 in itertools.pairwise(bounds):
        s = buf[: (i1 - i0) * (n - i0)].view(i1 - i0, n - i0)
        with strict_matmul_precision():
            compute_strip(x, i0, i1, s, mirror=False)
        yield i0, i1, s


@dataclass(frozen=True)
class SimilarityHistogram:
    """Histogram of the similarities of all N(N-1)/2 unordered pairs (paper 2, Sec. 4.1).

    Attributes:
        edges: float64 (bins + 1,) bin edges; bin i is [edges[i], edges[i+1]), the last bin also
            holds values equal to edges[-1] (numpy.histogram's convention).
        counts: int64 (bins,) number of pairs per bin.
        underflow: Pairs with similarity < edges[0].
        overflow: Pairs with similarity > edges[-1].
    """

    edges: Tensor
    counts: Tensor
    underflow: int
    overflow: int

    @property
    def total(self) -> int:
        """counts.sum() + underflow + overflow, which equals N(N-1)/2."""
        return int(self.counts.sum()) + self.underflow + self.overflow


def _float32_at_least(values: Sequence[float]) -> Tensor:
    """Smallest float32 >= each float64 value (so float32 comparisons equal float64 ones)."""
    v64 = torch.tensor(list(values), dtype=torch.float64)
    v32 = v64.to(torch.float32)
    up = torch.nextafter(v32, torch.tensor(float("inf"), dtype=torch.float32))
    return torch.where(v32.to(torch.float64) < v64, up, v32)


def histogram_edges(bins: int, value_range: tuple[float, float]) -> Tensor:
    """float64 edges ``lo + i·(hi-lo)/bins`` with the last edge exactly ``hi`` (as numpy)."""
    lo, hi = value_range
    step = (hi - lo) / bins
    edges = [i * step + lo for i in range(bins)] + [hi]
    return torch.tensor(edges, dtype=torch.float64)


def similarity_histogram(
    features: Any,
    bins: int = 10,
    range: tuple[float, float] = (0.0, 1.0),  # the contract's (and numpy's) name
    metric: str = "cosine",
    block_size: int | None = None,
) -> SimilarityHistogram:
    """Histogram of the similarity of every unordered pair of samples (paper 2, Sec. 4.1).

    Paper 2 divides [0, 1] into 10 equal bins and counts the similarities of all pairs of the
    10,000 CIFAR-10 test images per layer (its Figs. 2-5). Pairs are counted once (i < j, the
    diagonal excluded); values outside ``range`` are counted in ``underflow``/``overflow``, never
    dropped, so ``counts.sum() + underflow + overflow == N(N-1)/2``. Similarities are clamped to
    [-1, 1] first (float32 rounding puts the similarity of two equal rows an ulp above 1, which
    would otherwise land in the overflow). Bin membership is decided by exact comparisons of the
    float32 similarities with the float64 edges, which makes the counts equal
    ``numpy.histogram`` of the same (clamped) values.

    Args:
        features: (N, ...) features, N >= 2.
        bins: Number of equal-width bins, >= 1.
        range: ``(lo, hi)`` with lo < hi.
        metric: ``"cosine"`` or ``"pearson"``.
        block_size: Rows per similarity strip (None = about N/8 within a memory budget); never
            more than one strip (block of rows) of the N×N matrix is held.

    Returns:
        A :class:`SimilarityHistogram` (counts on the CPU).

    Raises:
        ValueError: Bad features, metric, bins, range or block_size.
    """
    check_bins(bins)
    value_range = check_range(range)
    check_block_size(block_size)
    x = normalize_features(features, metric)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 samples for pairwise similarities, got N = {n}")
    edges = histogram_edges(bins, value_range)
    # boundaries[0] = lo, interior edges, then the first float32 above hi: bucketize(right=True)
    # then gives 0 for v < lo, 1..bins for the bins (v == hi in the last one), bins+1 for v > hi.
    hi_floor = torch.tensor(value_range[1], dtype=torch.float64).to(torch.float32)
    if hi_floor.to(torch.float64) > value_range[1]:
        hi_floor = torch.nextafter(hi_floor, torch.tensor(float("-inf")))
    above_hi = torch.nextafter(hi_floor, torch.tensor(float("inf")))
    boundaries = torch.cat([_float32_at_least(edges[:-1].tolist()), above_hi.reshape(1)])
    boundaries = boundaries.to(x.device)
    bsize = resolve_block_size(block_size, n, x.device)
    # bin bins + 2 collects the diagonal and lower triangle of each strip's diagonal block
    total = torch.zeros(bins + 3, dtype=torch.int64, device=x.device)
    for i0, i1, s in iter_similarity_strips(x, bsize):
        rows = i1 - i0
        # A similarity is at most 1; float32 rounding can exceed it by an ulp (two equal rows):
        # such a pair belongs in the bin of 1, not in the overflow.
        s.clamp_(-1.0, 1.0)
        idx = torch.bucketize(s, boundaries, right=True)
        lower = torch.ones(rows, rows, dtype=torch.bool, device=x.device).tril_()
        idx[:, :rows].masked_fill_(lower, bins + 2)
        total += torch.bincount(idx.view(-1), minlength=bins + 3)
    total = total[: bins + 2]
    total = total.cpu()
    return SimilarityHistogram(
        edges=edges,
        counts=total[1:-1].clone(),
        underflow=int(total[0]),
        overflow=int(total[-1]),
    )
