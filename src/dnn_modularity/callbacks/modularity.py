"""`ModularityMonitor`: per-layer modularity curves during training (paper 1, Sec. 4.3, Fig. 6b).

At the start of training (epoch 0 = the initialisation) and after every `every_n_epochs` epochs
(epoch e = the weights after e training epochs), the fixed probe set (N test samples, see
`dnn_modularity.data.probe`) goes through the network in eval mode; for every tapped layer the
callback builds the k-NN graph of the flattened features (paper 1 Eq. 3) and computes the Newman
modularity with the classes as communities (Eq. 1), and optionally paper 2's class-separation
modularity M = r x AQ x (1 - EQ) on the top-|E| similarity subgraph.

Outputs: one scalar per layer to every logger (`modularity/layer_07`, `M/layer_07`), rows in
`<output_dir>/modularity.csv` (written atomically, rank 0 only), and at the end of training a
curve figure and an epoch x layer heatmap in `<output_dir>/figures/` (and, with a `WandbLogger`,
as W&B images plus a table).

DDP: every rank forwards its shard `r::world` of the probe set; the torchmetrics wrappers gather
the shards with their probe positions, restore the order and drop duplicates, so every rank
computes exactly the single-process value (same weights -> same curve), and rank 0 writes.

The callback is thin: it schedules, writes rows and logs; the measurement
(:mod:`~dnn_modularity.callbacks.monitor_measure`), the checkpoint state and resume checks
(:mod:`~dnn_modularity.callbacks.monitor_resume`) and the figures
(:mod:`~dnn_modularity.callbacks.monitor_figures`) are its parts, one module each.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback

from dnn_modularity.callbacks.monitor_diagnostics import CSV_NAME as DIAGNOSTICS_CSV
from dnn_modularity.callbacks.monitor_diagnostics import DEFAULT_DIAGNOSTICS, MonitorDiagnostics
from dnn_modularity.callbacks.monitor_figures import MonitorFigures, rows_to_matrix
from dnn_modularity.callbacks.monitor_measure import FEATURE_MODES, ProbeMeasurement
from dnn_modularity.callbacks.monitor_resume import RESUME_CHANGES, RESUME_SETTINGS, MonitorResume
from dnn_modularity.callbacks.overhead import OverheadClock, timed_hook
from dnn_modularity.data.probe import STRATEGIES, ProbeSet, check_probe_size
from dnn_modularity.graph import METRICS, resolve_num_edges
from dnn_modularity.metrics import ClassSeparationModularity, KNNModularity
from dnn_modularity.records import (
    CSV_COLUMNS,
    append_csv_rows,
    layer_key,
    write_csv_rows,
)

__all__ = [
    "FEATURE_MODES",
    "RESUME_CHANGES",
    "RESUME_SETTINGS",
    "ModularityMonitor",
    "rows_to_matrix",
]

log = logging.getLogger(__name__)


def _arch_name(pl_module: Any) -> str | None:
    """The architecture name of a classifier (``net.arch_config()["name"]``), or None."""
    net = getattr(pl_module, "net", pl_module)
    try:
        return str(net.arch_config()["name"])
    except (AttributeError, KeyError, NotImplementedError, TypeError):
        return None


def _fit_device(trainer: L.Trainer, pl_module: L.LightningModule) -> torch.device:
    """The device this process trains on (known in ``setup``, before the module is moved)."""
    try:
        return trainer.strategy.root_device
    except (AttributeError, RuntimeError, IndexError):  # a strategy without a root device
        return pl_module.device


class ModularityMonitor(ProbeMeasurement, MonitorResume, MonitorFigures, Callback):
    """Per-epoch, per-layer k-NN modularity (and optionally paper 2's M) of a fixed probe set.

    Args:
        n: Probe-set size N (paper 1 uses N = 500 on CIFAR-10 / ImageNet50).
        k: Neighbours per node of the k-NN graph (paper 1: k = 3). Must be < N.
        metric: Similarity, one of `dnn_modularity.graph.METRICS` ("cosine", "pearson").
        taps: Which layers: a tap mode ("block", "official"), a selector or a list of module
            names, see `dnn_modularity.taps.resolve_taps`.
        every_n_epochs: Measure after every this many epochs (plus epoch 0 and the last epoch).
        seed: Seed of the probe draw.
        strategy: "balanced" (N / C per class, seeded) or "sequential" (first N, official code).
        repeats: Number R of probe sets (rows carry `repeat`; logged scalars are their mean).
        disjoint: Repeats use disjoint samples (True) or independent draws.
        compute_M: Also compute paper 2's M on the top-`num_edges` similarity subgraph.
        num_edges: |E| of that subgraph; None (default): paper 2's edge density (40,000 of the
            pairs of N = 4,000, 0.5 %) for this N; an explicit value is clamped to N(N-1)/2 with
            a warning. Rows record `num_edges` and `edge_density`.
        batch_size: Probe images per forward pass.
        feature_mode: One of `FEATURE_MODES`.
        feature_memory_mb: Memory budget of "auto" for the features held at once (MiB).
        feature_dtype: Dtype for stored features (e.g. "bfloat16" halves memory); None keeps the
            network's.
        output_dir: Folder of `modularity.csv` and `figures/` (default: `trainer.default_root_dir`).
        figures: Save the curve and heatmap figures at the end of training.
        figure_every_n_epochs: Also refresh figures during training every this many measured
            epochs (None: only at the end; figures cost ~1 s each).
        log_prefix: Prefix of the logged keys (e.g. "adv_pgd/" -> "adv_pgd/modularity/layer_07").
        csv_name: File name of the rows.
        on_resume_change: One of `RESUME_CHANGES`: what a resume from a checkpoint measured with
            other settings (`RESUME_SETTINGS`) does.
        diagnostics: Per-class diagnostics from the same k-NN graph, any of "purity", "pairs",
            "knn_acc", "linear_probe" (`dnn_modularity.callbacks.monitor_diagnostics`): rows in
            `diagnostics.csv`, scalars, figures; `modularity.csv` is unchanged. [] for none.
    """

    def __init__(
        self,
        n: int = 500,
        k: int = 3,
        metric: str = "cosine",
        taps: str | Sequence[str] = "block",
        every_n_epochs: int = 1,
        seed: int = 0,
        strategy: str = "balanced",
        repeats: int = 1,
        disjoint: bool = True,
        compute_M: bool = False,
        num_edges: int | None = None,
        batch_size: int = 500,
        feature_mode: str = "auto",
        feature_memory_mb: float = 1024.0,
        feature_dtype: str | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        figures: bool = True,
        figure_every_n_epochs: int | None = None,
        log_prefix: str = "",
        csv_name: str = "modularity.csv",
        on_resume_change: str = "error",
        diagnostics: Sequence[str] | str | None = DEFAULT_DIAGNOSTICS,
    ) -> None:
        super().__init__()
        if int(k) < 1:
            raise ValueError(f"graph k={k} must be >= 1")
        check_probe_size(n, None, k=k)  # the classes are checked once the data is known
        if metric not in METRICS:
            raise ValueError(f"similarity metric {metric!r} is not one of {tuple(METRICS)}")
        if strategy not in STRATEGIES:
            raise ValueError(f"probe strategy {strategy!r} is not one of {STRATEGIES}")
        if feature_mode not in FEATURE_MODES:
            raise ValueError(f"feature_mode {feature_mode!r} is not one of {FEATURE_MODES}")
        if on_resume_change not in RESUME_CHANGES:
            raise ValueError(
                f"on_resume_change={on_resume_change!r} is not one of {RESUME_CHANGES}"
            )
        for key, val in (
            ("every_n_epochs", every_n_epochs),
            ("repeats", repeats),
            ("batch_size", batch_size),
            ("num_edges", 1 if num_edges is None else num_edges),
        ):
            if int(val) < 1:
                raise ValueError(f"{key}={val} must be >= 1")
        if figure_every_n_epochs is not None and int(figure_every_n_epochs) < 1:
            raise ValueError(f"figure_every_n_epochs={figure_every_n_epochs} must be >= 1 or null")
        self.n, self.k, self.metric = int(n), int(k), str(metric)
        self.taps = taps if isinstance(taps, str) else list(taps)
        self.every_n_epochs = int(every_n_epochs)
        self.seed, self.strategy = int(seed), str(strategy)
        self.repeats, self.disjoint = int(repeats), bool(disjoint)
        self.compute_M = bool(compute_M)
        budget = resolve_num_edges(
            self.n, None if num_edges is None else int(num_edges), warn=self.compute_M
        )
        self.num_edges = budget.num_edges
        self.edge_density = budget.density
        self.batch_size = int(batch_size)
        self.feature_mode = feature_mode
        self.feature_memory_mb = float(feature_memory_mb)
        self.feature_dtype = getattr(torch, feature_dtype) if feature_dtype else None
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.figures = bool(figures)
        self.figure_every_n_epochs = figure_every_n_epochs
        self.log_prefix = str(log_prefix)
        self.csv_name = str(csv_name)
        self.on_resume_change = str(on_resume_change)
        self._figure_tag = ""  # set when a resume continues into a new record file
        # Optional per-class diagnostics, computed from the graph Q is computed on.
        self._diag = MonitorDiagnostics.create(
            diagnostics, k=self.k, metric=self.metric, seed=self.seed, log_prefix=self.log_prefix
        )

        self.history: list[dict[str, Any]] = []
        self.probes: list[ProbeSet] = []
        self.timings: list[dict[str, float]] = []
        self.epoch_seconds: list[float] = []
        self.resolved_mode: str | None = None
        self._groups: list[list[int]] | None = None
        self._epoch_start: float | None = None
        self._knn: KNNModularity | None = None
        self._sep: ClassSeparationModularity | None = None
        self._measured_since_figure = 0
        self.model_name: str | None = None  # for the authors' reference curve in the figure
        self.data_name: str | None = None
        # Everything this callback adds to a fit (setup, measurements, records, end figures),
        # against the fit's wall time: the logged overhead an on/off comparison would measure.
        self.overhead_clock = OverheadClock()

    @property
    def tap_label(self) -> str:
        """The `tap` column: the tap mode/selector string, or "custom" for a list of names."""
        return self.taps if isinstance(self.taps, str) else "custom"

    def csv_path(self, trainer: L.Trainer | None = None) -> Path:
        """Where the rows go: `<output_dir>/modularity.csv`."""
        return self._out_dir(trainer) / self.csv_name

    def diagnostics_csv_path(self, trainer: L.Trainer | None = None) -> Path:
        """Where the diagnostics rows go: `diagnostics.csv` beside `modularity.csv`.

        Beside another record file `<stem>.csv` (a second monitor, a resumed record):
        `<stem>_diagnostics.csv`.
        """
        stem = Path(self.csv_name).stem
        name = DIAGNOSTICS_CSV if stem == "modularity" else f"{stem}_{DIAGNOSTICS_CSV}"
        return self._out_dir(trainer) / name

    def _out_dir(self, trainer: L.Trainer | None) -> Path:
        if self.output_dir is not None:
            return self.output_dir
        if trainer is None:
            raise ValueError("ModularityMonitor: output_dir is unset and no trainer was given")
        return Path(trainer.default_root_dir)

    # --- Lightning hooks -----------------------------------------------------------------------
    @timed_hook("setup")
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Draw the probe sets from the datamodule's test split (identical on every rank)."""
        if stage != "fit":
            return
        # GPU kernels run asynchronously: the clock waits for the fit's device at each reading
        # so that each part holds the device work it queued (not the training's before it).
        self.overhead_clock.watch_device(_fit_device(trainer, pl_module))
        self.overhead_clock.start_fit()  # the fit's first callback hook
        self.model_name = _arch_name(pl_module)
        if self._diag is not None:
            self._diag.setup(trainer.datamodule)
        if self.probes:
            return
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "probe_dataset"):
            raise ValueError(
                "ModularityMonitor needs a datamodule with probe_dataset()/test_labels() "
                "(the dnn_modularity.data modules); pass datamodule=... to trainer.fit"
            )
        self.setup_probes(dm)

    @timed_hook("measure")
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Epoch 0 (initialisation) - or, on resume, the checkpoint's epoch if not measured yet."""
        epoch = int(trainer.current_epoch)
        # Rows after the checkpoint's epoch belong to a run that is being redone: drop them and
        # rewrite the file from the checkpointed history (same run dir or a new one).
        self.history = [r for r in self.history if int(r["epoch"]) <= epoch]
        if trainer.is_global_zero and (self.history or self.csv_path(trainer).exists()):
            write_csv_rows(self.csv_path(trainer), self.history, fieldnames=CSV_COLUMNS)
        if self._diag is not None:
            self._diag.restart(epoch, self.diagnostics_csv_path(trainer), trainer.is_global_zero)
        if self._is_due(epoch, trainer) and not self._measured(epoch):
            self._measure(trainer, pl_module, epoch, epoch_seconds=None)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start the epoch clock (for the overhead ratio)."""
        self._epoch_start = self.overhead_clock.now()

    @timed_hook("measure")
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Measure after epoch e = current_epoch + 1 (validation of that epoch has already run)."""
        epoch_seconds = (
            self.overhead_clock.now() - self._epoch_start if self._epoch_start is not None else None
        )
        if epoch_seconds is not None:
            self.epoch_seconds.append(epoch_seconds)
        epoch = int(trainer.current_epoch) + 1
        if self._is_due(epoch, trainer) and not self._measured(epoch):
            self._measure(trainer, pl_module, epoch, epoch_seconds=epoch_seconds)

    @timed_hook("figures")
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Final figures (rank 0), W&B images + table."""
        if not trainer.is_global_zero or not self.history:
            return
        if self.figures:
            paths = self.save_figures(trainer)
            self._log_media(trainer, paths)
            if self._diag is not None:
                folder = self._out_dir(trainer) / "figures"
                diag_paths = self._diag.save_figures(folder, self._figure_tag)
                self._diag.log_media(trainer, diag_paths)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Stop the fit clock (the fit's last callback hook) and log what the monitor cost."""
        self.overhead_clock.end_fit()
        summary = self.overhead_summary()
        if trainer.is_global_zero and summary["measurements"]:
            log.info(  # the module's logger: in the run's train.log too, not only the console
                f"ModularityMonitor: {int(summary['measurements'])} measurements, "
                f"{summary['mean_seconds']:.3f} s each; {summary.get('own_seconds', 0.0):.1f} s in "
                f"all, {100 * summary['overhead']:.1f}% on top of the fit without it "
                f"({self.resolved_mode} features)"
            )

    # --- scheduling ----------------------------------------------------------------------------
    def _is_due(self, epoch: int, trainer: L.Trainer) -> bool:
        last = (
            trainer.max_epochs is not None
            and trainer.max_epochs > 0
            and epoch == trainer.max_epochs
        )
        return epoch == 0 or epoch % self.every_n_epochs == 0 or last

    def _measured(self, epoch: int) -> bool:
        return any(int(r["epoch"]) == epoch for r in self.history)

    # --- measurement ---------------------------------------------------------------------------
    def setup_probes(self, datamodule: Any) -> None:
        """Draw the probe sets from `datamodule` (what `setup` does inside a Trainer).

        Raises:
            ValueError: N not larger than the number of classes (`check_probe_size`).
        """
        self.data_name = getattr(datamodule, "name", None)
        check_probe_size(
            self.n,
            getattr(datamodule, "num_classes", None),
            dataset=getattr(datamodule, "name", None),
        )
        self.probes = [
            ProbeSet.from_datamodule(
                datamodule, self.n, self.seed, self.strategy, repeat=r, disjoint=self.disjoint
            )
            for r in range(self.repeats)
        ]

    def _measure(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        epoch: int,
        epoch_seconds: float | None,
    ) -> None:
        start = self.overhead_clock.now()
        rows = [
            {"epoch": epoch, **row}
            for row in self.measure(pl_module, trainer.global_rank, trainer.world_size)
        ]
        self.history.extend(rows)
        if trainer.is_global_zero:
            append_csv_rows(self.csv_path(trainer), rows, fieldnames=CSV_COLUMNS)
        if self._diag is not None:
            self._diag.record(trainer, epoch, self.diagnostics_csv_path(trainer))
        seconds = self.overhead_clock.now() - start
        timing = {"epoch": float(epoch), "seconds": seconds}
        if epoch_seconds:
            timing["epoch_seconds"] = epoch_seconds
        self.timings.append(timing)
        self._log_scalars(trainer, rows, epoch, seconds, epoch_seconds)
        if trainer.is_global_zero:
            log.info(self._summary_line(rows, epoch, seconds))
        self._measured_since_figure += 1
        if (
            self.figures
            and self.figure_every_n_epochs is not None
            and self._measured_since_figure >= self.figure_every_n_epochs
            and trainer.is_global_zero
        ):
            self.save_figures(trainer)

    def _summary_line(self, rows: list[dict[str, Any]], epoch: int, seconds: float) -> str:
        """One line per measurement: first, last and highest Q of the curve, and its cost."""
        _, names, matrix = rows_to_matrix(rows)
        curve = matrix[0].tolist() if matrix.numel() else []
        if not curve:
            return f"modularity after epoch {epoch}: no layers measured"
        top = max(range(len(curve)), key=lambda i: curve[i])
        return (
            f"modularity after epoch {epoch}: Q {curve[0]:.3f} (layer 1) -> {curve[-1]:.3f} "
            f"(layer {len(curve)}), max {curve[top]:.3f} at layer {top + 1} ({names[top]}); "
            f"N={self.n}, k={self.k}, {self.repeats} probe set(s), {seconds:.2f} s"
        )

    def _log_scalars(
        self,
        trainer: L.Trainer,
        rows: list[dict[str, Any]],
        epoch: int,
        seconds: float,
        epoch_seconds: float | None,
    ) -> None:
        # Not Lightning's "epoch" key: that column holds the 0-based index of the running epoch,
        # while ours counts epochs completed (0 = initialisation, as in modularity.csv).
        metrics: dict[str, float] = {f"{self.log_prefix}modularity/epoch": float(epoch)}
        for value in ("modularity", "M"):
            sums: dict[int, list[float]] = {}
            for row in rows:
                if row[value] is not None:
                    sums.setdefault(row["layer_index"], []).append(float(row[value]))
            for index, vals in sums.items():
                metrics[f"{self.log_prefix}{value}/{layer_key(index)}"] = sum(vals) / len(vals)
        metrics[f"{self.log_prefix}modularity/overhead_s"] = seconds
        if epoch_seconds:
            metrics[f"{self.log_prefix}modularity/overhead_frac"] = seconds / epoch_seconds
        for logger in trainer.loggers:  # loggers are rank-zero-only themselves
            logger.log_metrics(metrics, step=trainer.global_step)

    # --- outputs -------------------------------------------------------------------------------
    def overhead_summary(self) -> dict[str, float]:
        """Time spent by this callback vs the fit without it.

        Returns:
            `measurements`, `total_seconds` and `mean_seconds` of the measurements (epoch 0
            included) and `epoch_seconds` (training + validation time of the epochs run). Inside
            a fit also `own_seconds`, all the wall time of this callback's hooks (probe drawing,
            measurements, records, logging, end figures; `<part>_seconds` each), `fit_seconds`
            (its first hook to its last) and `overhead` = own / (fit - own): the share it adds to
            the same fit without it. Outside a fit, `overhead` = total_seconds / epoch_seconds.
        """
        total = sum(t["seconds"] for t in self.timings)
        epochs = sum(self.epoch_seconds)
        summary = {
            "measurements": float(len(self.timings)),
            "total_seconds": total,
            "mean_seconds": total / len(self.timings) if self.timings else float("nan"),
            "epoch_seconds": epochs,
            "overhead": total / epochs if epochs > 0 else float("nan"),
        }
        clock = self.overhead_clock.summary()
        if not math.isnan(clock["fit_seconds"]):
            summary.update(clock)
        return summary
