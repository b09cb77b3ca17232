"""Training entry point: `python -m dnn_modularity.train [overrides]` (Hydra) around `train(cfg)`.

The training recipe follows the dataset (`conf/recipe/<data>.yaml`, chosen by `recipe: ${data}`):
the papers' recipe for CIFAR/ImageNet (and FakeData), the quick CPU demo recipe for digits, so
with no overrides this runs the embedded demo (ResNet-56 on digits). Each run directory
holds `config.yaml` (the resolved config), `checkpoints/`, `metrics.csv`, `modularity.csv`,
`figures/` and `results.json` (test metrics and paths).

Tests and scripts call the plain `train(cfg)` with a config composed by `hydra.compose`
(`cfg.run_dir` then says where outputs go).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from dnn_modularity.io import write_json
from dnn_modularity.runtime import (
    CONF_DIR,
    build_callbacks,
    build_classifier,
    build_loggers,
    build_trainer,
    checkpoint_files,
    configure_torch,
    default_run_name,
    finish_wandb,
    hydra_config,
    instantiate,
    is_rank_zero,
    log_config,
    make_wandb_logger,
    missing_outputs,
    prepare_run_dir,
    require_outputs,
    resolve_run_dir,
    resolve_wandb_mode,
)

__all__ = [
    "CONF_DIR",
    "check_config",
    "main",
    "make_wandb_logger",
    "resolve_wandb_mode",
    "train",
]

#: Hydra launchers under which Lightning's `ddp` re-launch works for sweeps (each SLURM task is a
#: rank: Lightning reads the ranks from the cluster environment instead of starting processes).
_DDP_SWEEP_LAUNCHERS = ("SlurmLauncher",)


# --- validation ------------------------------------------------------------------------------
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

    Checks: a known model name; no `--multirun` sweep of DDP jobs under a
    launcher that breaks Lightning's re-launch (basic, joblib, submitit_local).

    Args:
        cfg: The composed config.
        hydra_cfg: `HydraConfig.get()` when running under `@hydra.main` (None otherwise).

    Raises:
        ValueError: Describing the problem and what to do instead (an unknown model name raises
            the model registry's error, a `KeyError` and `ValueError`, listing the valid names).
    """
    from dnn_modularity.models import UnknownModelError, check_model_name

    try:
        check_model_name(cfg.model.get("name"))
    except UnknownModelError as err:
        raise UnknownModelError(f"{err} (model.name)") from None
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


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train a classifier with per-epoch modularity curves, test it, and record everything.

    Resuming (`ckpt_path`): the checkpoint is read with `weights_only=True` and must be one of
    this package's; its modularity monitor must have measured with the same settings (see
    `ModularityMonitor.check_resume`). Resumed into the folder that holds the checkpoint, the
    run appends to that folder's `metrics.csv` and `modularity.csv` (rows a crashed run logged
    after the checkpoint are dropped). Lightning does not restore the random-number generators:
    batches after a resume are shuffled differently from an uninterrupted run.

    Args:
        cfg: A config composed from `conf/train.yaml` (by `@hydra.main` or `hydra.compose`).

    Returns:
        `{"test": {metric: value}, "run_dir": str, "paths": {...}, "modularity_overhead": {...},
        "fit_seconds": float}`.

    Raises:
        ValueError, KeyError, FileNotFoundError: On bad configurations or checkpoints, before
            training starts.
        RunDirInUseError: The run folder holds another run's outputs (see `rundir`).
        OutputsMissingError: After training, when a checkpoint or record the run reports was
            not written (e.g. an unwritable `checkpoints/`); no `results.json` is written then.
    """
    import lightning.pytorch as L

    from dnn_modularity.callbacks import ModularityMonitor
    from dnn_modularity.callbacks.progress import EpochProgress
    from dnn_modularity.checkpoints import load_checkpoint
    from dnn_modularity.data.probe import check_probe_size
    from dnn_modularity.loggers import RunCSVLogger

    hydra_cfg = hydra_config()
    check_config(cfg, hydra_cfg)
    resume = load_checkpoint(str(cfg.ckpt_path)) if cfg.get("ckpt_path") else None
    with open_dict(cfg):
        cfg.run_dir = str(resolve_run_dir(cfg, hydra_cfg))
    run_dir = Path(cfg.run_dir)
    callbacks = build_callbacks(cfg.get("callbacks"), run_dir)
    callbacks.append(EpochProgress("training"))  # epochs + ETA in the log, not only on a TTY
    monitors = [cb for cb in callbacks if isinstance(cb, ModularityMonitor)]
    if resume is not None:
        for monitor in monitors:  # refused before the run folder is touched
            monitor.check_resume(resume, cfg.ckpt_path)
    run_dir = prepare_run_dir(cfg, hydra_cfg, resumes=True)
    configure_torch(cfg)
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)

    datamodule = instantiate(cfg.data)  # raises early on a missing dataset folder
    if "modularity" in (cfg.get("callbacks") or {}):
        # Probe N > graph k and N > the number of classes, as in analyze and prune.
        check_probe_size(
            int(cfg.probe.n), datamodule.num_classes, k=int(cfg.graph.k), dataset=datamodule.name
        )
    module = build_classifier(
        cfg,
        OmegaConf.to_container(cfg.model, resolve=True),  # type: ignore[arg-type]
        datamodule,
    )
    loggers: list[Any] = []
    try:
        loggers = build_loggers(cfg.get("logger"), run_dir, default_run_name(cfg, run_dir))
        csv_logger = next((lg for lg in loggers if isinstance(lg, RunCSVLogger)), None)
        if resume is not None and csv_logger is not None and is_rank_zero():
            csv_logger.drop_rows_after(int(resume.get("global_step", 0)))
        log_config(loggers, cfg)
        trainer = build_trainer(cfg.trainer, run_dir, callbacks=callbacks, loggers=loggers)
        start = time.perf_counter()
        # weights_only=True: resuming reads tensors and plain containers only (no code).
        trainer.fit(
            module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True
        )
        fit_seconds = time.perf_counter() - start
        # Lightning ignores a checkpoint it could not write (a PermissionError while saving):
        # fail here, on every rank together, rather than report weights that do not exist.
        missing = missing_outputs(checkpoint_files(trainer)) if trainer.is_global_zero else []
        require_outputs(trainer.strategy.broadcast(missing, src=0), run_dir)

        test_metrics: dict[str, float] = {}
        if cfg.get("test", True):
            ckpt = None
            best = getattr(trainer.checkpoint_callback, "best_model_path", "")
            if cfg.get("test_ckpt", "last") == "best" and best:
                ckpt = best
            results = trainer.test(
                module, datamodule=datamodule, ckpt_path=ckpt, verbose=False, weights_only=True
            )
            test_metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}

        monitor = monitors[0] if monitors else None
        measured = monitor is not None and bool(monitor.history)
        checkpoint = trainer.checkpoint_callback
        # Only what this run writes by design: fast_dev_run, for one, replaces the loggers and
        # saves no checkpoints.
        logged = csv_logger is not None and csv_logger in trainer.loggers
        saved = [p for p in checkpoint_files(trainer).values() if run_dir in Path(p).parents]
        paths = {
            "config": str(run_dir / "config.yaml"),
            "checkpoints": str(run_dir / "checkpoints") if saved else None,
            "best_checkpoint": getattr(checkpoint, "best_model_path", "") or None,
            "last_checkpoint": next(
                (
                    cb.best_model_path
                    for cb in trainer.checkpoint_callbacks
                    if cb.monitor is None and cb.best_model_path
                ),
                None,
            ),
            "metrics_csv": csv_logger.metrics_file if logged else None,
            "modularity_csv": str(monitor.csv_path(trainer)) if measured else None,
            "figures": str(run_dir / "figures") if measured and monitor.figures else None,
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
            require_outputs(missing_outputs(paths), run_dir)
            write_json(run_dir / "results.json", result)
        return result
    finally:
        finish_wandb(loggers)


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
