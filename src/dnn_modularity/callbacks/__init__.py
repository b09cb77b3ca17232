"""Lightning callbacks: per-epoch modularity curves and per-epoch checkpoints.

`ModularityMonitor` measures per-layer modularity during training; `EpochCheckpoint` names
checkpoints by completed epochs (for the training-dynamics analysis); `EpochProgress` logs a
fit's progress (epochs done, ETA) where a progress bar cannot be seen.
"""

from dnn_modularity.callbacks.checkpoint import EpochCheckpoint
from dnn_modularity.callbacks.modularity import ModularityMonitor, rows_to_matrix
from dnn_modularity.callbacks.progress import EpochProgress

__all__ = ["EpochCheckpoint", "EpochProgress", "ModularityMonitor", "rows_to_matrix"]
