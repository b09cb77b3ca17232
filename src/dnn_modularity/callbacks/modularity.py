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
"""

from __future__ import annotations

import ast
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from dnn_modularity.callbacks.overhead import OverheadClock, timed_hook  # [overhead accounting]
from dnn_modularity.data.probe import STRATEGIES, ProbeSet, check_probe_size
from dnn_modularity.graph import METRICS, resolve_num_edges
from dnn_modularity.io import append_csv_rows, atomic_save_figure, write_csv_rows
from dnn_modularity.metrics import ClassSeparationModularity, KNNModularity
from dnn_modularity.progress import track
from dnn_modularity.taps import LayerTaps, feature_dims, iter_layer_features, resolve_taps

__all__ = [
    "CSV_COLUMNS",
    "FEATURE_MODES",
    "RESUME_CHANGES",
    "RESUME_SETTINGS",
    "ModularityMonitor",
    "rows_to_matrix",
]

log = logging.getLogger(__name__)

#: Columns of `modularity.csv` (the contract's columns, the repeat index, then |E| and its density
#: when paper 2's M is computed).
CSV_COLUMNS = (
    "epoch",
    "layer_index",
    "layer",
    "tap",
    "N",
    "k",
    "metric",
    "modularity",
    "M",
    "seed",
    "repeat",
    "num_edges",
    "edge_density",
)

#: How features are collected:
#: - "per_layer": one layer's (N, D_l) features in memory at a time (`iter_layer_features`, which
#:   stops each pass after the tapped module: ~L/2 full forward passes for L layers);
#: - "all_layers": one forward pass holding every layer's features (`LayerTaps`);
#: - "auto": consecutive layers grouped so that each group's features fit in `feature_memory_mb`
#:   (a layer larger than the budget forms its own group), one forward pass per group; falls back
#:   to "per_layer" when that would need more passes. Memory is bounded by
#:   max(budget, one layer); small models on CIFAR-size probes need a single pass.
FEATURE_MODES = ("auto", "per_layer", "all_layers")


#: The monitor settings a resumed run must share with its checkpoint (its history's rows were
#: measured with them), and the config keys that set them (for messages).
RESUME_SETTINGS = {
    "n": "probe.n",
    "k": "graph.k",
    "metric": "graph.metric",
    "taps": "probe.taps",
    "seed": "probe.seed",
    "strategy": "probe.strategy",
    "repeats": "probe.repeats",
    "disjoint": "probe.disjoint",
    "compute_M": "graph.compute_M",
    "num_edges": "graph.num_edges",
}

#: What a resume whose monitor settings differ from the checkpoint's does: "error" (refuse,
#: naming the differing keys) or "new_record" (keep the old record file untouched and write the
#: new measurements into `<csv stem>_resumed_epoch<E>.csv` beside it).
RESUME_CHANGES = ("error", "new_record")

_STATE_PREFIX = "ModularityMonitor{"


def layer_key(index: int) -> str:
    """Metric-key suffix of a 1-based layer index: 7 -> "layer_07"."""
    return f"layer_{int(index):02d}"


def _arch_name(pl_module: Any) -> str | None:
    """The architecture name of a classifier (``net.arch_config()["name"]``), or None."""
    net = getattr(pl_module, "net", pl_module)
    try:
        return str(net.arch_config()["name"])
    except (AttributeError, KeyError, NotImplementedError, TypeError):
        return None


def rows_to_matrix(
    rows: Sequence[Mapping[str, Any]], value: str = "modularity"
) -> tuple[list[int], list[str], Tensor]:
    """Arrange monitor rows into an (epochs x layers) matrix, averaging over repeats.

    Args:
        rows: Row dicts with at least `epoch`, `layer_index`, `layer` and `value` (CSV strings ok).
        value: Column to arrange ("modularity" or "M").

    Returns:
        epochs: Sorted epochs (E,).
        layers: Layer names in layer-index order (L,).
        matrix: (E, L) float64, NaN where a value is missing.
    """
    cells: dict[tuple[int, int], list[float]] = {}
    names: dict[int, str] = {}
    for row in rows:
        raw = row.get(value)
        if raw is None or raw == "":
            continue
        epoch, index = int(row["epoch"]), int(row["layer_index"])
        names[index] = str(row["layer"])
        cells.setdefault((epoch, index), []).append(float(raw))
    epochs = sorted({e for e, _ in cells})
    indices = sorted(names)
    matrix = torch.full((len(epochs), len(indices)), float("nan"), dtype=torch.float64)
    for (epoch, index), vals in cells.items():
        matrix[epochs.index(epoch), indices.index(index)] = sum(vals) / len(vals)
    return epochs, [names[i] for i in indices], matrix


def _override(value: Any) -> str:
    """A value as a Hydra command-line override (lists as `[a,b]`)."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


class _Batches:
    """Re-iterable batches of a (shard of a) probe set, moved to `device` on the fly."""

    def __init__(self, images: Tensor, batch_size: int, device: torch.device) -> None:
        self.images, self.batch_size, self.device = images, batch_size, device

    def __iter__(self) -> Iterator[Tensor]:
        for start in range(0, self.images.shape[0], self.batch_size):
            yield self.images[start : start + self.batch_size].to(self.device, non_blocking=True)

    def __len__(self) -> int:
        return math.ceil(self.images.shape[0] / self.batch_size)


class ModularityMonitor(Callback):
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
        # [overhead accounting] everything this callback adds to a fit, against the fit's time
        self.overhead_clock = OverheadClock()

    # --- identity / state ----------------------------------------------------------------------
    @property
    def state_key(self) -> str:
        """Distinct per configuration, so several monitors can live in one checkpoint."""
        return self._generate_state_key(
            n=self.n, k=self.k, metric=self.metric, taps=str(self.taps), prefix=self.log_prefix
        )

    def settings(self) -> dict[str, Any]:
        """The settings every row of the history was measured with (`RESUME_SETTINGS` keys)."""
        return {
            "n": self.n,
            "k": self.k,
            "metric": self.metric,
            "taps": self.taps if isinstance(self.taps, str) else list(self.taps),
            "seed": self.seed,
            "strategy": self.strategy,
            "repeats": self.repeats,
            "disjoint": self.disjoint,
            "compute_M": self.compute_M,
            "num_edges": self.num_edges,
        }

    def state_dict(self) -> dict[str, Any]:
        """The measured rows, timings and settings: a resumed run continues the same history."""
        return {
            "history": [dict(r) for r in self.history],
            "timings": list(self.timings),
            "epoch_seconds": list(self.epoch_seconds),
            "settings": self.settings(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the history saved in a checkpoint (not when starting a new record file)."""
        if self._figure_tag:
            return
        self.history = [dict(r) for r in state_dict.get("history", [])]
        self.timings = list(state_dict.get("timings", []))
        self.epoch_seconds = list(state_dict.get("epoch_seconds", []))

    # --- resume --------------------------------------------------------------------------------
    def _checkpoint_state(self, checkpoint: Mapping[str, Any]) -> dict[str, Any] | None:
        """This monitor's state in a checkpoint: same key, else a monitor with the same prefix."""
        states = checkpoint.get("callbacks") or {}
        if self.state_key in states:
            return {"key": self._state_fields(self.state_key), **states[self.state_key]}
        for key, state in states.items():
            fields = self._state_fields(key) if isinstance(key, str) else None
            if fields is not None and fields.get("prefix", "") == self.log_prefix:
                return {"key": fields, **state}
        return None

    @staticmethod
    def _state_fields(key: str) -> dict[str, Any] | None:
        """`ModularityMonitor{'n': 100, ...}` (Lightning's state key) -> its fields."""
        if not key.startswith(_STATE_PREFIX):
            return None
        try:
            fields = ast.literal_eval(key[len(_STATE_PREFIX) - 1 :])
        except (ValueError, SyntaxError):
            return None
        return fields if isinstance(fields, dict) else None

    def resume_differences(self, checkpoint: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
        """Settings in which this monitor differs from the checkpoint's monitor.

        Checkpoints written before the settings were stored are compared on what their state
        key and rows record (N, k, metric, taps, seed).

        Args:
            checkpoint: A loaded checkpoint dict.

        Returns:
            `{setting: (checkpoint's value, this monitor's value)}`; empty when they agree or the
            checkpoint holds no modularity monitor.
        """
        state = self._checkpoint_state(checkpoint)
        if state is None:
            return {}
        mine = self.settings()
        theirs = dict(state.get("settings") or {})
        if not theirs:  # an older checkpoint: what its state key and rows say
            key = state["key"] or {}
            theirs = {name: key[name] for name in ("n", "k", "metric") if name in key}
            if "taps" in key:
                theirs["taps"] = key["taps"]
                mine["taps"] = str(self.taps)
            rows = state.get("history") or []
            if rows and "seed" in rows[0]:
                theirs["seed"] = rows[0]["seed"]
        if not (theirs.get("compute_M") or mine["compute_M"]):
            theirs.pop("num_edges", None)  # |E| only matters for M
        return {
            name: (theirs[name], mine[name])
            for name in RESUME_SETTINGS
            if name in theirs and theirs[name] != mine[name]
        }

    def check_resume(self, checkpoint: Mapping[str, Any], ckpt_path: Any = None) -> bool:
        """Refuse (or, with `on_resume_change="new_record"`, allow) resuming from `checkpoint`.

        Args:
            checkpoint: A loaded checkpoint dict.
            ckpt_path: Its path, for the message.

        Returns:
            True when the settings differ and the run continues into a new record file.

        Raises:
            ValueError: The settings differ and `on_resume_change="error"`; names every
                differing key with the checkpoint's and this run's value.
        """
        differences = self.resume_differences(checkpoint)
        if not differences:
            return False
        if self.on_resume_change == "new_record":
            return True
        listed = ", ".join(
            f"{RESUME_SETTINGS[name]}: checkpoint {old!r}, this run {new!r}"
            for name, (old, new) in differences.items()
        )
        same = " ".join(
            f"{RESUME_SETTINGS[name]}={_override(old)}" for name, (old, _) in differences.items()
        )
        where = f" {ckpt_path}" if ckpt_path is not None else ""
        raise ValueError(
            f"cannot resume from checkpoint{where}: its modularity monitor measured with other "
            f"settings ({listed}), so the earlier rows of {self.csv_name} would be mixed with "
            f"different measurements. Resume with the checkpoint's settings ({same}), or pass "
            "callbacks.modularity.on_resume_change=new_record to keep the old record and "
            "continue into a new file beside it"
        )

    @timed_hook("resume")  # [overhead accounting]
    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Check the checkpoint's monitor settings; start a new record file if they differ."""
        if not self.check_resume(checkpoint):
            return
        from dnn_modularity.checkpoints import checkpoint_epochs_done

        epoch = checkpoint_epochs_done(checkpoint) or 0
        stem = Path(self.csv_name).stem
        base = f"{stem}_resumed_epoch{epoch:03d}"
        name, counter = f"{base}.csv", 2
        while (self._out_dir(trainer) / name).exists():
            name, counter = f"{base}_{counter}.csv", counter + 1
        self.csv_name = name
        self._figure_tag = f"{Path(name).stem}_"
        self.history, self.timings, self.epoch_seconds = [], [], []
        rank_zero_info(
            f"ModularityMonitor: the checkpoint was measured with other settings "
            f"({self.resume_differences(checkpoint)}); new measurements go to {name}, the old "
            f"record stays as it is"
        )

    @property
    def tap_label(self) -> str:
        """The `tap` column: the tap mode/selector string, or "custom" for a list of names."""
        return self.taps if isinstance(self.taps, str) else "custom"

    def csv_path(self, trainer: L.Trainer | None = None) -> Path:
        """Where the rows go: `<output_dir>/modularity.csv`."""
        return self._out_dir(trainer) / self.csv_name

    def _out_dir(self, trainer: L.Trainer | None) -> Path:
        if self.output_dir is not None:
            return self.output_dir
        if trainer is None:
            raise ValueError("ModularityMonitor: output_dir is unset and no trainer was given")
        return Path(trainer.default_root_dir)

    # --- Lightning hooks -----------------------------------------------------------------------
    @timed_hook("setup")  # [overhead accounting]
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Draw the probe sets from the datamodule's test split (identical on every rank)."""
        if stage != "fit":
            return
        self.overhead_clock.start_fit()  # [overhead accounting] the fit's first callback hook
        self.model_name = _arch_name(pl_module)
        if self.probes:
            return
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "probe_dataset"):
            raise ValueError(
                "ModularityMonitor needs a datamodule with probe_dataset()/test_labels() "
                "(the dnn_modularity.data modules); pass datamodule=... to trainer.fit"
            )
        self.setup_probes(dm)

    @timed_hook("measure")  # [overhead accounting]
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Epoch 0 (initialisation) - or, on resume, the checkpoint's epoch if not measured yet."""
        epoch = int(trainer.current_epoch)
        # Rows after the checkpoint's epoch belong to a run that is being redone: drop them and
        # rewrite the file from the checkpointed history (same run dir or a new one).
        self.history = [r for r in self.history if int(r["epoch"]) <= epoch]
        if trainer.is_global_zero and (self.history or self.csv_path(trainer).exists()):
            write_csv_rows(self.csv_path(trainer), self.history, fieldnames=CSV_COLUMNS)
        if self._is_due(epoch, trainer) and not self._measured(epoch):
            self._measure(trainer, pl_module, epoch, epoch_seconds=None)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Start the epoch clock (for the overhead ratio)."""
        self._epoch_start = time.perf_counter()

    @timed_hook("measure")  # [overhead accounting]
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Measure after epoch e = current_epoch + 1 (validation of that epoch has already run)."""
        epoch_seconds = (
            time.perf_counter() - self._epoch_start if self._epoch_start is not None else None
        )
        if epoch_seconds is not None:
            self.epoch_seconds.append(epoch_seconds)
        epoch = int(trainer.current_epoch) + 1
        if self._is_due(epoch, trainer) and not self._measured(epoch):
            self._measure(trainer, pl_module, epoch, epoch_seconds=epoch_seconds)

    @timed_hook("figures")  # [overhead accounting]
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Final figures (rank 0), W&B images + table."""
        if not trainer.is_global_zero or not self.history:
            return
        if self.figures:
            paths = self.save_figures(trainer)
            self._log_media(trainer, paths)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """[overhead accounting] Stop the fit clock (the fit's last callback hook); a summary."""
        self.overhead_clock.end_fit()
        summary = self.overhead_summary()
        if trainer.is_global_zero and summary["measurements"]:
            rank_zero_info(
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
    def _metrics(
        self, device: torch.device
    ) -> tuple[KNNModularity, ClassSeparationModularity | None]:
        if self._knn is None:
            self._knn = KNNModularity(k=self.k, metric=self.metric)
            if self.compute_M:
                self._sep = ClassSeparationModularity(num_edges=self.num_edges, metric=self.metric)
        self._knn = self._knn.to(device)
        if self._sep is not None:
            self._sep = self._sep.to(device)
        return self._knn, self._sep

    def _plan(self, model: nn.Module, images: Tensor) -> None:
        """Choose how to read features: `self._groups` = layer groups, or None for per_layer."""
        if self.feature_mode == "per_layer":
            self._groups, self.resolved_mode = None, "per_layer"
            return
        dims = list(feature_dims(model, tuple(images.shape[1:]), self.taps).values())
        if self.feature_mode == "all_layers":
            self._groups = [list(range(1, len(dims) + 1))]
            self.resolved_mode = "all_layers"
            return
        dtype = self.feature_dtype or next(model.parameters()).dtype
        itemsize = torch.empty((), dtype=dtype).element_size()
        budget = self.feature_memory_mb * 2**20
        groups: list[list[int]] = []
        used = 0.0
        for index, dim in enumerate(dims, start=1):
            size = images.shape[0] * dim * itemsize
            if groups and used + size <= budget:
                groups[-1].append(index)
                used += size
            else:
                groups.append([index])
                used = size
        if len(groups) > math.ceil(len(dims) / 2):
            # iter_layer_features' early-stopped passes cost ~L/2 full passes: cheaper here.
            self._groups, self.resolved_mode = None, "per_layer"
        else:
            self._groups = groups
            self.resolved_mode = "all_layers" if len(groups) == 1 else f"{len(groups)}_groups"

    def _layer_features(
        self, model: nn.Module, batches: _Batches
    ) -> Iterator[tuple[int, str, Tensor]]:
        """(1-based index, name, (n_local, D) features) per tap, in tap order."""
        if self._groups is None:
            for point, feats in iter_layer_features(
                model, batches, self.taps, dtype=self.feature_dtype
            ):
                yield point.index, point.name, feats
            return
        for group in self._groups:
            with LayerTaps(model, self.taps, layers=group, dtype=self.feature_dtype) as taps:
                for batch in batches:
                    model(batch)
            features = taps.features
            taps.clear()
            for point in taps.points:
                yield point.index, point.name, features.pop(point.name)
            del features

    def measure(
        self, pl_module: L.LightningModule, rank: int = 0, world_size: int = 1
    ) -> list[dict[str, Any]]:
        """Compute one row per (repeat, layer) for the module's current weights.

        Works outside a Trainer too (e.g. on a loaded checkpoint, after `setup_probes`). Runs in
        eval mode under `inference_mode` and restores the previous train/eval mode.

        Args:
            pl_module: The classifier (its `.model` is forwarded; else the module itself).
            rank: This process's rank (its shard of the probe set is `rank::world_size`).
            world_size: Number of processes taking part (all must call this together).

        Returns:
            Rows without `epoch` (the caller adds it).
        """
        if not self.probes:
            raise RuntimeError("ModularityMonitor.measure: no probe set; call setup_probes(dm)")
        model = getattr(pl_module, "model", pl_module)
        device = next(pl_module.parameters()).device
        knn, sep = self._metrics(device)
        # Restore every submodule's own flag afterwards (a frozen BN may be in eval on purpose).
        modes = [(module, module.training) for module in model.modules()]
        model.eval()
        rows: list[dict[str, Any]] = []
        try:
            # [overhead] inference_mode: no autograd bookkeeping at all (no_grad still tracks
            # versions and views)
            with torch.inference_mode():
                if self.resolved_mode is None:
                    self._plan(model, self.probes[0].images)
                num_layers = len(resolve_taps(model, self.taps))
                for repeat, probe in enumerate(self.probes):
                    positions = torch.arange(len(probe))[rank::world_size]
                    labels = probe.labels[positions].to(device)
                    index = positions.to(device)
                    batches = _Batches(probe.images[positions], self.batch_size, device)
                    # Silent unless a measurement outlasts the progress interval (a big N).
                    layers = track(
                        self._layer_features(model, batches),
                        f"modularity measurement (N={len(probe)}, repeat {repeat})",
                        total=num_layers,
                        unit="layers",
                        quiet=True,
                        enabled=rank == 0,
                    )
                    for layer_index, name, feats in layers:
                        knn.reset()
                        knn.update(feats, labels, index)
                        q = float(knn.compute())
                        knn.reset()
                        m_value: float | None = None
                        if sep is not None:
                            sep.reset()
                            sep.update(feats, labels, index)
                            m_value = float(sep.compute())
                            sep.reset()
                        del feats
                        rows.append(
                            {
                                "layer_index": int(layer_index),
                                "layer": name,
                                "tap": self.tap_label,
                                "N": len(probe),
                                "k": self.k,
                                "metric": self.metric,
                                "modularity": q,
                                "M": m_value,
                                "seed": self.seed,
                                "repeat": repeat,
                                "num_edges": self.num_edges if sep is not None else None,
                                "edge_density": self.edge_density if sep is not None else None,
                            }
                        )
        finally:
            for module, training in modes:
                module.training = training
        return rows

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
        start = time.perf_counter()
        rows = [
            {"epoch": epoch, **row}
            for row in self.measure(pl_module, trainer.global_rank, trainer.world_size)
        ]
        self.history.extend(rows)
        if trainer.is_global_zero:
            append_csv_rows(self.csv_path(trainer), rows, fieldnames=CSV_COLUMNS)
        seconds = time.perf_counter() - start
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
            a fit [overhead accounting]: `own_seconds`, all the wall time of this callback's hooks
            (probe drawing, measurements, records, logging, end figures; `<part>_seconds` each),
            `fit_seconds` (its first hook to its last) and `overhead` = own / (fit − own): the
            share it adds to the same fit without it. Outside a fit, `overhead` =
            total_seconds / epoch_seconds.
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
        clock = self.overhead_clock.summary()  # [overhead accounting]
        if not math.isnan(clock["fit_seconds"]):
            summary.update(clock)
        return summary

    def reference_curve(self, num_layers: int) -> tuple[str, list[float]] | None:
        """The authors' published curve for a matching run (ResNet-56 on CIFAR-10/100), or None.

        Drawn dashed in the modularity-curve figure, so a run shows at once whether it
        reproduces paper 1's curve (:mod:`dnn_modularity.reference`).
        """
        from dnn_modularity.reference import matching_authors_curve

        ref = matching_authors_curve(self.model_name, self.data_name, num_layers)
        return None if ref is None else (ref.label, list(ref.values))

    def curve_figures(self) -> dict[str, Any]:
        """The curve and heatmap figures of the history: ``{"modularity_curves": Figure, ...}``."""
        from dnn_modularity.plots import plot_curves, plot_heatmap

        out: dict[str, Any] = {}
        values = ["modularity"] + (["M"] if self.compute_M else [])
        for value in values:
            epochs, layers, matrix = rows_to_matrix(self.history, value)
            if not epochs:
                continue
            label = "modularity Q" if value == "modularity" else "class-separation M"
            what = f"N={self.n}, k={self.k}, {self.metric}, taps={self.tap_label}"
            if value == "M":
                what = (
                    f"N={self.n}, |E|={self.num_edges} ({self.edge_density:.2%} of pairs), "
                    f"{self.metric}, taps={self.tap_label}"
                )
            out[f"{value}_curves"] = plot_curves(
                matrix.numpy(),
                labels=[f"epoch {e}" for e in epochs],
                color_values=epochs,
                color_label="epoch",
                title=f"{label} per layer during training ({what})",
                ylabel=label,
                reference=self.reference_curve(len(layers)) if value == "modularity" else None,
            )
            out[f"{value}_heatmap"] = plot_heatmap(
                matrix.numpy(),
                row_labels=epochs,
                col_labels=layers,
                title=f"{label}: epoch x layer ({what})",
                cbar_label=label,
            )
        return out

    def save_figures(self, trainer: L.Trainer | None = None) -> list[Path]:
        """Write curve and heatmap figures (PNG + PDF) of the history to `<output_dir>/figures/`."""
        import matplotlib.pyplot as plt

        self._measured_since_figure = 0
        folder = self._out_dir(trainer) / "figures"
        paths: list[Path] = []
        for name, fig in self.curve_figures().items():
            paths += atomic_save_figure(fig, folder / f"{self._figure_tag}{name}")
            plt.close(fig)
        return paths

    def _log_media(self, trainer: L.Trainer, paths: list[Path]) -> None:
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if not isinstance(logger, WandbLogger):
                continue
            for path in paths:
                if path.suffix == ".png":
                    logger.log_image(
                        key=f"{self.log_prefix}figures/{path.stem}", images=[str(path)]
                    )
            logger.log_table(
                key=f"{self.log_prefix}modularity/table",
                columns=list(CSV_COLUMNS),
                data=[[row.get(c) for c in CSV_COLUMNS] for row in self.history],
            )
