"""`dnn_modularity.report` rebuilds the ablation figure from a small multirun made here."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from PIL import Image

from dnn_modularity.analyze import CONF_DIR
from dnn_modularity.records import read_csv_rows
from dnn_modularity.report import build_report, find_jobs, swept_settings

REPO = CONF_DIR.parent


def _run_module(module: str, *args: str) -> None:
    """`python -m module args...` from the repository root, one OpenMP thread; must succeed."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_report_rebuilds_the_n_ablation_from_a_multirun(tmp_path):
    sweep = tmp_path / "sweep"
    _run_module(
        "dnn_modularity.analyze",
        "-m",
        "analysis=curve",
        "model=resnet20",
        "probe.n=50,80",
        "analysis.repeats=2",
        "analysis.random_init=false",
        "num_threads=1",
        f"hydra.sweep.dir={sweep}",
    )
    jobs = find_jobs(sweep)
    assert len(jobs) == 2 and swept_settings(jobs) == ["probe.n"]

    _run_module("dnn_modularity.report", f"dir={sweep}", "include_nulls=true")
    (out,) = (sweep / "report").iterdir()  # a new folder per report: <time>_<id>
    width, height = Image.open(out / "curves.png").size
    assert abs(width - 640) < 40 and abs(height - 420) < 40  # one panel of 6.4 x 4.2 in
    assert (out / "curves.pdf").stat().st_size > 1000
    assert (out / "last_layer_probe_n.png").exists()
    combined = read_csv_rows(out / "combined_curve.csv")
    per_job = sum(len(read_csv_rows(job.path / "curve.csv")) for job in jobs)
    assert len(combined) == per_job
    assert {r["setting:probe.n"] for r in combined} == {"50", "80"}
    assert {r["N"] for r in combined} == {"50", "80"}


def test_report_refuses_folders_without_records(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        build_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no analysis records"):
        build_report(tmp_path / "empty")
