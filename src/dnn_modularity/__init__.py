"""dnn-modularity: how a CNN separates classes, layer by layer.

The per-layer measurement of Lu et al. (2022), "Understanding the Dynamics of DNNs Using Graph
Modularity": the Newman modularity of a k-NN graph of the samples' features with the classes as
communities, and the class-separation analyses of Yang et al., "Understanding the class separation
process of convolutional neural networks".
"""

from __future__ import annotations

import os
from pathlib import Path

__version__ = "0.1.0"

__all__ = ["__version__", "config_dir"]


def config_dir() -> Path:
    """The Hydra config folder every command composes from.

    In order: `$DNN_MODULARITY_CONF` when set; the checkout's top-level `conf/` (an editable
    install, or `PYTHONPATH=src`: users edit the configs there); else the copy shipped inside
    the installed package (`dnn_modularity/conf`, from a wheel or `pip install .`). Hydra's
    `--config-dir` still adds a folder in front of whichever this returns.

    Returns:
        The absolute folder holding `train.yaml`, `analyze.yaml`, `prune.yaml`, `report.yaml`.
    """
    env = os.environ.get("DNN_MODULARITY_CONF")
    if env:
        return Path(env).resolve()
    package = Path(__file__).resolve().parent
    checkout = package.parents[1]  # src/dnn_modularity -> the repository root
    if (checkout / "pyproject.toml").is_file() and (checkout / "conf" / "train.yaml").is_file():
        return checkout / "conf"
    return package / "conf"
