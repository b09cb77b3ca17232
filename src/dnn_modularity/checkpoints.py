"""Safe checkpoint reading: tensors and plain containers only, with a clear error for other files.

Checkpoints are files users download and share, and a pickle can run code when it is loaded. The
package therefore reads every checkpoint with `torch.load(..., weights_only=True)` (PyTorch's
restricted unpickler: tensors, numbers, strings, lists, dicts, ...), and the checkpoints it writes
hold only such plain data (`ImageClassifier` stores its hyperparameters as plain dicts; see
`models.classifier`). Nothing named in a checkpoint (an optimizer's `_target_`, say) is
instantiated when it is loaded for analysis or pruning.

`load_checkpoint` turns what `torch.load` raises for a file that is not a checkpoint (a text
file: `KeyError: 101`, random bytes: `Unsupported operand`, an empty file: `EOFError`) into one
message that names the file and says what it is not.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "HPARAMS_KEYS",
    "NotACheckpointError",
    "checkpoint_epochs_done",
    "checkpoint_hparams",
    "load_checkpoint",
]

#: Where Lightning keeps a module's hyperparameters: the current key, then the keys older
#: Lightning versions used (their checkpoints still load).
HPARAMS_KEYS = ("hyper_parameters", "hparams", "module_arguments")


class NotACheckpointError(ValueError):
    """The file is not a checkpoint written by this package (or holds objects we do not load)."""


def _refuse(path: Path, why: str) -> NotACheckpointError:
    return NotACheckpointError(
        f"{str(path)!r} is not a checkpoint written by dnn_modularity ({why}); pass the .ckpt "
        "file of a training run, e.g. ckpt_path=<run>/checkpoints/last.ckpt"
    )


def load_checkpoint(
    path: str | os.PathLike[str],
    map_location: str | torch.device | None = "cpu",
    *,
    need_model: bool = True,
) -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True` and check that it is one of ours.

    Args:
        path: A `.ckpt` file written by `dnn_modularity.train` / `prune` (Lightning format).
        map_location: Where tensors go (`torch.load`'s argument).
        need_model: Also require the classifier's weights and hyperparameters (`state_dict` and
            `hyper_parameters.net_config`); False accepts any Lightning checkpoint dict.

    Returns:
        The checkpoint dict.

    Raises:
        FileNotFoundError: No such file.
        NotACheckpointError: Not a torch file, a torch file that stores Python objects other
            than tensors and plain containers (which could run code on load: refused), or a
            torch file without a classifier's keys.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist (or is not a file)")
    try:
        with warnings.catch_warnings():
            # torch warns about the pickle protocol of plain (non-torch) pickles before failing.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for foreign files
        text = str(err)
        if "GLOBAL" in text:  # the restricted unpickler met a class or function reference
            detail = next((ln.strip() for ln in text.splitlines() if "GLOBAL" in ln), "")
            raise _refuse(
                path,
                "it stores Python objects other than tensors and plain containers, which could "
                f"run code when loaded, so it is not loaded{': ' + detail if detail else ''}",
            ) from None
        raise _refuse(path, f"not a PyTorch checkpoint file: {_load_error(err)}") from None
    if not isinstance(checkpoint, Mapping):
        raise _refuse(path, f"it holds a {type(checkpoint).__name__}, not a checkpoint dict")
    if need_model:
        missing = []
        if not isinstance(checkpoint.get("state_dict"), Mapping):
            missing.append("state_dict")
        net = checkpoint_hparams(checkpoint).get("net_config")
        if not isinstance(net, Mapping) or "name" not in net:
            missing.append("hyper_parameters.net_config")
        if missing:
            raise _refuse(
                path,
                f"a torch file without {' and '.join(missing)}; its keys: "
                f"{sorted(map(str, checkpoint))[:12]}",
            )
    return dict(checkpoint)


def _load_error(err: Exception) -> str:
    """The informative part of what `torch.load` raised for a foreign file."""
    if isinstance(err, EOFError):
        return "the file is empty or truncated"
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    for index, line in enumerate(lines):
        # The restricted unpickler's own reason follows this header (e.g. "Unsupported operand").
        if line.endswith("WeightsUnpickler error:") and index + 1 < len(lines):
            return f"unreadable pickle data ({lines[index + 1]})"
    return f"{type(err).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def checkpoint_hparams(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The module hyperparameters of a checkpoint (current or older Lightning key), or {}."""
    for key in HPARAMS_KEYS:
        value = checkpoint.get(key)
        if isinstance(value, Mapping):
            return dict(value)
    return {}


def checkpoint_epochs_done(checkpoint: Mapping[str, Any]) -> int | None:
    """Epochs completed by a checkpoint's weights (0 = initialisation), None when unknown.

    The fit loop's processed-epoch count, else Lightning's 0-based `epoch` entry + 1 (a
    `ModelCheckpoint` saves at the end of that epoch).
    """
    try:
        return int(checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"])
    except (KeyError, TypeError, ValueError):
        pass
    if "epoch" in checkpoint:
        return int(checkpoint["epoch"]) + 1
    return None
