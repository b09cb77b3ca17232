"""Config-facing side of the analyses: model, data, probe sets, output folder and loggers.

The analysis modules' plain functions take tensors; their ``run(cfg)`` functions use this module
to turn the composed ``analyze`` config into those tensors and to write and log the results
(:func:`finish`). Nothing here computes a graph.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dnn_modularity.analysis.common import AnalysisOutput, resolve_device, save_output
from dnn_modularity.io import atomic_write_text
from dnn_modularity.models.classifier import check_model_fits_data, load_classifier
from dnn_modularity.runtime import (
    build_loggers,
    claim_config_run_dir,
    finish_wandb,
    hydra_config,
    instantiate,
    resolve_run_dir,
)

__all__ = [
    "Context",
    "command_clock",
    "finish",
    "load_context",
    "load_model",
    "log_artifacts",
    "probe_sets",
]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

#: ``time.perf_counter()`` at the entry of the running ``analyze`` command (see
#: :func:`command_clock`): the durations a run records are then the command's wall time, not
#: only the time after its data and model were loaded.
_COMMAND_STARTED: float | None = None


@contextlib.contextmanager
def command_clock(started: float) -> Iterator[None]:
    """Within the block, :func:`load_context` times the run from ``started``.

    Args:
        started: ``time.perf_counter()`` at the entry of the command.
    """
    global _COMMAND_STARTED
    previous, _COMMAND_STARTED = _COMMAND_STARTED, float(started)
    try:
        yield
    finally:
        _COMMAND_STARTED = previous


@dataclass
class Context:
    """What an analysis run needs besides its own settings.

    Attributes:
        cfg: The composed config.
        model: ``Normalized`` model in eval mode on ``device`` (None when not needed).
        datamodule: The data module (set up).
        out_dir: Run folder for records and figures.
        device: Where the model runs.
        taps: Tap selection.
        block_size: Engine block size (None: engine default).
        feature_dtype: Dtype of the layer features (None: the model's).
        class_names: Class names by label, when the dataset has them.
        model_name: Architecture name for titles.
        loggers: Lightning loggers to send figures/tables/metrics to.
        started: ``time.perf_counter()`` at the entry of the command (inside
            :func:`command_clock`), else at load.
    """

    cfg: Any
    model: nn.Module | None
    datamodule: Any
    out_dir: Path
    device: torch.device
    taps: Any
    block_size: int | None
    feature_dtype: torch.dtype | None
    class_names: list[str] | None
    model_name: str
    loggers: list[Any] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def title(self, what: str, source: Any = None) -> str:
        """Figure title: ``what: model on data`` (or on ``source``)."""
        data = getattr(self.datamodule, "name", "") if self.datamodule is not None else ""
        where = f"{self.model_name} on {data}" if source is None else str(source)
        return f"{what}: {where}" if what else where


def load_model(ckpt_path: str, device: torch.device | str = "cpu") -> nn.Module:
    """The [0, 1]-input model (``Normalized``) of a training checkpoint, in eval mode.

    Args:
        ckpt_path: ``.ckpt`` written by ``dnn_modularity.train``.
        device: Where to put it.

    Raises:
        FileNotFoundError: No such file.
    """
    from dnn_modularity.models.classifier import load_classifier

    classifier = load_classifier(ckpt_path, map_location=torch.device(device))
    return classifier.model.eval()


def load_context(cfg: Any, *, need_model: bool = True) -> Context:
    """Build the :class:`Context` of a run from the composed ``analyze`` config.

    Args:
        cfg: Config with ``ckpt_path``, ``data``, ``probe``, ``graph``, ``taps``, ``device``...
        need_model: Load the model (False for analyses reading records only).

    Raises:
        ValueError: Neither ``ckpt_path`` nor ``model`` given when a model is needed, or model
            and data that do not fit together.
        RunDirInUseError: The output folder holds another run's outputs.
    """
    analysis = str(cfg.analysis.name)
    device = resolve_device(cfg.get("device"))
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    hydra_cfg = hydra_config()
    out_dir = resolve_run_dir(cfg, hydra_cfg, default_name="analyze", subdir=analysis)
    model = None
    model_name = "model"
    if need_model:
        trained_on = None
        if cfg.get("ckpt_path"):
            classifier = load_classifier(str(cfg.ckpt_path), map_location=device)
            model, trained_on = classifier.model.eval(), classifier.hparams.get("data")
            where = f"checkpoint {cfg.ckpt_path}"
        elif cfg.get("model"):
            from omegaconf import OmegaConf

            from dnn_modularity.models import Normalized, build_model

            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(cfg.seed))
                net = build_model(**OmegaConf.to_container(cfg.model, resolve=True))
            model = Normalized(net, datamodule.mean, datamodule.std).to(device).eval()
            where = f"model={cfg.model.name} (untrained, no ckpt_path)"
        else:
            raise ValueError(
                f"analysis={analysis} needs a model: pass ckpt_path=<run>/checkpoints/<file>.ckpt "
                "(or model=<name> for an untrained network)"
            )
        check_model_fits_data(model.arch_config(), datamodule, where, trained_on)
        model_name = str(model.arch_config().get("name", "model"))
    dtype_name = cfg.get("feature_dtype")
    if dtype_name is not None and str(dtype_name) not in _DTYPES:
        raise ValueError(f"feature_dtype={dtype_name!r}; valid choices: {[*_DTYPES, None]}")
    taps = cfg.probe.get("taps", "block") if cfg.get("probe") else "block"
    if not isinstance(taps, str):
        taps = list(taps)
    graph = cfg.get("graph") or {}
    class_names = getattr(datamodule, "classes", None) or getattr(datamodule, "class_names", None)
    # One run per folder (after the checks above, so a refused config leaves nothing behind):
    # a folder holding another run's outputs is refused unless overwrite=true.
    inputs = [cfg.get("ckpt_path"), (cfg.get("analysis") or {}).get("run_dir")]
    claim_config_run_dir(cfg, out_dir, hydra_cfg, inputs=inputs)
    return Context(
        cfg=cfg,
        model=model,
        datamodule=datamodule,
        out_dir=out_dir,
        device=device,
        taps=taps,
        block_size=graph.get("block_size"),
        feature_dtype=_DTYPES[str(dtype_name)] if dtype_name is not None else None,
        class_names=list(class_names) if class_names else None,
        model_name=model_name,
        started=_COMMAND_STARTED if _COMMAND_STARTED is not None else time.perf_counter(),
        # A subfolder: the records own the run folder (CSVLogger would warn about it).
        loggers=build_loggers(
            cfg.get("logger"),
            out_dir / "logs",
            f"{cfg.get('name', 'analyze')}-{analysis}-{out_dir.name}",
        ),
    )


def probe_sets(
    ctx: Context,
    *,
    repeats: int,
    n: int | None = None,
    strategy: str | None = None,
    disjoint: bool | None = None,
) -> list[Any]:
    """``repeats`` probe sets of the test split (``cfg.probe`` settings unless given).

    Args:
        ctx: The run context.
        repeats: Number of (disjoint when ``cfg.probe.disjoint``) repeats.
        n: Probe size (default ``cfg.probe.n``).
        strategy: ``balanced`` or ``sequential`` (default ``cfg.probe.strategy``).
        disjoint: Disjoint repeats (default ``cfg.probe.disjoint``).

    Returns:
        ``ProbeSet`` objects, images in [0, 1] on the CPU.

    Raises:
        ValueError: A probe size the curve cannot use (``check_probe_size``: N <= classes).
    """
    from dnn_modularity.data.probe import ProbeSet, check_probe_size

    probe = ctx.cfg.probe
    n = int(probe.n) if n is None else int(n)
    check_probe_size(
        n,
        getattr(ctx.datamodule, "num_classes", None),
        dataset=getattr(ctx.datamodule, "name", None),
    )
    strategy = str(probe.get("strategy", "balanced")) if strategy is None else strategy
    disjoint = bool(probe.get("disjoint", True)) if disjoint is None else bool(disjoint)
    return [
        ProbeSet.from_datamodule(
            ctx.datamodule,
            n,
            seed=int(probe.seed),
            strategy=strategy,
            repeat=r,
            disjoint=disjoint,
        )
        for r in range(int(repeats))
    ]


def log_artifacts(
    loggers: Sequence[Any],
    prefix: str,
    *,
    metrics: dict[str, float] | None = None,
    pngs: dict[str, Path] | None = None,
    files: Sequence[Path] = (),
    tables: dict[str, list[dict[str, Any]]] | None = None,
) -> None:
    """Send metrics, figures (PNG), GIFs and tables to Lightning loggers, then close them.

    W&B gets images (``log_image``), GIFs (``wandb.Video``) and tables (``log_table``);
    TensorBoard gets images (``add_image``); every logger gets the metrics (``log_metrics``).

    Args:
        loggers: Lightning loggers.
        prefix: Key prefix (analysis name).
        metrics: Flat metric keys -> values.
        pngs: Figure name -> PNG path.
        files: Other written files (GIFs are logged).
        tables: Table name -> rows.
    """
    if not loggers:
        return
    import numpy as np
    from PIL import Image

    metrics = {k: float(v) for k, v in (metrics or {}).items() if v is not None}
    for logger in loggers:
        kind = type(logger).__name__
        if metrics:
            logger.log_metrics(metrics, step=0)
        if kind == "WandbLogger":
            import wandb

            for name, png in (pngs or {}).items():
                logger.log_image(key=f"{prefix}/{name}", images=[str(png)])
            for path in files:
                if str(path).endswith(".gif"):
                    logger.experiment.log(
                        {f"{prefix}/{Path(path).stem}": wandb.Video(str(path), format="gif")}
                    )
            for name, rows in (tables or {}).items():
                if rows:
                    columns = list(dict.fromkeys(k for r in rows for k in r))
                    data = [[_cell(r.get(c)) for c in columns] for r in rows]
                    logger.log_table(key=f"{prefix}/{name}", columns=columns, data=data)
        elif kind == "TensorBoardLogger":
            for name, png in (pngs or {}).items():
                image = np.asarray(Image.open(png).convert("RGB"))
                logger.experiment.add_image(f"{prefix}/{name}", image, 0, dataformats="HWC")
        logger.save()
        logger.finalize("success")
    finish_wandb(loggers)


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def finish(ctx: Context, output: AnalysisOutput) -> dict[str, Any]:
    """Write records, figures and the resolved config; log them; return the run summary.

    Returns:
        ``{"analysis", "out_dir", "records", "figures", "files", "metrics", "seconds"}`` plus
        ``attacks`` for the adversarial analysis.
    """
    from omegaconf import OmegaConf

    output.meta.setdefault("model", ctx.model_name)
    output.meta.setdefault("data", getattr(ctx.datamodule, "name", None))
    output.meta.setdefault("ckpt_path", ctx.cfg.get("ckpt_path"))
    atomic_write_text(ctx.out_dir / "config.yaml", OmegaConf.to_yaml(ctx.cfg, resolve=True))
    # total_seconds: from the command's entry to the last figure (set inside save_output).
    written = save_output(output, ctx.out_dir, started=ctx.started)
    log_artifacts(
        ctx.loggers,
        output.name,
        metrics=output.metrics,
        pngs={name: paths[0] for name, paths in written["figures"].items()},
        files=written["files"],
        tables={"rows": output.rows, "summary": output.summary},
    )
    result = {
        "analysis": output.name,
        "out_dir": str(ctx.out_dir),
        "records": [str(p) for p in written["records"]],
        "figures": {k: [str(p) for p in v] for k, v in written["figures"].items()},
        "files": [str(p) for p in written["files"]],
        "metrics": output.metrics,
        "seconds": output.meta["total_seconds"],
    }
    if "attacks" in output.meta:
        result["attacks"] = output.meta["attacks"]
    return result
