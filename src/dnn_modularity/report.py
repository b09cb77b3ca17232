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
  bands), one line per ``analysis=diagnostics`` job (:mod:`dnn_modularity.report_diagnostics`).

Tests call :func:`build_report`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from dnn_modularity.io import atomic_save_figure, read_csv_rows, write_csv_rows, write_json
from dnn_modularity.rundir import run_stamp
from dnn_modularity.runtime import CONF_DIR, build_loggers, claim_config_run_dir, hydra_config

__all__ = ["ANALYSIS_NAMES", "Job", "build_report", "find_jobs", "main", "report"]

log = logging.getLogger(__name__)

ANALYSIS_NAMES = (
    "curve",
    "adversarial",
    "dynamics",
    "difference",
    "histograms",
    "ring",
    "diagnostics",
)
#: Overrides that identify *where* a job ran rather than *what* it measured.
_IGNORED_KEYS = (
    "run_dir",
    "overwrite",
    "hydra.",
    "device",
    "num_threads",
    "logger",
    "batch_size",
)


@dataclass
class Job:
    """One analysis job of a sweep.

    Attributes:
        path: Job folder.
        analysis: Analysis name.
        config: Its resolved config (plain dict).
        overrides: ``key -> value`` of its command-line overrides (Hydra's ``overrides.yaml``).
        meta: Its ``<analysis>.json``.
        rows: Its tidy rows.
        summary: Its summary rows (``<analysis>_summary.csv``), when any.
    """

    path: Path
    analysis: str
    config: dict[str, Any]
    overrides: dict[str, str]
    meta: dict[str, Any]
    rows: list[dict[str, str]]
    summary: list[dict[str, str]] = field(default_factory=list)

    @property
    def model(self) -> str:
        """``model on data`` for panel titles."""
        model = self.meta.get("model") or "model"
        data = self.meta.get("data") or self.config.get("data", {}).get("_target_", "data")
        return f"{model} on {data}"


def _overrides(job_dir: Path) -> dict[str, str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        return {}
    out = {}
    for item in OmegaConf.to_container(OmegaConf.load(path)) or []:
        key, _, value = str(item).partition("=")
        key = key.lstrip("+~")
        if not any(key == k or key.startswith(k) for k in _IGNORED_KEYS):
            out[key] = value
    return out


def find_jobs(root: str | Path) -> list[Job]:
    """Every analysis job folder under ``root`` (sorted by path; report outputs are skipped).

    Raises:
        FileNotFoundError: ``root`` does not exist.
    """
    import json

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"report dir={str(root)!r} is not a folder")
    jobs = []
    for json_path in sorted(root.rglob("*.json")):
        name = json_path.stem
        job_dir = json_path.parent
        if name not in ANALYSIS_NAMES or "report" in job_dir.relative_to(root).parts:
            continue
        try:
            meta = json.loads(json_path.read_text())
        except json.JSONDecodeError:
            log.warning("skipping unreadable record %s", json_path)
            continue
        if meta.get("analysis") != name:
            continue
        config_path = job_dir / "config.yaml"
        config = OmegaConf.to_container(OmegaConf.load(config_path)) if config_path.exists() else {}
        jobs.append(
            Job(
                path=job_dir,
                analysis=name,
                config=config,
                overrides=_overrides(job_dir),
                meta=meta,
                rows=read_csv_rows(job_dir / f"{name}.csv"),
                summary=read_csv_rows(job_dir / f"{name}_summary.csv"),
            )
        )
    return jobs


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{name}."))
        elif not isinstance(value, list):
            out[name] = value
    return out


def swept_settings(jobs: Sequence[Job]) -> list[str]:
    """Settings that differ between jobs: their override keys, else differing config values."""
    keys = list(dict.fromkeys(k for job in jobs for k in job.overrides))
    # A job without the override (e.g. one run without Hydra's record) has the config value.
    varying = [k for k in keys if len({_setting(job, k) for job in jobs}) > 1]
    if varying or len(jobs) < 2:
        return varying
    flat = [_flatten(job.config) for job in jobs]
    names = list(dict.fromkeys(k for f in flat for k in f))
    return [
        k
        for k in names
        if len({str(f.get(k)) for f in flat}) > 1
        and not any(k == i or k.startswith(i) for i in _IGNORED_KEYS)
    ]


def _setting(job: Job, key: str) -> str:
    if key in job.overrides:
        return job.overrides[key]
    value: Any = job.config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, Mapping):  # a config group: its name (analysis, model) or target (data)
        value = value.get("name") or value.get("_target_")
    return "" if value is None else str(value)


def _label(job: Job, keys: Sequence[str]) -> str:
    shown = [k for k in keys if k != "ckpt_path"]
    if not shown:
        return job.path.name
    return ", ".join(f"{k.rsplit('.', 1)[-1] if k != 'N' else k}={_setting(job, k)}" for k in shown)


def _number(text: str) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _sort_key(job: Job, keys: Sequence[str]) -> tuple[Any, ...]:
    values = [_setting(job, k) for k in keys]
    return tuple((0, _number(v), "") if math.isfinite(_number(v)) else (1, 0.0, v) for v in values)


def _curve_series(job: Job, variant: str) -> tuple[list[float], list[float], list[str]]:
    rows = [r for r in job.summary if r.get("variant") == variant]
    rows.sort(key=lambda r: int(r["layer_index"]))
    return (
        [_number(r["mean"]) for r in rows],
        [_number(r["std"]) for r in rows],
        [r["layer"] for r in rows],
    )


def _curve_figure(jobs: Sequence[Job], keys: Sequence[str], include_nulls: bool) -> Any:
    import matplotlib.pyplot as plt
    import numpy as np

    from dnn_modularity.plots_analysis import DPI

    # A sweep over models (Figs. 4, 5, 9) puts every model of a data set in one panel, labelled
    # by model; any other sweep draws one panel per model, one line per swept value.
    model_sweep = bool(keys) and all(k in ("ckpt_path", "model") for k in keys)
    panels: dict[str, list[Job]] = {}
    for job in jobs:
        panel = f"on {job.meta.get('data')}" if model_sweep else job.model
        panels.setdefault(panel, []).append(job)
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(6.4 * ncols, 4.2 * nrows), dpi=DPI, squeeze=False
    )
    cmap = plt.get_cmap("viridis")
    for ax, (title, members) in zip(axes.flat, panels.items(), strict=False):
        members = sorted(members, key=lambda j: _sort_key(j, keys))
        layer_names: list[str] = []
        for i, job in enumerate(members):
            color = cmap(i / max(1, len(members) - 1) * 0.9) if len(members) > 1 else "#1f77b4"
            variants = [("trained", "-")] + (
                [("random_init", "--"), ("shuffled", ":")] if include_nulls else []
            )
            for variant, style in variants:
                mean, std, names = _curve_series(job, variant)
                layer_names = layer_names or ([] if model_sweep else names)
                if not mean:
                    continue
                x = np.arange(1, len(mean) + 1)
                name = f"{job.meta.get('model')} ({job.path.name})" if model_sweep else None
                label = (name or _label(job, keys)) + (
                    "" if variant == "trained" else f" ({variant})"
                )
                ax.plot(x, mean, style, color=color, marker="o", markersize=3, label=label)
                ax.fill_between(
                    x,
                    np.subtract(mean, std),
                    np.add(mean, std),
                    color=color,
                    alpha=0.15,
                    linewidth=0,
                )
        if layer_names:
            step = max(1, math.ceil(len(layer_names) / 20))
            ticks = list(range(1, len(layer_names) + 1))[::step]
            ax.set_xticks(ticks)
            ax.set_xticklabels(
                [layer_names[t - 1] for t in ticks], rotation=60, ha="right", fontsize=7
            )
        ax.set_title(title)
        ax.set_xlabel("layer")
        ax.set_ylabel("modularity Q (mean ± std)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig


def _last_layer_figure(jobs: Sequence[Job], key: str) -> Any:
    import matplotlib.pyplot as plt

    from dnn_modularity.plots_analysis import DPI

    fig, ax = plt.subplots(figsize=(5.0, 3.6), dpi=DPI)
    panels: dict[str, list[tuple[float, float, float]]] = {}
    for job in jobs:
        mean, std, _ = _curve_series(job, "trained")
        x = _number(_setting(job, key))
        if mean and math.isfinite(x):
            panels.setdefault(job.model, []).append((x, mean[-1], std[-1]))
    for name, points in panels.items():
        points.sort()
        xs, ys, es = zip(*points, strict=True)
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=name)
    ax.set_xlabel(key)
    ax.set_ylabel("last-layer modularity Q")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _adversarial_figure(jobs: Sequence[Job], keys: Sequence[str]) -> Any:
    import matplotlib.pyplot as plt
    import numpy as np

    from dnn_modularity.plots_analysis import DPI

    attacks = list(dict.fromkeys(r["attack"] for job in jobs for r in job.summary))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(attacks) + 2), 3.8), dpi=DPI)
    width = 0.8 / max(1, len(jobs))
    for i, job in enumerate(jobs):
        rates = {r["attack"]: _number(r.get("success_rate")) for r in job.summary}
        values = [np.nan_to_num(rates.get(a, math.nan)) * 100 for a in attacks]
        ax.bar(
            np.arange(len(attacks)) + i * width,
            values,
            width,
            label=f"{job.model} {_label(job, keys)}".strip(),
        )
    ax.set_xticks(np.arange(len(attacks)) + 0.4 - width / 2)
    ax.set_xticklabels(attacks)
    ax.set_ylabel("attack success rate (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _ring_figure(jobs: Sequence[Job], keys: Sequence[str]) -> Any:
    import matplotlib.pyplot as plt

    from dnn_modularity.plots_analysis import DPI

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=DPI)
    for job in jobs:
        rows = sorted(
            (r for r in job.rows if r["measure"] == "M"), key=lambda r: int(r["layer_index"])
        )
        ax.plot(
            range(1, len(rows) + 1),
            [_number(r["value"]) for r in rows],
            marker="o",
            markersize=3,
            label=f"{job.model} {_label(job, keys)}".strip(),
        )
    ax.set_xlabel("layer")
    ax.set_ylabel("M = r·AQ·(1-EQ)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


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
    import matplotlib.pyplot as plt

    from dnn_modularity.analysis.context import log_artifacts

    root = Path(root)
    jobs = find_jobs(root)
    if not jobs:
        raise ValueError(
            f"no analysis records ({', '.join(f'{n}.json' for n in ANALYSIS_NAMES)}) under "
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
        combined = []
        for job in members:
            extra = {
                "job": str(job.path.relative_to(root)),
                "model": job.meta.get("model"),
                "data": job.meta.get("data"),
            }
            extra.update({f"setting:{k}": _setting(job, k) for k in keys})
            combined += [{**extra, **row} for row in job.rows]
        combined_all += combined
        csvs.append(write_csv_rows(out / f"combined_{analysis}.csv", combined))
        drawn: dict[str, Any] = {}
        if analysis == "curve":
            drawn["curves"] = _curve_figure(members, keys, include_nulls)
            for key in keys:
                if all(math.isfinite(_number(_setting(j, key))) for j in members):
                    drawn[f"last_layer_{key.replace('.', '_')}"] = _last_layer_figure(members, key)
        elif analysis == "adversarial":
            drawn["adversarial"] = _adversarial_figure(members, keys)
        elif analysis == "ring":
            drawn["ring_m"] = _ring_figure(members, keys)
        elif analysis == "diagnostics":  # Q beside k-NN and linear-probe accuracy
            from dnn_modularity.report_diagnostics import diagnostics_report_figures

            drawn.update(diagnostics_report_figures(members, keys))
        for name, fig in drawn.items():
            figures[name] = atomic_save_figure(fig, out / name, dpi=fig.dpi)
            plt.close(fig)
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
