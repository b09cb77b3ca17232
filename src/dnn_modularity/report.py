"""``python -m dnn_modularity.report dir=<multirun folder>`` (console script ``dnn-report``).

Collects the records of a sweep of ``dnn_modularity.analyze`` jobs and draws the papers'
comparison figures from them:

* every job folder under ``dir`` (any depth) that holds an analysis record (``curve.csv``,
  ``adversarial.csv``, ...) and its ``config.yaml``; the job's swept settings come from Hydra's
  ``.hydra/overrides.yaml`` (or, without it, from the config values that differ between jobs);
* ``combined.csv``: every tidy row of every job, with the job folder and the swept settings as
  extra columns (one file per analysis: ``combined_curve.csv`` ...);
* ``curves*.png|pdf``: per-layer modularity, mean ± std band over repeats, one line per value of
  the swept settings (N: Fig. 7a, k: Figs. 7b/B13, cosine vs Pearson: Fig. B11, models: Figs. 4
  and 5), one panel per model and data set; the random-init null of each job can be added
  (Fig. B12);
* ``adversarial.png`` (success rate per attack and job), ``ring_m.png`` (paper 2's M per
  job), ``last_layer_*.png`` (the last layer's modularity against a numeric swept setting);
* ``diagnostics_curves.png``: Q, k-NN accuracy and linear-probe accuracy per layer (mean ± std
  bands), one line per ``analysis=diagnostics`` job
  (:mod:`dnn_modularity.plots.report_diagnostics`).

Tests call :func:`build_report`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from dnn_modularity.analysis.registry import analysis_functions
from dnn_modularity.loggers import build_loggers, log_artifacts
from dnn_modularity.plots.report import (
    adversarial_figure,
    curve_figure,
    last_layer_figure,
    ring_figure,
)
from dnn_modularity.plots.report_diagnostics import diagnostics_report_figures
from dnn_modularity.records import atomic_save_figure, write_csv_rows, write_json
from dnn_modularity.rundir import run_stamp
from dnn_modularity.runtime import CONF_DIR, claim_config_run_dir, hydra_config
from dnn_modularity.sweeps import Job, combined_rows, find_jobs, number, setting, swept_settings

__all__ = ["build_report", "main", "report"]

log = logging.getLogger(__name__)


def build_report(
    root: str | Path,
    out_dir: str | Path | None = None,
    *,
    include_nulls: bool = False,
    loggers: Sequence[Any] = (),
) -> dict[str, Any]:
    """Collect a sweep's records and write the combined CSVs and comparison figures.

    Args:
        root: Multirun folder (or any folder holding analysis job folders).
        out_dir: Where to write (default a new ``<root>/report/<time>_<id>``).
        include_nulls: Also draw each job's random-init and shuffled-label curves.
        loggers: Lightning loggers that receive the figures and the combined table.

    Returns:
        ``{"out_dir", "jobs", "swept", "csv": [paths], "figures": {name: [png, pdf]}}``.

    Raises:
        FileNotFoundError: ``root`` is missing.
        ValueError: No analysis records under ``root``.
    """
    root = Path(root)
    jobs = find_jobs(root)
    if not jobs:
        raise ValueError(
            f"no analysis records ({', '.join(f'{n}.json' for n in analysis_functions())}) under "
            f"{root}; point dir= at a folder made by `python -m dnn_modularity.analyze -m ...`"
        )
    out = Path(out_dir) if out_dir else root / "report" / run_stamp()
    by_analysis: dict[str, list[Job]] = {}
    for job in jobs:
        by_analysis.setdefault(job.analysis, []).append(job)
    csvs: list[Path] = []
    figures: dict[str, list[Path]] = {}
    swept_all: dict[str, list[str]] = {}
    combined_all: list[dict[str, Any]] = []
    for analysis, members in by_analysis.items():
        keys = swept_settings(members)
        swept_all[analysis] = keys
        combined = combined_rows(root, members, keys)
        combined_all += combined
        csvs.append(write_csv_rows(out / f"combined_{analysis}.csv", combined))
        for name, fig in _figures(analysis, members, keys, include_nulls).items():
            figures[name] = atomic_save_figure(fig, out / name, dpi=fig.dpi, close=True)
    csvs.append(write_csv_rows(out / "combined.csv", combined_all))
    summary = {
        "out_dir": str(out),
        "jobs": [str(j.path) for j in jobs],
        "swept": swept_all,
        "csv": [str(p) for p in csvs],
        "figures": {k: [str(p) for p in v] for k, v in figures.items()},
    }
    write_json(out / "report.json", summary)
    log_artifacts(
        loggers,
        "report",
        pngs={k: v[0] for k, v in figures.items()},
        tables={"combined": combined_all[:100000]},
    )
    return summary


def _figures(
    analysis: str, jobs: Sequence[Job], keys: Sequence[str], include_nulls: bool
) -> dict[str, Any]:
    """The comparison figures of one analysis' jobs, by file name."""
    drawn: dict[str, Any] = {}
    if analysis == "curve":
        drawn["curves"] = curve_figure(jobs, keys, include_nulls)
        for key in keys:
            if all(math.isfinite(number(setting(j, key))) for j in jobs):
                drawn[f"last_layer_{key.replace('.', '_')}"] = last_layer_figure(jobs, key)
    elif analysis == "adversarial":
        drawn["adversarial"] = adversarial_figure(jobs, keys)
    elif analysis == "ring":
        drawn["ring_m"] = ring_figure(jobs, keys)
    elif analysis == "diagnostics":  # Q beside k-NN and linear-probe accuracy
        drawn.update(diagnostics_report_figures(jobs, keys))
    return drawn


def report(cfg: DictConfig) -> dict[str, Any]:
    """Plain function behind the CLI: ``build_report`` with the config's settings.

    The report goes to ``out_dir``, else Hydra's run folder, else a new
    ``<dir>/report/<time>_<id>``; a folder holding an earlier report is refused unless
    ``overwrite=true`` (see :mod:`dnn_modularity.rundir`).
    """
    hydra_cfg = hydra_config()
    if cfg.get("out_dir"):
        out = Path(str(cfg.out_dir)).resolve()
    elif hydra_cfg is not None:
        out = Path(hydra_cfg.runtime.output_dir).resolve()
    else:
        out = (Path(str(cfg.dir)) / "report" / run_stamp()).resolve()
    claim_config_run_dir(cfg, out, hydra_cfg, inputs=[cfg.dir])
    # A subfolder: the records own the report folder.
    loggers = build_loggers(cfg.get("logger"), out / "logs", f"report-{Path(str(cfg.dir)).name}")
    result = build_report(cfg.dir, out, include_nulls=bool(cfg.include_nulls), loggers=loggers)
    log.info("report of %d jobs -> %s", len(result["jobs"]), result["out_dir"])
    return result


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="report")
def main(cfg: DictConfig) -> None:
    """Console entry point (``dnn-report`` / ``python -m dnn_modularity.report dir=...``)."""
    report(cfg)


if __name__ == "__main__":
    main()
