"""Lightning callbacks: per-epoch modularity curves and per-epoch checkpoints.

`ModularityMonitor` measures per-layer modularity during training; `EpochCheckpoint` names
checkpoints by completed epochs (for the training-dynamics analysis).
"""

from dnn_modularity.callbacks.checkpoint import EpochCheckpoint
from dnn_modularity.callbacks.modularity import ModularityMonitor, rows_to_matrix

__all__ = ["EpochCheckpoint", "ModularityMonitor", "rows_to_matrix"]
