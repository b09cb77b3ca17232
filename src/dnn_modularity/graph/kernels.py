"""Which matmuls compute the similarities: float32 (numpy's or torch's), or a bf16/fp16 screen.

Two choices are made per call: whether a low-precision screen computes the strips (by the device's
capability and a one-time micro-benchmark), and which library computes the symmetric float32
products (by the device). Whichever way either goes, the selected neighbours are exact (see
:func:`~dnn_modularity.graph.knn.knn_keys`); only the speed differs.

**The screen.** A low-precision screen (:mod:`~dnn_modularity.graph.screen`) pays only where its
matmul is much faster than float32: ~3-4× on CPUs with AMX/AVX-512 bf16 units, far more on GPU
tensor cores, but 2-8× *slower* on CPUs without bf16 units (AVX2-only x86, many ARM cores), where
torch emulates it. So a small float32 and low-precision matmul of the call's own rows is timed on
the first call, cached per device, dtype and shape class (the inner dimension, as a power of two),
so later calls pay nothing; the screen is used only where it is at least :data:`SPEEDUP_NEEDED`
times faster.

**The symmetric float32 products.** The diagonal blocks X_I X_Iᵀ of the strips (and the whole
matrix on the dense route of small problems) are symmetric: a BLAS ``syrk`` computes only their
upper triangle. torch has no ``syrk``; numpy has: ``a @ a.T`` on a C-contiguous float32 array
calls the ``syrk`` of numpy's BLAS (OpenBLAS, MKL, Accelerate) and mirrors the triangle; the
dense route's whole matrix calls scipy's ``ssyrk`` and mirrors it in cache-sized blocks instead
(:func:`symmetric_product`). It is used where torch runs on one CPU thread: there it is faster
than torch's triangular sub-strips (which still compute the small diagonal sub-blocks in full;
measured on an AVX-512 Xeon: 404 against 423 ms at N = 2000, D = 8192, 74 against 86 ms for the
whole k-NN call at N = 500, D = 16,384). With several threads torch's sub-strips are used: numpy's
BLAS keeps its own thread pool, whose threads spin on the cores that torch's threads need next
(measured on 2 cores, 2 threads each: 80 ms with numpy's syrk against 53 ms with torch's
sub-strips for that call), and its thread count follows ``OPENBLAS_NUM_THREADS`` /
``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``, not ``torch.set_num_threads``. GPUs and the screens'
bf16/fp16 rows always use torch's sub-strips.

The micro-benchmark costs at most ~1 % of the call it decides for: it is sized to 1/4000 of the
call's multiply-adds per run (three runs of float32, at most three of each candidate), and only
calls of at least :data:`MIN_PROBE_CALL` multiply-adds run it (a low-precision kernel's one-time
compilation must fit the budget too); smaller calls use float32.

**GPUs** decide by capability and call size, without timing (:func:`choose_on_gpu`). A timed
probe cannot stay within 1 % there: measured on an H200, a 128-row product takes the ~15-35 µs
of a launch whatever its dtype (it times the launch, not the arithmetic), and a 1024-row probe
timed with CUDA events still read bf16 at 1.13-1.35× float32 (9-14× for products from
2048 × 2048 × 2048) and cost 0.18 s on the first call of a process, more than the k-NN calls it
decided for (0.15-0.24 s at N = 50,000-100,000). NVIDIA GPUs have fp16 tensor cores from compute
capability 7.0 and bf16 ones from 8.0; the screen uses fp16 where it has them (its error bound
is 8× tighter than bf16's at the same speed, so fewer candidates are recomputed: measured 0.46×
against bf16's 0.56× of the float32 time at N = 50,000, D = 2048) for calls of at least
:data:`CUDA_MIN_SCREEN_CALL` multiply-adds.

Override the screen with the ``kernel`` argument of the graph functions or the environment
variable :data:`KERNEL_ENV` (the argument wins): ``"auto"``, ``"float32"``, ``"bfloat16"``,
``"float16"``; the symmetric products with :data:`SYMMETRIC_ENV` (``"numpy"`` or ``"torch"``,
for CPU float32 rows whatever the thread count).
Every route gives the exact k-NN graph of the float32 similarities it computes; routes may differ
in the last bit of a similarity (another summation order), never more.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

# numpy (and scipy) only for BLAS ``syrk`` (torch has no symmetric rank-k product, and computing
# the full X_I X_Iᵀ costs twice the work) and the CPU dense route's small-array steps.
import numpy as np
import torch
from torch import Tensor

from dnn_modularity.graph.validation import KERNELS, check_kernel

if TYPE_CHECKING:  # pragma: no cover - typing only
    from dnn_modularity.graph.screen import LowPrecisionRows

KERNEL_ENV = "DNN_MODULARITY_KERNEL"
"""Environment variable that sets the default kernel (one of :data:`KERNELS`)."""

SCREEN_DTYPES: dict[str, torch.dtype] = {"bfloat16": torch.bfloat16, "float16": torch.float16}

SPEEDUP_NEEDED = 1.5
"""The screen's matmul must be this many times faster than float32: the screen also converts the
rows and recomputes its candidates in float32 (measured overhead ~20-35 % of its matmul time)."""

PROBE_SHARE = 1 / 4000
"""Multiply-adds of one probe matmul, as a share of the call's N²·D/2 (see the module doc)."""

PROBE_ROWS = 128
"""Rows and columns of the probe matmul (its inner dimension is sized to the budget)."""

MIN_PROBE_DIM = 64
"""Smallest inner dimension worth timing; a call that cannot afford it uses float32."""

MIN_PROBE_CALL = 1.5e11
"""Multiply-adds (N²·D/2) of the smallest call that probes: ~3 s of float32 work at 50 GMAC/s.
The first low-precision matmul of a shape can compile a kernel (oneDNN's bf16: ~25-60 ms on a
Xeon), a one-time cost that must stay under 1 % of the call; smaller calls use float32."""

MAX_PROBE_DIM = 2048
"""Inner dimensions above this run at the same speed: they share one shape class."""

CUDA_MIN_SCREEN_CALL = 3e11
"""Multiply-adds (N²·D/2) of the smallest GPU call that screens: below it the screen's per-strip
steps cost about what its faster matmul saves. Measured on an H200, fp16 screen / float32 time:
0.66 at N = 10,000, D = 8192 (4.1·10¹¹; twice), 0.46 and 0.54 at 2.6 and 5.1·10¹²; but 0.77-1.08
at N = 20,000, D = 1024 (2.0·10¹¹; two runs), 0.83 and 1.03 at 1.0·10¹¹, 5.7 at 1.6·10¹⁰."""

SYMMETRIC_ENV = "DNN_MODULARITY_SYMMETRIC"
"""Environment variable that picks the symmetric float32 products' route (:data:`SYMMETRIC_ROUTES`;
unset = ``"numpy"`` where torch runs on one CPU thread, else ``"torch"``)."""

SYMMETRIC_ROUTES: tuple[str, ...] = ("numpy", "torch")

SpeedKey = tuple[str, str, int]
_SPEEDS: dict[SpeedKey, float] = {}
"""Measured seconds per multiply-add, by (device, dtype name, probe inner dimension)."""


@dataclass(frozen=True)
class KernelChoice:
    """The strip kernel chosen for one call.

    Attributes:
        dtype: The screen's dtype, or None for plain float32 strips.
        reason: Why, in a few words (shown by the benchmark).
        rows: The rows the choice's probe already converted to ``dtype`` (the strip sweep
            converts the rest into the same buffer), or None.
    """

    dtype: torch.dtype | None
    reason: str
    rows: LowPrecisionRows | None = field(default=None, compare=False, repr=False)

    @property
    def name(self) -> str:
        """``"float32"``, ``"bfloat16"`` or ``"float16"``."""
        return "float32" if self.dtype is None else str(self.dtype).removeprefix("torch.")


def resolve_kernel(kernel: str | None) -> str:
    """The requested kernel: ``kernel`` if given, else :data:`KERNEL_ENV`, else ``"auto"``.

    Raises:
        ValueError: An unknown kernel name (from either source); the message lists the valid ones.
    """
    if kernel is not None:
        return check_kernel(kernel)
    value = os.environ.get(KERNEL_ENV, "").strip().lower()
    if not value:
        return "auto"
    return check_kernel(value, f"{KERNEL_ENV} value")


def candidate_dtypes(device: torch.device) -> tuple[str, ...]:
    """Screen dtypes worth using on ``device``.

    CPUs: bf16 (AMX / AVX512-BF16 units where present; timed before use); torch's CPU float16
    matmul is not faster than float32 on common CPUs. NVIDIA GPUs, by compute capability: fp16
    tensor cores from 7.0 (Volta, Turing), bf16 from 8.0 (Ampere; earlier GPUs emulate bf16
    matmuls); none below. ROCm GPUs: both (matrix cores of the MI100 and later). TF32 is not
    used: its accumulation is not rigorously bounded here.
    """
    if device.type != "cuda":
        return ("bfloat16",)
    if torch.version.hip:
        return ("float16", "bfloat16")
    major, _ = torch.cuda.get_device_capability(device)
    return (("float16",) if major >= 7 else ()) + (("bfloat16",) if major >= 8 else ())


def choose_on_gpu(n: int, dim: int, device: torch.device) -> KernelChoice:
    """The ``"auto"`` screen on a GPU, by capability and call size (see the module doc).

    Args:
        n: Rows N of the call.
        dim: Their dimension D.
        device: The CUDA device.

    Returns:
        fp16 (else bf16) where the device has tensor cores for it and the call has at least
        :data:`CUDA_MIN_SCREEN_CALL` multiply-adds N²·D/2; float32 otherwise.
    """
    candidates = candidate_dtypes(device)
    if not candidates:
        return KernelChoice(None, "no fp16/bf16 tensor cores on this GPU")
    if n * n * dim / 2 < CUDA_MIN_SCREEN_CALL:
        return KernelChoice(None, "call too small for a GPU screen to pay")
    name = candidates[0]
    return KernelChoice(SCREEN_DTYPES[name], f"{name} tensor cores")


def clear_speed_cache() -> None:
    """Forget every measured matmul speed (the next call measures again)."""
    _SPEEDS.clear()


def speed_table() -> dict[SpeedKey, float]:
    """A copy of the measured seconds per multiply-add, by (device, dtype, inner dimension)."""
    return dict(_SPEEDS)


def probe_dim(n: int, dim: int) -> int | None:
    """Inner dimension of the micro-benchmark for an (N, D) call, or None if it cannot afford one.

    The largest power of two <= min(D, :data:`MAX_PROBE_DIM`) whose PROBE_ROWS² × it
    multiply-adds fit :data:`PROBE_SHARE` of the call's N²·D/2; None below
    :data:`MIN_PROBE_CALL`.
    """
    call = n * n * dim / 2
    limit = min(dim, MAX_PROBE_DIM, call * PROBE_SHARE / PROBE_ROWS**2)
    if limit < MIN_PROBE_DIM or call < MIN_PROBE_CALL:
        return None
    return 1 << (int(limit).bit_length() - 1)


@contextmanager
def strict_matmul_precision() -> Iterator[None]:
    """Run matmuls in true float32 (and bf16 with float32 accumulation) inside the ``with``.

    ``torch.set_float32_matmul_precision("high"/"medium")`` (common in Lightning scripts) makes
    float32 matmuls use TF32 on GPUs and bf16 on CPUs, and CUDA may reduce bf16 products in bf16;
    either would change which neighbours are selected. The previous settings are restored on exit.
    """
    precision = torch.get_float32_matmul_precision()
    cuda_matmul = torch.backends.cuda.matmul
    reduced = cuda_matmul.allow_bf16_reduced_precision_reduction
    torch.set_float32_matmul_precision("highest")
    cuda_matmul.allow_bf16_reduced_precision_reduction = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(precision)
        cuda_matmul.allow_bf16_reduced_precision_reduction = reduced


def symmetric_route() -> str:
    """The symmetric products' route for CPU float32 rows (see the module doc).

    :data:`SYMMETRIC_ENV` if set, else ``"numpy"`` where torch runs on one thread
    (``torch.get_num_threads() == 1``), else ``"torch"``.

    Raises:
        ValueError: An unknown route in the environment variable; the message lists the valid ones.
    """
    value = os.environ.get(SYMMETRIC_ENV, "").strip().lower()
    if not value:
        return "numpy" if torch.get_num_threads() == 1 else "torch"
    if value not in SYMMETRIC_ROUTES:
        raise ValueError(
            f"unknown {SYMMETRIC_ENV} value {value!r}; valid values are "
            f"{', '.join(SYMMETRIC_ROUTES)}"
        )
    return value


def symmetric_product(rows: Tensor, out: Tensor) -> bool:
    """Write rows·rowsᵀ into ``out`` by a BLAS ``syrk`` where that route applies.

    The route applies to contiguous float32 CPU ``rows`` and an ``out`` whose rows are contiguous
    (a column block of a larger row-major strip is fine: numpy passes its row stride to BLAS as
    the leading dimension, so the product is written in place). A whole contiguous ``out`` (the
    dense route's matrix) takes scipy's ``ssyrk`` and :func:`mirror_lower`, a column block numpy's
    ``a @ a.T``. Either computes one triangle and copies it: ``out`` is exactly symmetric.

    Args:
        rows: (R, D) rows (float32 for this route).
        out: (R, R) float32 output view with unit column stride.

    Returns:
        True when the product was written, False when the route does not apply (another dtype or
        device, non-contiguous rows, or :data:`SYMMETRIC_ENV` = ``"torch"``): the caller computes
        it with torch.
    """
    if not (
        rows.device.type == "cpu"
        and rows.dtype == torch.float32
        and out.dtype == torch.float32
        and rows.is_contiguous()
        and out.stride(1) == 1
        and symmetric_route() == "numpy"
    ):
        return False
    a, c = rows.detach().numpy(), out.detach().numpy()
    if c.flags.c_contiguous:
        _syrk_lower(a, c)
        mirror_lower(c)
    else:
        # a and a.T share one buffer: numpy's matmul recognises X·Xᵀ and calls syrk
        np.matmul(a, a.T, out=c)
    return True


MIRROR_BLOCK = 128
"""Rows per step of :func:`mirror_lower`: the transposed copies stay within the cache."""


@functools.cache
def _upper_mask(size: int) -> np.ndarray:
    """A read-only bool (size, size) mask, True strictly above the diagonal (cached, shared)."""
    mask = np.triu(np.ones((size, size), dtype=bool), 1)
    mask.flags.writeable = False
    return mask


def _syrk_lower(a: np.ndarray, c: np.ndarray) -> None:
    """Write the lower triangle (diagonal included) of a·aᵀ into C-contiguous ``c`` by BLAS ssyrk.

    scipy's ``ssyrk`` on aᵀ (Fortran order, no copy) writes the upper triangle of the Fortran-order
    view of ``c``, which is the lower triangle of ``c``; the rest of ``c`` is left as it was.
    numpy's ``a @ a.T`` calls the same kind of syrk but then mirrors the triangle element by
    element with strided reads: 0.25-0.37 ms of a 2 ms product at N = 500, D = 512 on a Xeon,
    against 0.12 ms for :func:`mirror_lower`. scipy is a dependency of scikit-learn, imported
    here on first use.
    """
    from scipy.linalg import blas  # 0.25 s to import: only on this route

    result = blas.ssyrk(1.0, a.T, trans=1, c=c.T, overwrite_c=1)
    if not np.shares_memory(result, c):  # a layout f2py had to copy: write it back
        c.T[...] = result


def mirror_lower(c: np.ndarray) -> None:
    """Copy the lower triangle of square ``c`` onto its upper triangle, in place (exact).

    Blocks of :data:`MIRROR_BLOCK` rows: the strip right of each diagonal block is the transpose
    of the column block below it, and the diagonal block's upper part is the transpose of its
    lower part.

    Args:
        c: (N, N) array whose lower triangle (diagonal included) is set.
    """
    n = c.shape[0]
    for i0 in range(0, n, MIRROR_BLOCK):
        i1 = min(n, i0 + MIRROR_BLOCK)
        c[i0:i1, i1:] = c[i1:, i0:i1].T
        block = c[i0:i1, i0:i1]
        np.copyto(block, block.T, where=_upper_mask(i1 - i0))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_matmul(a: Tensor, b: Tensor, runs: int, stop_above: float | None) -> float:
    """Smallest wall time of ``runs`` products a·bᵀ after one warm-up run (seconds).

    Stops early when a timed run exceeds ``stop_above`` seconds (clearly too slow to matter).
    """
    out = torch.empty(a.shape[0], b.shape[0], dtype=a.dtype, device=a.device)
    torch.mm(a, b.T, out=out)  # warm-up: thread pools, JIT-compiled kernels, caches
    _sync(a.device)
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        torch.mm(a, b.T, out=out)
        _sync(a.device)
        best = min(best, time.perf_counter() - start)
        if stop_above is not None and best > stop_above:
            break
    return best


def measure_speeds(x: Tensor, kdim: int) -> dict[str, float]:
    """Seconds per multiply-add of float32 and each candidate dtype, timed on ``x``'s own rows.

    Results are cached per (device, dtype, ``kdim``); only missing entries are measured.

    Args:
        x: float32 (N, D) rows (the first 2·PROBE_ROWS are used; fewer rows are reused).
        kdim: The probe's inner dimension (see :func:`probe_dim`), <= D.

    Returns:
        ``{dtype name: seconds per multiply-add}`` for ``"float32"`` and the candidates.
    """
    device = x.device
    dev = str(device)
    rows = x[: 2 * PROBE_ROWS, :kdim]
    a, b = rows[:PROBE_ROWS], rows[-PROBE_ROWS:]
    macs = a.shape[0] * b.shape[0] * kdim
    names = ("float32", *candidate_dtypes(device))
    speeds: dict[str, float] = {}
    with strict_matmul_precision():
        for name in names:
            key = (dev, name, kdim)
            if key not in _SPEEDS:
                dtype = torch.float32 if name == "float32" else SCREEN_DTYPES[name]
                # a candidate already 2× slower than needed is not timed further
                slow = None
                if name != "float32":
                    slow = 2 * _SPEEDS[(dev, "float32", kdim)] * macs / SPEEDUP_NEEDED
                seconds = _time_matmul(a.to(dtype), b.to(dtype), 2, slow)
                _SPEEDS[key] = seconds / macs
            speeds[name] = _SPEEDS[key]
    return speeds


def choose_by_speed(x: Tensor, kernel: str) -> KernelChoice:
    """The strip kernel for float32 rows ``x`` (N, D): forced, or by measured speed (``"auto"``).

    On GPUs ``"auto"`` decides by capability and call size instead (:func:`choose_on_gpu`).

    Args:
        x: float32 (N, D) row-normalised features.
        kernel: One of :data:`KERNELS` (see :func:`resolve_kernel`).

    Returns:
        The :class:`KernelChoice`; for ``"auto"`` the screen's dtype is the fastest candidate
        that is at least :data:`SPEEDUP_NEEDED` times faster than float32, else None.
    """
    check_kernel(kernel)
    if kernel != "auto":
        dtype = SCREEN_DTYPES.get(kernel)
        return KernelChoice(dtype, f"{kernel} requested")
    n, dim = x.shape
    if x.device.type == "cuda":
        return choose_on_gpu(n, dim, x.device)
    kdim = probe_dim(n, dim)
    if kdim is None:
        return KernelChoice(None, "call too small to time a screen")
    speeds = measure_speeds(x, kdim)
    fp32 = speeds.pop("float32")
    name, fastest = min(speeds.items(), key=lambda item: item[1])
    ratio = fp32 / fastest
    if ratio < SPEEDUP_NEEDED:
        return KernelChoice(None, f"{name} matmul only {ratio:.2f}x float32's speed")
    return KernelChoice(SCREEN_DTYPES[name], f"{name} matmul {ratio:.1f}x float32's speed")


__all__ = [
    "KERNELS",
    "KERNEL_ENV",
    "SYMMETRIC_ENV",
    "SYMMETRIC_ROUTES",
    "KernelChoice",
    "choose_by_speed",
    "choose_on_gpu",
    "clear_speed_cache",
    "measure_speeds",
    "resolve_kernel",
    "speed_table",
    "strict_matmul_precision",
    "symmetric_product",
    "symmetric_route",
]
