"""Wall-clock accounting of what a callback adds to ``trainer.fit`` (its logged overhead).

A callback's cost is not only its main measurement: drawing its probe set in ``setup``, writing
its records, logging, and the figures it draws at the end of training all lengthen the fit. The
:class:`OverheadClock` sums the wall time of every hook body the callback wraps in
:meth:`OverheadClock.timed` and times the whole fit from the callback's first hook (``setup``)
to its last (``on_fit_end``), so that

    overhead = own seconds / (fit seconds − own seconds)

is the share the callback adds to the same fit without it: what an on/off comparison of fit
times measures (``benchmarks/bench_monitor.py`` checks that the two agree).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

HookT = TypeVar("HookT", bound=Callable[..., Any])


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

    def start_fit(self) -> None:
        """Start the fit clock and forget the parts of an earlier fit."""
        self.parts = {}
        self.fit_seconds = None
        self._fit_start = time.perf_counter()

    def end_fit(self) -> None:
        """Stop the fit clock (the callback's last hook of the fit)."""
        if self._fit_start is not None:
            self.fit_seconds = time.perf_counter() - self._fit_start

    @contextmanager
    def timed(self, part: str) -> Iterator[None]:
        """Add the wall time of the ``with`` body to ``parts[part]`` (also when it raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.parts[part] = self.parts.get(part, 0.0) + time.perf_counter() - start

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


__all__ = ["OverheadClock", "timed_hook"]
