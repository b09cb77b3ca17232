"""Which matmul computes the similarity strips: float32, or a bf16/fp16 screen, by measured speed.

A low-precision screen (:mod:`~dnn_modularity.graph.screen`) pays only where its matmul is much
faster than float32: ~3-4× on CPUs with AMX/AVX-512 bf16 units, far more on GPU tensor cores, but
2-8× *slower* on CPUs without bf16 units (AVX2-only x86, many ARM cores), where torch emulates it.
So the choice is made from the device and a one-time micro-benchmark on the first call: a small
float32 and low-precision matmul of the call's own rows, timed, and cached per device, dtype and
shape class (the inner dimension, as a power of two), so later calls pay nothing. The screen is
used only where it is at least :data:`SPEEDUP_NEEDED` times faster. Whichever way the choice goes,
the selected neighbours are exact (see :func:`~dnn_modularity.graph.knn.knn_keys`); only the
speed differs.

The micro-benchmark costs at most ~1 % of the call it decides for: it is sized to 1/4000 of the
call's multiply-adds per run (three runs of float32, at most three of each candidate), and only
calls of at least :data:`MIN_PROBE_CALL` multiply-adds run it (a low-precision kernel's one-time
compilation must fit the budget too); smaller calls use float32.

Override with the ``kernel`` argument of the graph functions or the environment variable
:data:`KERNEL_ENV` (the argument wins): ``"auto"``, ``"float32"``, ``"bfloat16"``, ``"float16"``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from dnn_modularity.graph.similarity import strict_matmul_precision
from dnn_modularity.graph.validation import KERNELS, check_kernel

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

MAX_PROBE_DIM = 4096
"""Inner dimensions above this run at the same speed: they share one shape class."""

SpeedKey = tuple[str, str, int]
_SPEEDS: dict[SpeedKey, float] = {}
"""Measured seconds per multiply-add, by (device, dtype name, probe inner dimension)."""


@dataclass(frozen=True)
class KernelChoice:
    """The strip kernel chosen for one call.

    Attributes:
        dtype: The screen's dtype, or None for plain float32 strips.
        reason: Why, in a few words (shown by the benchmark).
    """

    dtype: torch.dtype | None
    reason: str

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
    """Screen dtypes worth timing on ``device``.

    CPUs: bf16 (AMX / AVX512-BF16 units where present); torch's CPU float16 matmul is not faster
    than float32 on common CPUs. CUDA: bf16 and fp16 tensor cores (TF32 is not used: its
    accumulation is not rigorously bounded here).
    """
    if device.type == "cuda":
        return ("bfloat16", "float16")
    return ("bfloat16",)


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
    "KernelChoice",
    "choose_by_speed",
    "clear_speed_cache",
    "measure_speeds",
    "resolve_kernel",
    "speed_table",
]
