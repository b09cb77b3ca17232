"""Run plumbing shared by the entry points (`train`, `prune`, `analyze`, `report`).

One place for what every Hydra command does around its own work: find `conf/`, instantiate
config nodes with readable errors, pick and prepare the run folder, build the Lightning loggers,
callbacks and trainer of the `logger` / `callbacks` / `trainer` groups, apply the torch settings,
and close the W&B run (online automatically when an API key is configured, else offline).
"""

from __future__ import annotations

import logging
import netrc
import os
import socket
import sys
import threading
import urllib.parse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from dnn_modularity.rundir import claim_run_dir, is_rank_zero, run_stamp

__all__ = [
    "CONF_DIR",
    "WANDB_CONNECT_TIMEOUT",
    "WANDB_MODES",
    "OutputsMissingError",
    "build_callbacks",
    "build_classifier",
    "build_loggers",
    "build_trainer",
    "checkpoint_files",
    "claim_config_run_dir",
    "config_group",
    "configure_torch",
    "default_run_name",
    "finish_wandb",
    "hydra_config",
    "instantiate",
    "is_rank_zero",
    "log_config",
    "make_wandb_logger",
    "missing_outputs",
    "plain_or_none",
    "prepare_run_dir",
    "require_outputs",
    "resolve_run_dir",
    "resolve_wandb_mode",
    "wandb_key_configured",
    "wandb_server",
    "wandb_unreachable",
]

#: The Hydra config folder: `$DNN_MODULARITY_CONF` if set, else the checkout's `conf/`
#: (src/dnn_modularity/runtime.py -> repo root / conf, present with `pip install -e .`).
CONF_DIR = Path(
    os.environ.get("DNN_MODULARITY_CONF") or Path(__file__).resolve().parents[2] / "conf"
).resolve()

#: Valid values of the W&B logger's `mode`.
WANDB_MODES = ("auto", "online", "offline", "disabled")

#: Seconds to wait for a TCP connection to the W&B server before logging offline.
WANDB_CONNECT_TIMEOUT = 3.0

log = logging.getLogger(__name__)

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


def resolve_run_dir(
    cfg: DictConfig,
    hydra_cfg: Any | None = None,
    *,
    default_name: str = "train",
    subdir: str | None = None,
) -> Path:
    """The run folder: `cfg.run_dir`, else Hydra's output dir, else `outputs/<name>/<stamp>`.

    The default folder ends in `run_stamp()` (time to the millisecond + random hex digits), so
    two runs started in the same second never share it.

    Args:
        cfg: The composed config (`run_dir`, `name`).
        hydra_cfg: `hydra_config()` (None outside `@hydra.main`).
        default_name: Folder name when `cfg.name` is unset.
        subdir: Extra folder between the name and the stamp (e.g. the analysis name).

    Returns:
        The absolute folder (not created).
    """
    if cfg.get("run_dir"):
        return Path(str(cfg.run_dir)).resolve()
    if hydra_cfg is not None:
        return Path(hydra_cfg.runtime.output_dir).resolve()
    parts = [str(cfg.get("name", default_name)), *([subdir] if subdir else []), run_stamp()]
    return Path("outputs", *parts).resolve()


def claim_config_run_dir(
    cfg: DictConfig,
    run_dir: Path,
    hydra_cfg: Any | None = None,
    *,
    resumes: bool = False,
    inputs: Sequence[Any] = (),
    write_config: bool = True,
) -> Path:
    """`rundir.claim_run_dir` with the config's `overwrite` flag (rank zero only).

    Args:
        cfg: The composed config (`overwrite`, `ckpt_path`).
        run_dir: The folder from `resolve_run_dir`.
        hydra_cfg: `hydra_config()`: Hydra's own files in its output folder are kept.
        resumes: `cfg.ckpt_path` is a checkpoint to resume from (train).
        inputs: Paths the run reads (never deleted by `overwrite=true`).
        write_config: Write the resolved config to `config.yaml` (the claim file).

    Returns:
        The absolute folder (created on rank zero).

    Raises:
        RunDirInUseError: The folder holds another run's outputs (see `claim_run_dir`).
    """
    hydra_owned = hydra_cfg is not None and Path(hydra_cfg.runtime.output_dir).resolve() == run_dir
    return claim_run_dir(
        run_dir,
        overwrite=bool(cfg.get("overwrite", False)),
        resume_from=cfg.get("ckpt_path") if resumes else None,
        inputs=[str(p) for p in inputs if p],
        config_text=OmegaConf.to_yaml(cfg, resolve=True) if write_config else None,
        hydra_owned=hydra_owned,
        can_resume=resumes,
    )


def prepare_run_dir(
    cfg: DictConfig,
    hydra_cfg: Any | None = None,
    *,
    resumes: bool = False,
    inputs: Sequence[Any] = (),
) -> Path:
    """Resolve and claim the run folder, record it in `cfg.run_dir`, write `config.yaml`.

    A folder that holds another run's outputs is refused unless the run resumes from a
    checkpoint inside it (`resumes`) or `cfg.overwrite` is true (its contents are deleted first).
    Only rank zero checks and writes; every rank gets the same folder.

    Args:
        cfg: The composed config (updated in place: `run_dir`).
        hydra_cfg: `hydra_config()` (None outside `@hydra.main`).
        resumes: `cfg.ckpt_path` is a checkpoint to resume from (train).
        inputs: Paths the run reads (never deleted by `overwrite=true`).

    Returns:
        The absolute run folder.

    Raises:
        RunDirInUseError: The folder holds another run's outputs (see `rundir.claim_run_dir`).
    """
    run_dir = resolve_run_dir(cfg, hydra_cfg)
    with open_dict(cfg):
        cfg.run_dir = str(run_dir)
    claim_config_run_dir(cfg, run_dir, hydra_cfg, resumes=resumes, inputs=inputs)
    return run_dir


# --- outputs ---------------------------------------------------------------------------------
class OutputsMissingError(RuntimeError):
    """A file the run reports (a checkpoint, a record) was not written."""


def checkpoint_files(trainer: Any) -> dict[str, str]:
    """Every checkpoint file the trainer's checkpoint callbacks report having saved.

    Args:
        trainer: A fitted `lightning.pytorch.Trainer`.

    Returns:
        `{description: path}` over the callbacks' kept top-k files, best and last paths.
    """
    files: dict[str, str] = {}
    for callback in getattr(trainer, "checkpoint_callbacks", []):
        name = type(callback).__name__
        for path in [*callback.best_k_models, callback.best_model_path, callback.last_model_path]:
            if path:
                files.setdefault(str(path), f"{name} checkpoint")
    return {f"{what} {Path(path).name}": path for path, what in files.items()}


def missing_outputs(paths: Mapping[str, Any]) -> dict[str, str]:
    """The entries of `paths` (name -> path or None) whose path does not exist."""
    return {name: str(path) for name, path in paths.items() if path and not Path(path).exists()}


def require_outputs(missing: Mapping[str, str] | None, run_dir: Path) -> None:
    """Fail loudly when the run did not write what it reports (see `missing_outputs`).

    Args:
        missing: `{name: path}` of files that should exist but do not (empty/None: fine).
        run_dir: The run folder (for the message).

    Raises:
        OutputsMissingError: Naming every missing file and the likely cause.
    """
    if not missing:
        return
    listed = "; ".join(f"{name}: {path}" for name, path in missing.items())
    raise OutputsMissingError(
        f"the run did not write {len(missing)} file(s) it reports ({listed}). Lightning skips a "
        "checkpoint it is not permitted to write without an error, so check that the folders "
        f"under {run_dir} are writable and have free space; no results.json was written"
    )


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
    from dnn_modularity.models.classifier import ImageClassifier, data_identity

    module = ImageClassifier(
        net_config=net_config,
        mean=datamodule.mean if mean is None else mean,
        std=datamodule.std if std is None else std,
        optimizer=plain_or_none(cfg.get("optimizer")),
        scheduler=plain_or_none(cfg.get("scheduler")),
        data=data_identity(datamodule),
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


def wandb_server() -> tuple[str, int]:
    """Host and port of the W&B server (`WANDB_BASE_URL`, default https://api.wandb.ai)."""
    url = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
    parsed = urllib.parse.urlsplit(url if "://" in url else f"https://{url}")
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    return parsed.hostname or "api.wandb.ai", port


def wandb_unreachable(timeout: float = WANDB_CONNECT_TIMEOUT) -> str | None:
    """Why the W&B server cannot be reached (a TCP connection within `timeout` s), or None.

    A compute node without internet access makes `wandb.init` retry for minutes and then fail;
    this check answers in at most `timeout` seconds (name resolution included).

    Args:
        timeout: Seconds to wait for the connection.

    Returns:
        None when a connection opened, else a short reason naming the server.
    """
    host, port = wandb_server()
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                outcome.append(None)
        except OSError as err:
            outcome.append(f"{type(err).__name__}: {err}")

    # A thread bounds name resolution too (getaddrinfo has no timeout of its own).
    worker = threading.Thread(target=connect, daemon=True, name="wandb-reachable")
    worker.start()
    worker.join(timeout + 0.5)
    if not outcome:
        return f"{host}:{port} did not answer within {timeout:g} s"
    return None if outcome[0] is None else f"{host}:{port}: {outcome[0]}"


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
    """Lightning `WandbLogger`: online with a reachable server and an API key, else offline.

    Online mode is checked up front (rank zero): when the W&B server does not accept a
    connection within `WANDB_CONNECT_TIMEOUT` seconds (a compute node without internet access),
    or the online run cannot be started, the logger falls back to offline mode with one warning
    line saying how to sync later - the training run is never lost to the logger.

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

    def build(offline: bool, fallback: bool = False) -> Any:
        return WandbLogger(
            save_dir=str(save_dir),
            project=project,
            entity=entity,
            group=group,
            name=name,
            tags=list(tags) if tags else None,
            offline=offline,
            log_model=log_model and not fallback,  # offline runs cannot upload checkpoints
            **kwargs,
        )

    if resolved != "online" or not is_rank_zero():
        return build(offline=resolved == "offline")
    how = (
        f"logging offline to {save_dir / 'wandb'} (upload later with "
        f"`wandb sync {save_dir / 'wandb'}/offline-run-*`)"
    )
    reason = wandb_unreachable()
    if reason is not None:
        log.warning("W&B server unreachable (%s): %s", reason, how)
        return build(offline=True, fallback=True)
    logger = build(offline=False)
    try:
        logger.experiment  # noqa: B018  (starts the online run now, while it can still fall back)
    except Exception as err:  # any failure to start online must not cost the training run
        log.warning("W&B run could not start online (%r): %s", err, how)
        _finish_quietly()
        return build(offline=True, fallback=True)
    return logger


def _finish_quietly() -> None:
    """Close a half-started W&B run, ignoring errors (it failed already)."""
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=1, quiet=True)
    except Exception:  # it failed already; nothing left to report
        pass


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
