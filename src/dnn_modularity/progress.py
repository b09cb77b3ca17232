"""Progress of long work as log lines: a start line, periodic progress with an ETA, an end line.

Progress bars (rich, tqdm, Lightning's) draw only on a terminal: a SLURM log, ``| tee`` or the
run's ``<command>.log`` (Hydra's job logging) see nothing of them. Every long step of the
package (each attack, each analysis pass over the layers, each fine-tune, figure writing)
therefore reports through :mod:`logging` (logger ``dnn_modularity.progress``), which Hydra sends
to the console and to the run folder's log file alike::

    with Progress("PGD attack", total=500, unit="images") as progress:
        for chunk in chunks:
            ...
            progress.advance(len(chunk))

    for layer in track(layers, "ring graphs", unit="layers"):
        ...

Lines: ``<what>: started (500 images)``; every :data:`DEFAULT_INTERVAL_S` seconds
``<what>: 120/500 images (24%), 31 s elapsed, ETA 1 min 38 s`` (from a background timer, so a
step longer than the interval is still reported; of nested blocks only the innermost one
writes these lines); ``<what>: done in 2 min 09 s (500 images)`` or ``<what>: failed after
12.0 s (ValueError)``. ``quiet=True`` logs only work that outlasts the interval (for steps that
are usually short, e.g. one modularity measurement per epoch).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import TypeVar

__all__ = ["DEFAULT_INTERVAL_S", "Progress", "format_seconds", "track"]

#: Seconds between two progress lines (env ``DNN_MODULARITY_PROGRESS_S`` overrides it).
DEFAULT_INTERVAL_S = 15.0

LOGGER = logging.getLogger("dnn_modularity.progress")

# Progress blocks now running, outermost first. Only the innermost one writes periodic lines:
# an analysis that runs an attack that runs a curve reports one line per interval, not three.
_ACTIVE: list[Progress] = []
_ACTIVE_LOCK = threading.Lock()

T = TypeVar("T")


def _default_interval() -> float:
    raw = os.environ.get("DNN_MODULARITY_PROGRESS_S")
    if not raw:
        return DEFAULT_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(
            f"DNN_MODULARITY_PROGRESS_S={raw!r} is not a number of seconds (e.g. 15)"
        ) from None
    if not value > 0:
        raise ValueError(f"DNN_MODULARITY_PROGRESS_S={raw!r} must be > 0 seconds")
    return value


def format_seconds(seconds: float) -> str:
    """``4.2 s``, ``3 min 05 s``, ``2 h 07 min`` (``?`` for NaN/inf)."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


class Progress:
    """Context manager that logs the start, the progress (with an ETA) and the end of a step.

    Args:
        what: What runs, e.g. ``"CW attack"`` (the start of every line).
        total: Number of units to do (None: unknown, no percentage or ETA).
        unit: Name of the units (``"images"``, ``"layers"``, ``"epochs"``).
        interval_s: Seconds between progress lines (default :data:`DEFAULT_INTERVAL_S` or the
            ``DNN_MODULARITY_PROGRESS_S`` environment variable).
        quiet: Log nothing unless the step outlasts ``interval_s`` (then progress lines and the
            end line).
        enabled: False logs nothing at all (e.g. on DDP ranks other than 0).
        logger: Logger to use (default ``dnn_modularity.progress``).

    Attributes:
        done: Units done so far.
        seconds: Seconds since the start (final after the ``with`` block).
    """

    def __init__(
        self,
        what: str,
        total: int | None = None,
        *,
        unit: str = "steps",
        interval_s: float | None = None,
        quiet: bool = False,
        enabled: bool = True,
        logger: logging.Logger | None = None,
    ) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.interval_s = _default_interval() if interval_s is None else float(interval_s)
        if not self.interval_s > 0:
            raise ValueError(f"interval_s={interval_s} must be > 0 seconds")
        self.quiet, self.enabled = bool(quiet), bool(enabled)
        self.logger = logger or LOGGER
        self.done = 0
        self._start = 0.0
        self._end: float | None = None
        self._reported = False
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None

    # --- state ---------------------------------------------------------------------------------
    @property
    def seconds(self) -> float:
        """Seconds since the start (until the end once the block has exited)."""
        end = self._end if self._end is not None else time.perf_counter()
        return end - self._start

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more units as done."""
        self.done += int(n)

    def status(self) -> str:
        """``120/500 images (24%), 31 s elapsed, ETA 1 min 38 s`` (what a progress line says)."""
        elapsed = self.seconds
        if self.total:
            share = self.done / self.total
            text = f"{self.done}/{self.total} {self.unit} ({100 * share:.0f}%)"
        else:
            text = f"{self.done} {self.unit}"
        text += f", {format_seconds(elapsed)} elapsed"
        if self.total and 0 < self.done < self.total:
            text += f", ETA {format_seconds(elapsed * (self.total - self.done) / self.done)}"
        elif self.total and self.done == 0:
            text += ", no ETA yet"
        return text

    # --- context manager -----------------------------------------------------------------------
    def __enter__(self) -> Progress:
        self._start = time.perf_counter()
        if not self.enabled:
            return self
        if not self.quiet:
            size = f" ({self.total} {self.unit})" if self.total is not None else ""
            self.logger.info("%s: started%s", self.what, size)
        with _ACTIVE_LOCK:
            _ACTIVE.append(self)
        self._timer = threading.Thread(
            target=self._tick, name=f"progress: {self.what}", daemon=True
        )
        self._timer.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._end = time.perf_counter()
        self._stop.set()
        if self._timer is not None:
            self._timer.join()
            with _ACTIVE_LOCK:
                if self in _ACTIVE:
                    _ACTIVE.remove(self)
        if not self.enabled or (self.quiet and not self._reported):
            return
        took = format_seconds(self.seconds)
        if exc_type is GeneratorExit:  # a `track` loop left early (break, or an error outside)
            self.logger.info("%s: stopped after %s (%s)", self.what, took, self.status())
        elif exc_type is not None:
            self.logger.info("%s: failed after %s (%s)", self.what, took, exc_type.__name__)
        else:
            amount = f" ({self.done} {self.unit})" if self.done or self.total else ""
            self.logger.info("%s: done in %s%s", self.what, took, amount)

    def _tick(self) -> None:
        # One line per interval from a timer, so that a single step longer than the interval
        # (one attack batch, one big graph) still shows that the command is alive.
        while not self._stop.wait(self.interval_s):
            with _ACTIVE_LOCK:
                innermost = bool(_ACTIVE) and _ACTIVE[-1] is self
            if innermost:
                self._reported = True
                self.logger.info("%s: %s", self.what, self.status())


def track(
    items: Iterable[T],
    what: str,
    total: int | None = None,
    *,
    unit: str = "steps",
    interval_s: float | None = None,
    quiet: bool = False,
    enabled: bool = True,
    logger: logging.Logger | None = None,
) -> Iterator[T]:
    """Iterate over ``items`` inside a :class:`Progress` that advances once per item.

    Args:
        items: What to iterate over.
        what: Start of every line.
        total: Number of items (default ``len(items)`` when it has one).
        unit: Name of the units, as for :class:`Progress`.
        interval_s: Seconds between progress lines, as for :class:`Progress`.
        quiet: Log only work that outlasts ``interval_s``, as for :class:`Progress`.
        enabled: False logs nothing.
        logger: Logger to use (default ``dnn_modularity.progress``).

    Yields:
        The items.
    """
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(
        what,
        total,
        unit=unit,
        interval_s=interval_s,
        quiet=quiet,
        enabled=enabled,
        logger=logger,
    ) as progress:
        for item in items:
            yield item
            progress.advance()
