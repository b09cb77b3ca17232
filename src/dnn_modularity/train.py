"""Training entry point: `python -m dnn_modularity.train [overrides]` (Hydra) around `train(cfg)`.

With no overrides this runs the embedded demo (`experiment=train_demo_digits`). Each run directory
holds `config.yaml` (the resolved config), `checkpoints/`, `metrics.csv`, `modularity.csv`,
`figures/` and `results.json` (test metrics and paths).

Tests and scripts call the plain `train(cfg)` with a config composed by `hydra.compose`
(`cfg.run_dir` then says where outputs go).
"""

from __future__ import annotations

import logging
import netrc
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from dnn_modularity.io import atomic_write_text, write_json

__all__ = [
    "CONF_DIR",
    "check_config",
    "main",
    "make_wandb_logger",
    "resolve_wandb_mode",
    "train",
]

#: The repository's `conf/` folder (src/dnn_modularity/train.py -> repo root / conf).
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"

#: Hydra launchers under which Lightning's `ddp` re-launch works for sweeps (each SLURM task is a
#: rank: Lightning reads the ranks from the cluster environment instead of starting processes).
_DDP_SWEEP_LAUNCHERS = ("SlurmLauncher",)

#: Default folders (inside the run directory) of the checkpoint callbacks with `dirpath: null`.
_CHECKPOINT_DIRS = {
    "checkpoint": "checkpoints",
    "last_checkpoint": "checkpoints",
    "epoch_checkpoints": "checkpoints/epochs",
}


# --- W&B -------------------------------------------------------------------------------------
def _wandb_key_configured() -> bool:
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
    """
    valid = ("auto", "online", "offline", "disabled")
    if mode not in valid:
        raise ValueError(f"wandb mode {mode!r} is not one of {valid}")
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE", "").strip().lower()
    if env in ("online", "offline", "disabled", "dryrun"):
        return "offline" if env == "dryrun" else env
    return "online" if _wandb_key_configured() else "offline"


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


def _finish_wandb(loggers: list[Any]) -> None:
    """Close the W&B run (also after an error) so that the next job of a sweep starts cleanly."""
    from lightning.pytorch.loggers import WandbLogger

    if not any(isinstance(lg, WandbLogger) for lg in loggers):
        return
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=0 if sys.exc_info()[0] is None else 1)
    except Exception as err:  # closing must never mask the run's own outcome
        print(f"warning: closing the W&B run failed: {err!r}", file=sys.stderr)


# --- validation ------------------------------------------------------------------------------
def _hydra_config() -> Any | None:
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def _ddp_relaunches(trainer_cfg: Any) -> bool:
    """True when Lightning would re-launch the script for extra ranks (ddp on >1 device/node)."""
    strategy = str(trainer_cfg.get("strategy", "auto"))
    if not strategy.startswith("ddp") or any(s in strategy for s in ("spawn", "fork", "notebook")):
        return False
    devices = trainer_cfg.get("devices", 1)
    nodes = int(trainer_cfg.get("num_nodes", 1) or 1)
    if isinstance(devices, str):  # "auto", "-1", "2" or a device list such as "0,1"
        text = devices.strip()
        several = text in ("auto", "-1") or (int(text) > 1 if text.isdigit() else "," in text)
    elif isinstance(devices, int):
        several = devices > 1 or devices == -1
    else:  # a list of device ids
        several = len(list(devices)) > 1
    return several or nodes > 1


def check_config(cfg: DictConfig, hydra_cfg: Any | None = None) -> None:
    """Fail early, with a clear message, on configurations that cannot work.

    Checks: a known model name; probe N > graph k; no `--multirun` sweep of DDP jobs under a
    launcher that breaks Lightning's re-launch (basic, joblib, submitit_local).

    Args:
        cfg: The composed config.
        hydra_cfg: `HydraConfig.get()` when running under `@hydra.main` (None otherwise).

    Raises:
        ValueError: Describing the problem and what to do instead (an unknown model name raises
            the model registry's error, a `KeyError` and `ValueError`, listing the valid names).
    """
    from dnn_modularity.models import available_models

    name = cfg.model.get("name")
    if name not in available_models():
        from dnn_modularity.models import UnknownModelError

        raise UnknownModelError(
            f"unknown model {name!r} (model.name); available models: {available_models()}"
        )
    if "modularity" in (cfg.get("callbacks") or {}):
        n, k = int(cfg.probe.n), int(cfg.graph.k)
        if n <= k:
            raise ValueError(
                f"probe.n={n} must be larger than graph.k={k}: every node of the k-NN graph needs "
                "k other nodes; raise probe.n or lower graph.k"
            )
    if hydra_cfg is not None:
        from hydra.types import RunMode

        launcher = str(hydra_cfg.launcher.get("_target_", ""))
        if (
            hydra_cfg.mode == RunMode.MULTIRUN
            and _ddp_relaunches(cfg.trainer)
            and not any(ok in launcher for ok in _DDP_SWEEP_LAUNCHERS)
        ):
            raise ValueError(
                f"--multirun with trainer.strategy={cfg.trainer.strategy} on several devices "
                f"is not supported by the {launcher.rsplit('.', 1)[-1]}: Lightning's ddp "
                "re-launches this script with the sweep's arguments, so every child would start "
                "its own sweep. Instead: (1) sweep on a SLURM cluster with "
                "hydra/launcher=slurm (or submitit_slurm) and "
                "hydra.launcher.tasks_per_node=<GPUs per node> (one task per GPU; Lightning "
                "reads the ranks from SLURM), or (2) start one job per configuration yourself: "
                "`torchrun --nproc_per_node=<GPUs> -m dnn_modularity.train trainer=ddp "
                "trainer.devices=<GPUs> <overrides>` (no --multirun), or (3) use "
                "trainer.strategy=ddp_spawn."
            )


# --- assembly --------------------------------------------------------------------------------
def _resolve_run_dir(cfg: DictConfig, hydra_cfg: Any | None) -> Path:
    if cfg.get("run_dir"):
        return Path(str(cfg.run_dir)).resolve()
    if hydra_cfg is not None:
        return Path(hydra_cfg.runtime.output_dir).resolve()
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    return (Path("outputs") / str(cfg.get("name", "train")) / stamp).resolve()


def _instantiate(node: Any, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate` that re-raises the target's own error (clearer than Hydra's)."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if err.__cause__ is not None:
            raise err.__cause__ from None
        raise


def _group(cfg: DictConfig, key: str) -> dict[str, Any]:
    """A dict-of-objects group (`callbacks`, `logger`) as {name: config}, skipping empties."""
    node = cfg.get(key)
    if not node:
        return {}
    return {
        name: sub for name, sub in node.items() if isinstance(sub, DictConfig) and "_target_" in sub
    }


def _plain_or_none(node: Any) -> dict[str, Any] | None:
    if not node:
        return None
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


def _build_loggers(cfg: DictConfig, run_dir: Path) -> list[Any]:
    loggers = []
    for name, node in _group(cfg, "logger").items():
        overrides: dict[str, Any] = {}
        if "save_dir" in node and node.save_dir is None:
            overrides["save_dir"] = str(run_dir)
        if name == "wandb" and node.get("name") is None:
            overrides["name"] = f"{cfg.get('name', 'train')}-{run_dir.name}"
        loggers.append(_instantiate(node, **overrides))
    return loggers


def _build_callbacks(cfg: DictConfig, run_dir: Path) -> list[Any]:
    callbacks = []
    for name, node in _group(cfg, "callbacks").items():
        overrides: dict[str, Any] = {}
        if "dirpath" in node and node.dirpath is None:
            sub = _CHECKPOINT_DIRS.get(name, f"checkpoints/{name}")
            overrides["dirpath"] = str(run_dir / sub)
        if "output_dir" in node and node.output_dir is None:
            overrides["output_dir"] = str(run_dir)
        callbacks.append(_instantiate(node, **overrides))
    return callbacks


def _is_rank_zero() -> bool:
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train a classifier with per-epoch modularity curves, test it, and record everything.

    Args:
        cfg: A config composed from `conf/train.yaml` (by `@hydra.main` or `hydra.compose`).

    Returns:
        `{"test": {metric: value}, "run_dir": str, "paths": {...}, "modularity_overhead": {...},
        "fit_seconds": float}`.

    Raises:
        ValueError, KeyError, FileNotFoundError: On bad configurations, before training starts.
    """
    import lightning.pytorch as L
    import torch

    from dnn_modularity.callbacks import ModularityMonitor
    from dnn_modularity.models.classifier import ImageClassifier

    hydra_cfg = _hydra_config()
    check_config(cfg, hydra_cfg)
    run_dir = _resolve_run_dir(cfg, hydra_cfg)
    with open_dict(cfg):
        cfg.run_dir = str(run_dir)
    if _is_rank_zero():
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))

    if cfg.get("num_threads"):
        # Small CPU models on a shared machine: more threads than free cores makes torch's
        # OpenMP threads spin against each other (measured: 10x slower epochs).
        torch.set_num_threads(int(cfg.num_threads))
    if cfg.get("matmul_precision"):
        torch.set_float32_matmul_precision(str(cfg.matmul_precision))
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)

    datamodule = _instantiate(cfg.data)  # raises early on a missing dataset folder
    module = ImageClassifier(
        net_config=OmegaConf.to_container(cfg.model, resolve=True),  # type: ignore[arg-type]
        mean=datamodule.mean,
        std=datamodule.std,
        optimizer=_plain_or_none(cfg.get("optimizer")),
        scheduler=_plain_or_none(cfg.get("scheduler")),
        **OmegaConf.to_container(cfg.get("module") or {}, resolve=True),  # type: ignore[arg-type]
    )
    callbacks = _build_callbacks(cfg, run_dir)
    loggers: list[Any] = []
    try:
        loggers = _build_loggers(cfg, run_dir)
        for logger in loggers:
            logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        trainer = _instantiate(
            cfg.trainer,
            callbacks=callbacks,
            logger=loggers if loggers else False,
            default_root_dir=str(run_dir),
        )
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
        fit_seconds = time.perf_counter() - start

        test_metrics: dict[str, float] = {}
        if cfg.get("test", True):
            ckpt = None
            best = getattr(trainer.checkpoint_callback, "best_model_path", "")
            if cfg.get("test_ckpt", "last") == "best" and best:
                ckpt = best
            results = trainer.test(module, datamodule=datamodule, ckpt_path=ckpt, verbose=False)
            test_metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}

        monitor = next((cb for cb in callbacks if isinstance(cb, ModularityMonitor)), None)
        checkpoint = trainer.checkpoint_callback
        paths = {
            "config": str(run_dir / "config.yaml"),
            "checkpoints": str(run_dir / "checkpoints"),
            "best_checkpoint": getattr(checkpoint, "best_model_path", "") or None,
            "last_checkpoint": next(
                (
                    cb.best_model_path
                    for cb in trainer.checkpoint_callbacks
                    if cb.monitor is None and cb.best_model_path
                ),
                None,
            ),
            "metrics_csv": str(run_dir / "metrics.csv"),
            "modularity_csv": str(monitor.csv_path(trainer)) if monitor else None,
            "figures": str(run_dir / "figures"),
        }
        result = {
            "name": cfg.get("name"),
            "run_dir": str(run_dir),
            "test": test_metrics,
            "fit_seconds": fit_seconds,
            "modularity_overhead": monitor.overhead_summary() if monitor else None,
            "paths": paths,
        }
        if trainer.is_global_zero:
            write_json(run_dir / "results.json", result)
        return result
    finally:
        _finish_wandb(loggers)


def _one_console_handler() -> None:
    """Print Lightning's messages once: Hydra's root handlers (console + run-dir log file) get them.

    The `lightning` package attaches its own console handler, and `lightning.pytorch` propagates
    to the root logger once Hydra has configured it, so every message would appear twice.
    """
    import lightning  # noqa: F401  (attaches the handler on import)

    package_logger = logging.getLogger("lightning")
    for handler in list(package_logger.handlers):
        if type(handler) is logging.StreamHandler:
            package_logger.removeHandler(handler)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Console entry point (`dnn-train` / `python -m dnn_modularity.train`).

    Returns the test accuracy (for Hydra sweepers that optimise a value).
    """
    _one_console_handler()
    result = train(cfg)
    overhead = result.get("modularity_overhead") or {}
    logging.getLogger(__name__).info(
        "done: test %s | fit %.1f s | modularity monitor +%.1f%% | outputs in %s",
        {k: round(v, 4) for k, v in result["test"].items()},
        result["fit_seconds"],
        100 * overhead.get("overhead", float("nan")),
        result["run_dir"],
    )
    return result["test"].get("test/acc")


if __name__ == "__main__":
    main()
