"""`EpochProgress`: training progress (epochs done, ETA) as log lines, on a terminal or not.

Lightning's progress bar draws only on a terminal; under SLURM, ``| tee`` or in the run's
``<command>.log`` a fit is silent until it ends. This callback reports the fit through
:class:`dnn_modularity.progress.Progress`: a start line, a line every progress interval with the
epochs done and an ETA, and an end line with the duration (rank 0 only).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import Callback

from dnn_modularity.progress import Progress

__all__ = ["EpochProgress"]


class EpochProgress(Callback):
    """Log the start, the progress (epochs, ETA) and the end of ``trainer.fit``.

    Args:
        what: Start of every line, e.g. ``"fine-tune of the pruned network"``.
        interval_s: Seconds between progress lines (None: the package default).
    """

    def __init__(self, what: str = "training", interval_s: float | None = None) -> None:
        super().__init__()
        self.what = what
        self.interval_s = interval_s
        self._progress: Progress | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start the clock: the epochs still to run (a resumed fit counts from its epoch)."""
        total = None
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            total = max(0, int(trainer.max_epochs) - int(trainer.current_epoch))
        self._progress = Progress(
            self.what,
            total,
            unit="epochs",
            interval_s=self.interval_s,
            enabled=trainer.is_global_zero,
        ).__enter__()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """One more epoch done."""
        if self._progress is not None:
            self._progress.advance()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """The end line, with the duration."""
        self._close(None)

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        """A failed fit ends its progress too (and stops its timer)."""
        self._close(type(exception))

    def _close(self, error: type[BaseException] | None) -> None:
        progress, self._progress = self._progress, None
        if progress is not None:
            progress.__exit__(error, None, None)

    def state_dict(self) -> dict[str, Any]:
        """Nothing to save: progress restarts with each fit."""
        return {}
