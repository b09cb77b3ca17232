"""bf16 screening of similarity strips with a rigorous bound, and exact float32 recomputation.

A bf16 matmul runs ~2× faster than float32 on CPUs with bf16 dot-product units (and far faster on
GPUs). Its results are within a provable distance of the float32 similarities, so every entry that
could be among a row's k nearest neighbours can be found from the bf16 strip and then recomputed
in float32: the selection stays exact.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor


class ScreenBound:
    """Maps between screened (bf16 matmul) similarities and exact float32 ones.

    With x = x_b + x_r (x_b the bf16 rounding of a unit row x, ||x_r|| <= r_max, measured), the
    identity x·y = x_b·y_b + x_b·y_r + x_r·y gives |x·y − x_b·y_b| <= (1 + 2⁻⁸)·r_y + r_x <=
    2.01·r_max; float32 accumulation adds at most D·2⁻²⁴·(1 + 2⁻⁸)² in the bf16 matmul and
    D·2⁻²⁴ in the float32 recomputation (ε = the sum, plus 2⁻²⁰ for the rounding of these very
    bounds). The matmul's bf16 output o (8-bit significand) is within ρ = 2⁻⁸/(1 − 2⁻⁸)·|o| of
    its float32 accumulator. Hence exact ∈ [o − ρ|o| − ε, o + ρ|o| + ε]. With ``r_max = None`` the
    bound is the identity (exact float32 strips).
    """

    def __init__(self, dim: int, r_max: float | None) -> None:
        if r_max is None:
            self.eps, self.rho = 0.0, 0.0
        else:
            gamma = dim * 2.0**-24
            self.eps = 2.01 * r_max + gamma * 2.01 + 2.0**-20
            self.rho = 2.0**-8 / (1.0 - 2.0**-8)

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


def to_bf16(x: Tensor) -> tuple[Tensor, float]:
    """bf16 copy of (N, D) unit rows and r_max = max_i ||x_i − bf16(x_i)||.

    Converted in row chunks, so no full-size float32 temporary is created.
    """
    out = torch.empty(x.shape, dtype=torch.bfloat16, device=x.device)
    chunk = max(1, 2**22 // max(1, x.shape[1]))
    worst = torch.zeros((), dtype=torch.float32, device=x.device)
    for start in range(0, x.shape[0], chunk):
        part = x[start : start + chunk]
        low = out[start : start + chunk]
        low.copy_(part)
        residual = torch.linalg.vector_norm(part - low.to(torch.float32), dim=1)
        worst = torch.maximum(worst, residual.max())
    return out, float(worst)


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
