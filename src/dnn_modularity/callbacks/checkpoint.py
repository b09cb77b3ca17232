"""`EpochCheckpoint`: checkpoints named by completed epochs, optionally with the initialisation.

For the training-dynamics analysis (paper 1 Sec. 4.3: "we save the model file ... of every
epoch") the file name should say which weights it holds. Lightning's `{epoch}` field is the 0-based
index of the epoch that just finished; this subclass adds `{epochs_done}` (= that index + 1, the
same convention as `ModularityMonitor`'s epoch column: 0 = initialisation) and can save the
initial weights as epoch 0.
"""

from __future__ import annotations

import os
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["EpochCheckpoint"]


class EpochCheckpoint(ModelCheckpoint):
    """`ModelCheckpoint` with an `{epochs_done}` filename field and an optional epoch-0 save.

    Args:
        *args: Passed to `ModelCheckpoint`.
        save_init: Also save the weights at the start of training (a fresh run only) under the
            file name formatted with `epochs_done=0`.
        **kwargs: Passed to `ModelCheckpoint` (e.g. `every_n_epochs=1, save_top_k=-1`,
            `filename="epoch_{epochs_done:03d}"`).
    """

    def __init__(self, *args: Any, save_init: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.save_init = bool(save_init)

    def format_checkpoint_name(
        self,
        metrics: dict[str, Any],
        filename: str | None = None,
        ver: int | None = None,
        prefix: str | None = None,
    ) -> str:
        """Lightning's formatting, with `epochs_done` = `epoch` + 1 available to the template."""
        if "epoch" in metrics:
            metrics = {**metrics, "epochs_done": int(metrics["epoch"]) + 1}
        return super().format_checkpoint_name(metrics, filename=filename, ver=ver, prefix=prefix)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Save the initial weights (epochs_done = 0) when asked and training starts fresh."""
        super().on_train_start(trainer, pl_module)
        if not self.save_init or trainer.current_epoch != 0 or trainer.fast_dev_run:
            return
        if self.dirpath is None:
            return
        name = self.format_checkpoint_name({"epoch": -1, "step": 0})
        # `save_checkpoint` is collective under DDP (rank 0 writes), so every rank calls it.
        # A full checkpoint, like the callback's own saves (Lightning logs a notice when unset).
        trainer.save_checkpoint(os.fspath(name), weights_only=self.save_weights_only)
