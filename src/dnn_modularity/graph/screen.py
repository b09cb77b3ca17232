"""bf16/fp16 screening of similarity strips with a rigorous bound, and exact float32 recomputation.

A bf16 matmul runs ~3-4× faster than float32 on CPUs with AMX bf16 units (and far faster on GPU
tensor cores; it is *slower* on CPUs without bf16 units: :mod:`~dnn_modularity.graph.kernels`
decides). Its results are within a provable distance of the float32 similarities, so every entry
that could be among a row's k nearest neighbours can be found from the screened strip and then
recomputed in float32: the selection stays exact.
"""

from __future__ import annotations

import time
import warnings
from typing import ClassVar

import torch
from torch import Tensor

# Significand bits (with the implicit one) of the screen dtypes: a value rounded to one of them
# is within a relative 2^-bits of where it was.
_SIGNIFICAND_BITS = {torch.bfloat16: 8, torch.float16: 11}


class ScreenBound:
    """Maps between screened (low-precision matmul) similarities and exact float32 ones.

    With x = x_b + x_r (x_b the rounding of a unit row x to the screen dtype, ||x_r|| <= r_max,
    measured) and ||x_b|| <= 1 + u (u = 2^-p the dtype's unit roundoff: 2⁻⁸ bf16, 2⁻¹¹ fp16), the
    identity x·y = x_b·y_b + x_b·y_r + x_r·y gives |x·y − x_b·y_b| <= (1 + u)·r_y + r_x <=
    2.01·r_max. The matmul accumulates in float32: at most D·a·(1 + u)² with a = 2⁻²⁴ on CPUs,
    and a = 2⁻²² on GPUs (tensor cores may truncate instead of rounding); the float32
    recomputation adds at most D·2⁻²⁴ (ε = the sum, plus 2⁻²⁰ for the rounding of these very
    bounds, plus 2⁻²⁴ for fp16's subnormal outputs). The matmul's output o in the screen dtype is
    within ρ = u/(1 − u)·|o| of its float32 accumulator. Hence exact ∈ [o − ρ|o| − ε, o + ρ|o| + ε].
    With ``r_max = None`` the bound is the identity (exact float32 strips).
    """

    def __init__(
        self,
        dim: int,
        r_max: float | None,
        dtype: torch.dtype = torch.bfloat16,
        device_type: str = "cpu",
    ) -> None:
        if r_max is None:
            self.eps, self.rho = 0.0, 0.0
            return
        unit = 2.0 ** -_SIGNIFICAND_BITS[dtype]
        accumulation = 2.0**-24 if device_type == "cpu" else 2.0**-22
        self.eps = 2.01 * r_max + dim * (accumulation * (1 + unit) ** 2 + 2.0**-24) + 2.0**-20
        if dtype == torch.float16:
            self.eps += 2.0**-24
        self.rho = unit / (1.0 - unit)

    def lower(self, screened: Tensor) -> Tensor:
        """Lower bound on the exact similarity of entries with screened value ``screened``."""
        o = screened.to(torch.float32)
        if self.eps == 0.0:
            return o
        return o - self.rho * o.abs() - self.eps

    def limit(self, exact_lower: Tensor) -> Tensor:
        """Smallest screened value whose exact similarity can reach ``exact_lower`` (float32)."""
        if self.eps == 0.0:
            return exact_lower
        t = exact_lower - self.eps  # o + ρ|o| >= t  <=>  o >= t/(1+ρ) (t >= 0) or t/(1-ρ)
        return torch.where(t >= 0, t / (1.0 + self.rho), t / (1.0 - self.rho))


def round_down(limit: Tensor, dtype: torch.dtype) -> Tensor:
    """float32 ``limit`` as ``dtype``, rounded down, so ``v >= result`` whenever ``v >= limit``."""
    if dtype == torch.float32:
        return limit
    bits = _SIGNIFICAND_BITS[dtype]
    # one relative step of the significand below (and, for fp16, a subnormal step), then round to
    # nearest: never above
    tiny = 2.0**-120 if dtype == torch.bfloat16 else 2.0**-24
    lowered = limit - limit.abs() * 2.0 ** (1 - bits) - tiny
    return lowered.to(dtype)


class LowPrecisionRows:
    """A copy of unit (N, D) float32 rows in a screen dtype, converted on demand, row prefix first.

    The kernel choice's separation probe converts the first rows it needs; the strip sweep then
    converts the rest into the same buffer, so choosing the screen costs no second conversion.
    ``r_max`` is max_i ||x_i − low(x_i)|| over the rows converted so far (a bound for them).
    The buffer is allocated at once but its pages are only touched as rows are converted.

    Attributes:
        data: (N, D) tensor of ``dtype``; rows ``[0, done)`` are valid.
        done: Rows converted so far.
        r_max: The largest residual norm among them (0.0 before any).
        seconds: Wall time spent converting them.
    """

    # Rows per conversion chunk: ~2^17 entries, so the float32 residual of a chunk stays in a
    # CPU core's L2 cache (measured ~1.6x faster than 2^22-entry chunks); GPUs take large chunks.
    CHUNK_ENTRIES: ClassVar[dict[str, int]] = {"cpu": 2**17, "cuda": 2**22}

    def __init__(self, x: Tensor, dtype: torch.dtype = torch.bfloat16) -> None:
        self.x = x
        self.data = torch.empty(x.shape, dtype=dtype, device=x.device)
        self.done = 0
        self.r_max = 0.0
        self.seconds = 0.0

    def convert(self, rows: int) -> Tensor:
        """Convert rows up to ``rows`` (if not yet done); return ``data[:rows]``."""
        x, start = self.x, self.done
        if rows > start:
            clock = time.perf_counter()
            dim = max(1, x.shape[1])
            entries = self.CHUNK_ENTRIES.get(x.device.type, self.CHUNK_ENTRIES["cuda"])
            chunk = max(1, entries // dim)
            residual = torch.empty(min(chunk, rows - start), x.shape[1], device=x.device)
            norms = torch.empty(rows - start, device=x.device)
            for c0 in range(start, rows, chunk):
                c1 = min(rows, c0 + chunk)
                low = self.data[c0:c1]
                low.copy_(x[c0:c1])
                part = residual[: c1 - c0]
                torch.sub(x[c0:c1], low, out=part)  # float32 − low, in float32
                torch.linalg.vector_norm(part, dim=1, out=norms[c0 - start : c1 - start])
            self.r_max = max(self.r_max, float(norms.max()))  # (waits for a GPU's work)
            self.done = rows
            self.seconds += time.perf_counter() - clock
        return self.data[:rows]


def to_low_precision(x: Tensor, dtype: torch.dtype = torch.bfloat16) -> tuple[Tensor, float]:
    """Copy of (N, D) unit rows in ``dtype`` and r_max = max_i ||x_i − low(x_i)||.

    Converted in row chunks (:class:`LowPrecisionRows`), so no full-size float32 temporary is
    created.
    """
    rows = LowPrecisionRows(x, dtype)
    return rows.convert(x.shape[0]), rows.r_max


def to_bf16(x: Tensor) -> tuple[Tensor, float]:
    """bf16 copy of (N, D) unit rows and r_max (see :func:`to_low_precision`)."""
    return to_low_precision(x, torch.bfloat16)


def pair_similarities(x_rows: Tensor, x_cols: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """float32 dot products x_rows[rows] · x_cols[cols] for sorted ``rows``.

    A sampled dense-dense matmul (SDDMM, ``torch.sparse.sampled_addmm``) computes exactly these
    entries of x_rows x_colsᵀ with a per-entry dot product (no gathered copies); the value of an
    entry depends only on its two rows, so identical rows give identical similarities.

    Args:
        x_rows: float32 (R, D).
        x_cols: float32 (W, D).
        rows: LongTensor (P,) in [0, R), sorted ascending.
        cols: LongTensor (P,) in [0, W).

    Returns:
        float32 (P,).
    """
    if rows.numel() == 0:
        return torch.empty(0, dtype=torch.float32, device=x_rows.device)
    counts = torch.bincount(rows, minlength=x_rows.shape[0])
    crow = torch.zeros(x_rows.shape[0] + 1, dtype=torch.int64, device=rows.device)
    torch.cumsum(counts, 0, out=crow[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
        pattern = torch.sparse_csr_tensor(
            crow,
            cols,
            torch.zeros(rows.numel(), dtype=torch.float32, device=rows.device),
            size=(x_rows.shape[0], x_cols.shape[0]),
            check_invariants=False,
        )
        out = torch.sparse.sampled_addmm(pattern, x_rows, x_cols.T, beta=0.0)
    return out.values()
