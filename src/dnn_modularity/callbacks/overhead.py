"""Wall-clock accounting of what a callback adds to ``trainer.fit`` (its logged overhead).

A callback's cost is not only its main measurement: drawing its probe set in ``setup``, writing
its records, logging, and the figures it draws at the end of training all lengthen the fit. The
:class:`OverheadClock` sums the wall time of every hook body the callback wraps in
:meth:`OverheadClock.timed` and times the whole fit from the callback's first hook (``setup``)
to its last (``on_fit_end``), so that

    overhead = own seconds / (fit seconds − own seconds)

is the share the callback adds to the same fit without it: what an on/off comparison of fit
times measures (``benchmarks/bench_monitor.py`` checks that the two agree).

On a GPU the host returns from a kernel launch before the kernel has run, so a wall clock read
straight after a hook would bill the training's queued kernels to the callback (its first
synchronising op waits for them) and the callback's own queued kernels to the training. With
:meth:`OverheadClock.watch_device` set to the fit's CUDA (or MPS) device, every reading of the
clock first waits for the device: each part holds exactly the device work it queued. The wait
costs the fit nothing extra: the callback's first host read of a result would wait as long.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

HookT = TypeVar("HookT", bound=Callable[..., Any])


def device_synchronizer(device: torch.device | str | None) -> Callable[[], None] | None:
    """The function that waits for every kernel queued on ``device``, or None for the CPU.

    Args:
        device: A CUDA device (``torch.cuda.synchronize(device)``), an MPS device
            (``torch.mps.synchronize()``), or anything else (None: CPU work is synchronous).
    """
    if device is None:
        return None
    device = torch.device(device)
    if device.type == "cuda":
        return functools.partial(torch.cuda.synchronize, device)
    if device.type == "mps":
        return torch.mps.synchronize
    return None


class OverheadClock:
    """Own time of a callback, by part, against the wall time of the fit it runs in.

    Attributes:
        parts: Seconds spent in each part (e.g. ``"setup"``, ``"measure"``, ``"figures"``).
        fit_seconds: Wall time from :meth:`start_fit` to :meth:`end_fit` (None before the end;
            :meth:`summary` then uses the time so far).
    """

    def __init__(self) -> None:
        self.parts: dict[str, float] = {}
        self.fit_seconds: float | None = None
        self._fit_start: float | None = None
        self._synchronize: Callable[[], None] | None = None

    def watch_device(self, device: torch.device | str | None) -> None:
        """Wait for ``device``'s queued kernels at every reading of the clock (CUDA, MPS).

        Args:
            device: The device the fit runs on; a CPU device (or None) turns the waiting off.
        """
        self._synchronize = device_synchronizer(device)

    def now(self) -> float:
        """``time.perf_counter()`` once the watched device has finished its queued work."""
        if self._synchronize is not None:
            self._synchronize()
        return time.perf_counter()

    def start_fit(self) -> None:
        """Start the fit clock and forget the parts of an earlier fit."""
        self.parts = {}
        self.fit_seconds = None
        self._fit_start = self.now()

    def end_fit(self) -> None:
        """Stop the fit clock (the callback's last hook of the fit)."""
        if self._fit_start is not None:
            self.fit_seconds = self.now() - self._fit_start

    @contextmanager
    def timed(self, part: str) -> Iterator[None]:
        """Add the wall time of the ``with`` body to ``parts[part]`` (also when it raises).

        On a watched device the body's time includes the kernels it queued, not those queued
        before it.
        """
        start = self.now()
        try:
            yield
        finally:
            self.parts[part] = self.parts.get(part, 0.0) + self.now() - start

    @property
    def own_seconds(self) -> float:
        """Seconds spent in all parts."""
        return sum(self.parts.values())

    def summary(self) -> dict[str, float]:
        """``own_seconds``, ``fit_seconds``, ``overhead`` and ``<part>_seconds`` per part.

        ``overhead`` = own / (fit − own), NaN when no fit was timed.
        """
        fit = self.fit_seconds
        if fit is None and self._fit_start is not None:
            fit = time.perf_counter() - self._fit_start
        own = self.own_seconds
        without = (fit - own) if fit is not None else float("nan")
        out = {f"{part}_seconds": seconds for part, seconds in self.parts.items()}
        out["own_seconds"] = own
        out["fit_seconds"] = fit if fit is not None else float("nan")
        out["overhead"] = own / without if without > 0 else float("nan")
        return out


def timed_hook(part: str) -> Callable[[HookT], HookT]:
    """Decorate a callback hook: its wall time counts as ``part`` of ``self.overhead_clock``."""

    def decorate(hook: HookT) -> HookT:
        @functools.wraps(hook)
        def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
            with self.overhead_clock.timed(part):
                return hook(self, *args, **kwargs)

        return timed  # type: ignore[return-value]

    return decorate


__all__ = ["OverheadClock", "device_synchronizer", "timed_hook"]
