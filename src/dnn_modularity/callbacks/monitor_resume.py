"""Resuming the training monitor: its state in checkpoints and the settings a resume must share.

:class:`MonitorResume` is a part of
:class:`~dnn_modularity.callbacks.modularity.ModularityMonitor` (it reads the monitor's settings
attributes): the callback state saved in a checkpoint, and what a resume whose settings differ
does (:data:`RESUME_CHANGES`).
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.utilities import rank_zero_info

from dnn_modularity.callbacks.overhead import timed_hook
from dnn_modularity.checkpoints import checkpoint_epochs_done

__all__ = ["RESUME_CHANGES", "RESUME_SETTINGS", "MonitorResume"]


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


def _override(value: Any) -> str:
    """A value as a Hydra command-line override (lists as `[a,b]`)."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


class MonitorResume:
    """The monitor's checkpoint state and resume checks (a part of ``ModularityMonitor``)."""

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

    @timed_hook("resume")
    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Check the checkpoint's monitor settings; start a new record file if they differ."""
        if not self.check_resume(checkpoint):
            return

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
