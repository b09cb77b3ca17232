"""Run plumbing shared by the entry points (`train`, `prune`, `analyze`, `report`).

One place for what every Hydra command does around its own work: find `conf/`, instantiate
config nodes with readable errors, pick and prepare the run folder, build the Lightning loggers,
callbacks and trainer of the `logger` / `callbacks` / `trainer` groups, apply the torch settings,
and close the W&B run (online automatically when an API key is configured, else offline).
"""

from __future__ import annotations

import netrc
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from dnn_modularity.io import atomic_write_text

__all__ = [
    "CONF_DIR",
    "WANDB_MODES",
    "build_callbacks",
    "build_classifier",
    "build_loggers",
    "build_trainer",
    "config_group",
    "configure_torch",
    "default_run_name",
    "finish_wandb",
    "hydra_config",
    "instantiate",
    "is_rank_zero",
    "log_config",
    "make_wandb_logger",
    "plain_or_none",
    "prepare_run_dir",
    "resolve_run_dir",
    "resolve_wandb_mode",
    "wandb_key_configured",
]

#: The Hydra config folder: `$DNN_MODULARITY_CONF` if set, else the checkout's `conf/`
#: (src/dnn_modularity/runtime.py -> repo root / conf, present with `pip install -e .`).
CONF_DIR = Path(
    os.environ.get("DNN_MODULARITY_CONF") or Path(__file__).resolve().parents[2] / "conf"
).resolve()

#: Valid values of the W&B logger's `mode`.
WANDB_MODES = ("auto", "online", "offline", "disabled")

#: Default folders (inside the run directory) of the checkpoint callbacks with `dirpath: null`.
_CHECKPOINT_DIRS = {
    "checkpoint": "checkpoints",
    "last_checkpoint": "checkpoints",
    "epoch_checkpoints": "checkpoints/epochs",
}


# --- config nodes ----------------------------------------------------------------------------
def instantiate(node: Any, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate` that re-raises the target's own error (clearer than Hydra's).

    Args:
        node: A config node with `_target_`.
        **kwargs: Overrides passed on to the target.

    Returns:
        The instantiated object.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as err:
        if err.__cause__ is not None:
            raise err.__cause__ from None
        raise


def plain_or_none(node: Any) -> dict[str, Any] | None:
    """A config node as a resolved plain container, None for an empty/missing node.

    Args:
        node: A config node (or None).

    Returns:
        The plain dict, or None.
    """
    if not node:
        return None
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


def config_group(node: Any) -> dict[str, DictConfig]:
    """A dict-of-objects group (`callbacks`, `logger`) as {name: config}, skipping empties.

    Args:
        node: The group's node, e.g. `cfg.get("logger")` (None/empty: no members).

    Returns:
        The members that have a `_target_`, in config order.
    """
    if not node:
        return {}
    return {
        name: sub for name, sub in node.items() if isinstance(sub, DictConfig) and "_target_" in sub
    }


# --- run folder ------------------------------------------------------------------------------
def hydra_config() -> Any | None:
    """`HydraConfig.get()` when running under `@hydra.main` (or a compose with it), else None."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def is_rank_zero() -> bool:
    """True on the global rank-zero process (or outside distributed runs)."""
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def resolve_run_dir(
    cfg: DictConfig,
    hydra_cfg: Any | None = None,
    *,
    default_name: str = "train",
    subdir: str | None = None,
) -> Path:
    """The run folder: `cfg.run_dir`, else Hydra's output dir, else `outputs/<name>/<time>`.

    Args:
        cfg: The composed config (`run_dir`, `name`).
        hydra_cfg: `hydra_config()` (None outside `@hydra.main`).
        default_name: Folder name when `cfg.name` is unset.
        subdir: Extra folder between the name and the time stamp (e.g. the analysis name).

    Returns:
        The absolute folder (not created).
    """
    if cfg.get("run_dir"):
        return Path(str(cfg.run_dir)).resolve()
    if hydra_cfg is not None:
        return Path(hydra_cfg.runtime.output_dir).resolve()
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    parts = [str(cfg.get("name", default_name)), *([subdir] if subdir else []), stamp]
    return Path("outputs", *parts).resolve()


def prepare_run_dir(cfg: DictConfig, hydra_cfg: Any | None = None) -> Path:
    """Resolve the run folder, record it in `cfg.run_dir`, create it and write `config.yaml`.

    Only rank zero writes; every rank gets the same folder.

    Args:
        cfg: The composed config (updated in place: `run_dir`).
        hydra_cfg: `hydra_config()` (None outside `@hydra.main`).

    Returns:
        The absolute run folder.
    """
    run_dir = resolve_run_dir(cfg, hydra_cfg)
    with open_dict(cfg):
        cfg.run_dir = str(run_dir)
    if is_rank_zero():
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    return run_dir


def configure_torch(cfg: DictConfig) -> None:
    """Apply the config's `num_threads` and `matmul_precision` (each only when set).

    Args:
        cfg: The composed config.
    """
    import torch

    if cfg.get("num_threads"):
        # Small CPU models on a shared machine: more threads than free cores makes torch's
        # OpenMP threads spin against each other (measured: 10x slower epochs).
        torch.set_num_threads(int(cfg.num_threads))
    if cfg.get("matmul_precision"):
        torch.set_float32_matmul_precision(str(cfg.matmul_precision))


# --- Lightning objects -----------------------------------------------------------------------
def build_loggers(node: Any, save_dir: Path, run_name: str) -> list[Any]:
    """Instantiate the `logger` group (a mapping name -> `_target_` node).

    Args:
        node: `cfg.logger` (None/empty: no loggers).
        save_dir: Replaces `save_dir: null`.
        run_name: The W&B run name when its `name` is unset.

    Returns:
        The Lightning loggers, in config order.
    """
    loggers = []
    for name, spec in config_group(node).items():
        overrides: dict[str, Any] = {}
        if "save_dir" in spec and spec.save_dir is None:
            overrides["save_dir"] = str(save_dir)
        if name == "wandb" and spec.get("name") is None:
            overrides["name"] = run_name
        loggers.append(instantiate(spec, **overrides))
    return loggers


def default_run_name(cfg: DictConfig, run_dir: Path) -> str:
    """The W&B run name when unset: `<name>-<run folder name>` (job number or time)."""
    return f"{cfg.get('name', 'train')}-{run_dir.name}"


def log_config(loggers: Sequence[Any], cfg: DictConfig) -> None:
    """Record the resolved config as every logger's hyperparameters.

    Args:
        loggers: Lightning loggers.
        cfg: The composed config.
    """
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))


def build_callbacks(node: Any, run_dir: Path) -> list[Any]:
    """Instantiate the `callbacks` group with its null folders pointed into `run_dir`.

    Checkpoint callbacks with `dirpath: null` write to `checkpoints/` (`epoch_checkpoints`:
    `checkpoints/epochs`, others `checkpoints/<name>`); `output_dir: null` becomes `run_dir`.

    Args:
        node: `cfg.callbacks` (None/empty: no callbacks).
        run_dir: The run folder.

    Returns:
        The Lightning callbacks, in config order.
    """
    callbacks = []
    for name, spec in config_group(node).items():
        overrides: dict[str, Any] = {}
        if "dirpath" in spec and spec.dirpath is None:
            sub = _CHECKPOINT_DIRS.get(name, f"checkpoints/{name}")
            overrides["dirpath"] = str(run_dir / sub)
        if "output_dir" in spec and spec.output_dir is None:
            overrides["output_dir"] = str(run_dir)
        callbacks.append(instantiate(spec, **overrides))
    return callbacks


def build_trainer(
    node: Any,
    run_dir: Path,
    *,
    callbacks: Sequence[Any] = (),
    loggers: Sequence[Any] = (),
    **overrides: Any,
) -> Any:
    """Instantiate the `trainer` node with these callbacks and loggers, rooted at `run_dir`.

    Args:
        node: `cfg.trainer`.
        run_dir: Lightning's `default_root_dir`.
        callbacks: Lightning callbacks.
        loggers: Lightning loggers (none: `logger=False`).
        **overrides: Further trainer arguments (e.g. `enable_checkpointing=False`).

    Returns:
        A `lightning.pytorch.Trainer`.
    """
    from dnn_modularity.console import silence_known_noise

    silence_known_noise()  # Lightning's litlogger tip (emitted in Trainer.__init__) and more
    return instantiate(
        node,
        callbacks=list(callbacks),
        logger=list(loggers) if loggers else False,
        default_root_dir=str(run_dir),
        **overrides,
    )


def build_classifier(
    cfg: DictConfig,
    net_config: dict[str, Any],
    datamodule: Any,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Any:
    """An `ImageClassifier` for `net_config` with the config's optimizer/scheduler/module args.

    Args:
        cfg: The composed config (`optimizer`, `scheduler`, `module`).
        net_config: The arch_config-style dict `{"name": ..., **kwargs}`.
        datamodule: Supplies `mean` and `std` (normalisation inside the model).
        mean: Normalisation mean to use instead of the datamodule's (e.g. the statistics a
            parent network was trained with, whose weights the new network inherits).
        std: Normalisation std to use instead of the datamodule's (see `mean`).

    Returns:
        The (freshly initialised) `ImageClassifier`.
    """
    from dnn_modularity.models.classifier import ImageClassifier

    module = ImageClassifier(
        net_config=net_config,
        mean=datamodule.mean if mean is None else mean,
        std=datamodule.std if std is None else std,
        optimizer=plain_or_none(cfg.get("optimizer")),
        scheduler=plain_or_none(cfg.get("scheduler")),
        **OmegaConf.to_container(cfg.get("module") or {}, resolve=True),  # type: ignore[arg-type]
    )
    # Lightning's model summary counts FLOPs and shapes only with an example input
    # (otherwise it prints "Total FLOPs: 0"): one image of the data's size.
    size = int(datamodule.image_size)
    module.example_input_array = torch.zeros(1, int(datamodule.in_channels), size, size)
    return module


# --- W&B -------------------------------------------------------------------------------------
def wandb_key_configured() -> bool:
    """True when a W&B API key is set (`WANDB_API_KEY`) or stored in the netrc file."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        auth = netrc.netrc(os.environ.get("NETRC")).authenticators(host)
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return bool(auth and auth[2])


def resolve_wandb_mode(mode: str = "auto") -> str:
    """Resolve "auto": `WANDB_MODE` if set, else online with an API key configured, else offline.

    Args:
        mode: "auto", "online", "offline" or "disabled".

    Returns:
        The mode to pass to `wandb.init`.

    Raises:
        ValueError: An unknown mode (the message lists the valid ones).
    """
    if mode not in WANDB_MODES:
        raise ValueError(f"wandb mode {mode!r} is not one of {WANDB_MODES}")
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in ("online", "offline", "disabled", "dryrun"):
        return "offline" if env == "dryrun" else env
    return "online" if wandb_key_configured() else "offline"


def make_wandb_logger(
    save_dir: str | os.PathLike[str] | None = None,
    project: str = "dnn-modularity",
    entity: str | None = None,
    group: str | None = None,
    name: str | None = None,
    tags: list[str] | None = None,
    mode: str = "auto",
    log_model: bool = False,
    **kwargs: Any,
) -> Any:
    """Lightning `WandbLogger`, offline automatically when no API key is configured.

    Args:
        save_dir: Folder receiving `wandb/` (the run directory).
        project: W&B project.
        entity: W&B entity (team/user); None: the default.
        group: Run group (the experiment name).
        name: Run name.
        tags: Run tags.
        mode: See `resolve_wandb_mode`.
        log_model: Upload checkpoints as artifacts (Lightning's option).
        **kwargs: Passed on to `wandb.init`.

    Returns:
        A `lightning.pytorch.loggers.WandbLogger`.
    """
    from lightning.pytorch.loggers import WandbLogger

    resolved = resolve_wandb_mode(mode)
    save_dir = Path(save_dir) if save_dir is not None else Path.cwd()
    save_dir.mkdir(parents=True, exist_ok=True)
    if resolved == "disabled":
        kwargs["mode"] = "disabled"
    return WandbLogger(
        save_dir=str(save_dir),
        project=project,
        entity=entity,
        group=group,
        name=name,
        tags=list(tags) if tags else None,
        offline=resolved == "offline",
        log_model=log_model,
        **kwargs,
    )


def finish_wandb(loggers: Sequence[Any]) -> None:
    """Close the W&B run (also after an error) so that the next job of a sweep starts cleanly.

    The exit code is 1 when called while an exception is being handled (a `finally` block after
    a failure), else 0. A failure to close is printed, never raised.

    Args:
        loggers: The run's Lightning loggers (nothing happens without a `WandbLogger`).
    """
    from lightning.pytorch.loggers import WandbLogger

    if not any(isinstance(lg, WandbLogger) for lg in loggers):
        return
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=0 if sys.exc_info()[0] is None else 1)
    except Exception as err:  # closing must never mask the run's own outcome
        print(f"warning: closing the W&B run failed: {err!r}", file=sys.stderr)
