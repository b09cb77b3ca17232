"""Every logger this package talks to: building the `logger` group, W&B, CSV, TensorBoard.

The only module that knows W&B: the `WandbLogger` factory (online when an API key is configured
and the server answers, else offline), closing a run, and one table logger (`log_table`) used for
the monitor's history, the analyses' records and the pruning table. `log_artifacts` sends an
analysis' metrics, figures, GIFs and tables to whichever loggers a run has.

`RunCSVLogger` is Lightning's CSV logger that continues an existing `metrics.csv`. Lightning's
`CSVLogger` deletes `metrics.csv` when its folder is not empty (and warns "Experiment logs
directory ... exists and is not empty. Previous log files in this directory will be deleted" on
every run whose folder already holds `config.yaml`). In this package the folder is the run
folder, which `dnn_modularity.rundir` already keeps to one run, so the only way an old
`metrics.csv` can be there is a resumed run: this logger appends to it, keeping every earlier row,
and never warns. `drop_rows_after(step)` removes rows a crashed run logged after the checkpoint it
is resumed from, so no epoch appears twice.
"""

from __future__ import annotations

import csv
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

import numpy as np
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from dnn_modularity.records import read_csv_rows, write_csv_rows
from dnn_modularity.rundir import is_rank_zero
from dnn_modularity.runtime import instantiate_group

__all__ = [
    "WANDB_CONNECT_TIMEOUT",
    "WANDB_MODES",
    "RunCSVLogger",
    "build_loggers",
    "default_run_name",
    "finish_wandb",
    "log_artifacts",
    "log_config",
    "log_table",
    "make_wandb_logger",
    "resolve_wandb_mode",
    "wandb_key_configured",
    "wandb_server",
    "wandb_unreachable",
]

log = logging.getLogger(__name__)


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


#: Valid values of the W&B logger's `mode`.
WANDB_MODES = ("auto", "online", "offline", "disabled")


#: Seconds to wait for a TCP connection to the W&B server before logging offline.
WANDB_CONNECT_TIMEOUT = 3.0


def build_loggers(node: Any, save_dir: Path, run_name: str) -> list[Any]:
    """Instantiate the `logger` group (a mapping name -> `_target_` node).

    Args:
        node: `cfg.logger` (None/empty: no loggers).
        save_dir: Replaces `save_dir: null`.
        run_name: The W&B run name when its `name` is unset.

    Returns:
        The Lightning loggers, in config order.
    """

    def folder_and_name(name: str, spec: DictConfig) -> dict[str, Any]:
        overrides: dict[str, Any] = {}
        if "save_dir" in spec and spec.save_dir is None:
            overrides["save_dir"] = str(save_dir)
        if name == "wandb" and spec.get("name") is None:
            overrides["name"] = run_name
        return overrides

    return instantiate_group(node, folder_and_name)


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
        # local: wandb is optional and slow to import; only W&B runs need it
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
    if not any(isinstance(lg, WandbLogger) for lg in loggers):
        return
    try:
        # local: wandb is optional and slow to import; only W&B runs need it
        import wandb

        if wandb.run is not None:
            wandb.finish(exit_code=0 if sys.exc_info()[0] is None else 1)
    except Exception as err:  # closing must never mask the run's own outcome
        print(f"warning: closing the W&B run failed: {err!r}", file=sys.stderr)


def log_artifacts(
    loggers: Sequence[Any],
    prefix: str,
    *,
    metrics: dict[str, float] | None = None,
    pngs: dict[str, Path] | None = None,
    files: Sequence[Path] = (),
    tables: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    columns: Mapping[str, Sequence[str]] | None = None,
    step: int | None = 0,
    close: bool = True,
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
        columns: Table name -> its columns in order (default: every key of its rows).
        step: The metrics' step (None: the logger's own counter).
        close: Finalize the loggers and close the W&B run afterwards (False: the caller does).
    """
    if not loggers:
        return

    metrics = {k: float(v) for k, v in (metrics or {}).items() if v is not None}
    for logger in loggers:
        kind = type(logger).__name__
        if metrics:
            logger.log_metrics(metrics, step=step)
        if kind == "WandbLogger":
            # local: wandb is optional and slow to import; only W&B runs need it
            import wandb

            for name, png in (pngs or {}).items():
                logger.log_image(key=f"{prefix}/{name}", images=[str(png)])
            for path in files:
                if str(path).endswith(".gif"):
                    logger.experiment.log(
                        {f"{prefix}/{Path(path).stem}": wandb.Video(str(path), format="gif")}
                    )
            for name, rows in (tables or {}).items():
                log_table(logger, f"{prefix}/{name}", rows, (columns or {}).get(name))
        elif kind == "TensorBoardLogger":
            for name, png in (pngs or {}).items():
                image = np.asarray(Image.open(png).convert("RGB"))
                logger.experiment.add_image(f"{prefix}/{name}", image, 0, dataformats="HWC")
        logger.save()
        if close:
            logger.finalize("success")
    if close:
        finish_wandb(loggers)


def log_pngs_and_table(
    loggers: Sequence[Any],
    prefix: str,
    paths: Sequence[Path],
    table: str,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
) -> None:
    """W&B: the PNGs as images ``<prefix>figures/<stem>``, ``rows`` as table ``<prefix><table>``.

    Other loggers get nothing. Used by the training monitors.
    """
    for logger in loggers:
        if not isinstance(logger, WandbLogger):
            continue
        for path in paths:
            if path.suffix == ".png":
                logger.log_image(key=f"{prefix}figures/{path.stem}", images=[str(path)])
        log_table(logger, f"{prefix}{table}", rows, columns)


def log_table(
    logger: Any, key: str, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None
) -> None:
    """Log `rows` as one W&B table `key` (nothing for other loggers or no rows).

    Args:
        logger: A Lightning logger.
        key: The table's key (e.g. `pruning/table`).
        rows: One dict per table row.
        columns: The columns, in order (default: every key of the rows, in first-seen order).
    """
    if not rows or not isinstance(logger, WandbLogger):
        return
    columns = list(columns or dict.fromkeys(k for r in rows for k in r))
    data = [[_cell(r.get(c)) for c in columns] for r in rows]
    logger.log_table(key=key, columns=columns, data=data)


def _cell(value: Any) -> Any:
    """A table cell W&B accepts: plain values as they are, anything else as its text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
