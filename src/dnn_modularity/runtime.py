"""Run plumbing shared by the commands (`train`, `prune`, `analyze`, `report`).

One place for what every Hydra command does around its own work: find `conf/`, instantiate
config nodes with readable errors, pick and prepare the run folder, build the Lightning callbacks,
classifier and trainer of the `callbacks` / `trainer` groups, apply the torch settings, and fit +
test a classifier (`fit_and_test`, used by `train` and by `prune`'s fine-tuning). Loggers (W&B,
CSV, TensorBoard) are `dnn_modularity.loggers`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from dnn_modularity import config_dir
from dnn_modularity.console import silence_known_noise
from dnn_modularity.rundir import claim_run_dir, is_rank_zero, run_stamp

__all__ = [
    "CONF_DIR",
    "FitResult",
    "OutputsMissingError",
    "build_callbacks",
    "build_classifier",
    "build_trainer",
    "checkpoint_files",
    "claim_config_run_dir",
    "config_group",
    "configure_torch",
    "fit_and_test",
    "hydra_config",
    "instantiate",
    "instantiate_group",
    "is_rank_zero",
    "missing_outputs",
    "plain_or_none",
    "prepare_run_dir",
    "require_outputs",
    "resolve_run_dir",
]

#: The Hydra config folder (see `dnn_modularity.config_dir`: `$DNN_MODULARITY_CONF`, else the
#: checkout's `conf/`, else the copy installed with the package), read once at import.
CONF_DIR = config_dir()


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


def instantiate_group(
    node: Any, overrides: Callable[[str, DictConfig], dict[str, Any]]
) -> list[Any]:
    """Instantiate every member of a dict-of-objects group (:func:`config_group`), in order.

    Args:
        node: The group's node (None/empty: nothing).
        overrides: ``(name, config) -> keyword overrides`` of that member (e.g. its folder).
    """
    return [instantiate(spec, **overrides(name, spec)) for name, spec in config_group(node).items()]


# --- run folder ------------------------------------------------------------------------------
def hydra_config() -> Any | None:
    """`HydraConfig.get()` when running under `@hydra.main` (or a compose with it), else None."""
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
    if cfg.get("num_threads"):
        # Small CPU models on a shared machine: more threads than free cores makes torch's
        # OpenMP threads spin against each other (measured: 10x slower epochs).
        torch.set_num_threads(int(cfg.num_threads))
    if cfg.get("matmul_precision"):
        torch.set_float32_matmul_precision(str(cfg.matmul_precision))


# --- Lightning objects -----------------------------------------------------------------------


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

    def folders(name: str, spec: DictConfig) -> dict[str, Any]:
        overrides: dict[str, Any] = {}
        if "dirpath" in spec and spec.dirpath is None:
            sub = _CHECKPOINT_DIRS.get(name, f"checkpoints/{name}")
            overrides["dirpath"] = str(run_dir / sub)
        if "output_dir" in spec and spec.output_dir is None:
            overrides["output_dir"] = str(run_dir)
        return overrides

    return instantiate_group(node, folders)


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
    # local: the classifier imports Lightning and the model zoo; config plumbing stays light
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


# --- fit and test ----------------------------------------------------------------------------
@dataclass
class FitResult:
    """What `fit_and_test` did.

    Attributes:
        seconds: Wall time of `trainer.fit`.
        test: The test metrics (`test/acc`, `test/loss`, ...; empty when not tested).
        tested_ckpt: The checkpoint the test read (`test_ckpt=best`), None for the final weights.
    """

    seconds: float
    test: dict[str, float]
    tested_ckpt: str | None


def fit_and_test(
    trainer: Any,
    module: Any,
    datamodule: Any,
    run_dir: Path,
    *,
    ckpt_path: str | None = None,
    test: bool = True,
    test_ckpt: str = "last",
    final_ckpt: Path | None = None,
) -> FitResult:
    """Fit `module`, check every checkpoint the run reports exists, then test it.

    Used by `train` and by `prune`'s fine-tuning, so both test the same weights the same way.

    Args:
        trainer: A `lightning.pytorch.Trainer` (see `build_trainer`).
        module: The LightningModule.
        datamodule: The LightningDataModule.
        run_dir: The run folder (for the missing-outputs message).
        ckpt_path: Checkpoint to resume from (read with `weights_only=True`: no code runs).
        test: Test after fitting.
        test_ckpt: `last` (the final weights) or `best` (the best `val/acc` checkpoint).
        final_ckpt: Also save the final weights here (whatever the checkpoint callbacks keep).

    Returns:
        The `FitResult`.

    Raises:
        OutputsMissingError: A checkpoint the run reports was not written (Lightning skips a
            checkpoint it may not write without an error); raised on every rank together.
    """
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    seconds = time.perf_counter() - start
    expected = checkpoint_files(trainer)
    if final_ckpt is not None:
        trainer.save_checkpoint(str(final_ckpt), weights_only=False)
        expected["final checkpoint"] = str(final_ckpt)
    missing = missing_outputs(expected) if trainer.is_global_zero else {}
    require_outputs(trainer.strategy.broadcast(missing, src=0), run_dir)
    if not test:
        return FitResult(seconds, {}, None)
    best = getattr(trainer.checkpoint_callback, "best_model_path", "")
    tested = best if test_ckpt == "best" and best else None
    results = trainer.test(
        module, datamodule=datamodule, ckpt_path=tested, verbose=False, weights_only=True
    )
    metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}
    return FitResult(seconds, metrics, tested)
