"""A sweep of ``analyze`` jobs as data: every job's records, config and swept settings.

:func:`find_jobs` collects every job folder under a multirun folder that holds an analysis
record (``<analysis>.json`` + ``.csv``, any analysis of :mod:`dnn_modularity.analysis.registry`)
and its ``config.yaml``; a job's swept settings come from Hydra's ``.hydra/overrides.yaml`` (or,
without it, from the config values that differ between jobs). ``report`` draws and tabulates it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from dnn_modularity.analysis.registry import analysis_functions
from dnn_modularity.records import read_csv_rows

__all__ = [
    "Job",
    "combined_rows",
    "curve_series",
    "find_jobs",
    "job_label",
    "number",
    "setting",
    "sort_key",
    "swept_settings",
]

log = logging.getLogger(__name__)


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
    root = Path(root)
    names = set(analysis_functions())
    if not root.is_dir():
        raise FileNotFoundError(f"report dir={str(root)!r} is not a folder")
    jobs = []
    for json_path in sorted(root.rglob("*.json")):
        name = json_path.stem
        job_dir = json_path.parent
        if name not in names or "report" in job_dir.relative_to(root).parts:
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
    varying = [k for k in keys if len({setting(job, k) for job in jobs}) > 1]
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


def setting(job: Job, key: str) -> str:
    """The job's value of setting ``key``: its override, else its config value (a group: name)."""
    if key in job.overrides:
        return job.overrides[key]
    value: Any = job.config
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, Mapping):  # a config group: its name (analysis, model) or target (data)
        value = value.get("name") or value.get("_target_")
    return "" if value is None else str(value)


def job_label(job: Job, keys: Sequence[str]) -> str:
    """Legend label: ``k=v`` of the swept settings (the folder name when none)."""
    shown = [k for k in keys if k != "ckpt_path"]
    if not shown:
        return job.path.name
    return ", ".join(f"{k.rsplit('.', 1)[-1] if k != 'N' else k}={setting(job, k)}" for k in shown)


def number(text: str) -> float:
    """``float(text)``, NaN when it is not a number (an empty cell, a name)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def sort_key(job: Job, keys: Sequence[str]) -> tuple[Any, ...]:
    """Order jobs by their swept values: numbers numerically, then names."""
    values = [setting(job, k) for k in keys]
    return tuple((0, number(v), "") if math.isfinite(number(v)) else (1, 0.0, v) for v in values)


def curve_series(job: Job, variant: str) -> tuple[list[float], list[float], list[str]]:
    """``(mean, std, layer names)`` of one variant's summary rows, in layer order."""
    rows = [r for r in job.summary if r.get("variant") == variant]
    rows.sort(key=lambda r: int(r["layer_index"]))
    return (
        [number(r["mean"]) for r in rows],
        [number(r["std"]) for r in rows],
        [r["layer"] for r in rows],
    )


def combined_rows(root: Path, jobs: Sequence[Job], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Every tidy row of ``jobs`` with the job folder, model, data and swept settings prepended."""
    combined = []
    for job in jobs:
        extra = {
            "job": str(job.path.relative_to(root)),
            "model": job.meta.get("model"),
            "data": job.meta.get("data"),
        }
        extra.update({f"setting:{k}": setting(job, k) for k in keys})
        combined += [{**extra, **row} for row in job.rows]
    return combined
