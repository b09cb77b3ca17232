"""`RunCSVLogger`: Lightning's CSV logger that continues an existing `metrics.csv`.

Lightning's `CSVLogger` deletes `metrics.csv` when its folder is not empty (and warns "Experiment
logs directory ... exists and is not empty. Previous log files in this directory will be deleted"
on every run whose folder already holds `config.yaml`). In this package the folder is the run
folder, which `dnn_modularity.rundir` already keeps to one run, so the only way an old
`metrics.csv` can be there is a resumed run: this logger appends to it, keeping every earlier row,
and never warns. `drop_rows_after(step)` removes rows a crashed run logged after the checkpoint it
is resumed from, so no epoch appears twice.
"""

from __future__ import annotations

import csv
import os

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from dnn_modularity.io import read_csv_rows, write_csv_rows

__all__ = ["RunCSVLogger"]


class _AppendingWriter(ExperimentWriter):
    """Lightning's writer that continues an existing `metrics.csv` instead of deleting it."""

    def _check_log_dir_exists(self) -> None:
        # Called by the base __init__ in place of Lightning's delete-with-warning: adopt the old
        # header, so new rows are appended (a new column rewrites the file with the old rows).
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                self.metrics_keys = list(next(csv.reader(handle), []))


class RunCSVLogger(CSVLogger):
    """`CSVLogger` writing `<save_dir>/<name>/<version>/metrics.csv`, appending to an old file.

    Takes `lightning.pytorch.loggers.CSVLogger`'s arguments (`save_dir`, `name`, `version`, ...).
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> _AppendingWriter:
        """The writer (created on first use, rank zero only)."""
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    @property
    def metrics_file(self) -> str:
        """Path of the `metrics.csv` this logger writes."""
        return os.path.join(self.log_dir, _AppendingWriter.NAME_METRICS_FILE)

    def drop_rows_after(self, step: int) -> int:
        """Remove rows logged after global step `step` (call before resuming from that step).

        A run that crashed after its last checkpoint logged rows the resumed run logs again;
        dropping them keeps one row per logged value. Rows without a step are kept.

        Args:
            step: The checkpoint's `global_step`.

        Returns:
            How many rows were removed (0 when the file does not exist).
        """
        rows = read_csv_rows(self.metrics_file)
        kept = [r for r in rows if not (r.get("step") or "").strip() or float(r["step"]) <= step]
        if len(kept) != len(rows):
            with open(self.metrics_file, newline="", encoding="utf-8") as handle:
                header = next(csv.reader(handle), [])
            write_csv_rows(self.metrics_file, kept, fieldnames=header)
        return len(rows) - len(kept)
