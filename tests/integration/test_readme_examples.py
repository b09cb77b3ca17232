"""The README's "Any model" examples run as written (read from README.md, so they cannot drift)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example(title: str) -> str:
    """The python block after the ``<!-- README example (...): <title> -->`` marker."""
    text = README.read_text(encoding="utf-8")
    marker = re.escape(title)
    match = re.search(
        rf"<!-- README example \([^)]*\): {marker} -->\s*```python\n(.*?)```", text, re.S
    )
    assert match, f"README.md has no example {title!r}"
    return match.group(1)


def test_own_lightning_module_with_the_monitor_in_five_lines(tmp_path, monkeypatch) -> None:
    code = readme_example("own LightningModule")
    # the part after the user's module: imports + monitor + trainer + fit, five lines
    tail = code[code.index("from dnn_modularity.callbacks") :].strip().splitlines()
    assert len([line for line in tail if line.strip()]) == 5
    monkeypatch.chdir(tmp_path)  # the Trainer's folder: the monitor writes here
    scope: dict = {"__name__": "readme_example"}
    exec(compile(code, "README.md: own LightningModule", "exec"), scope)
    monitor = scope["monitor"]
    rows = list(csv.DictReader((tmp_path / "modularity.csv").open()))
    assert sorted({r["epoch"] for r in rows}) == ["0", "1", "2", "3"]
    assert {r["layer"] for r in rows} == {"net.1", "net.3", "net.5"}
    assert len(monitor.history) == 12
    diag = list(csv.DictReader((tmp_path / "diagnostics.csv").open()))
    assert {r["measure"] for r in diag} == {
        "class_q",
        "purity",
        "knn_accuracy",
        "class_knn_accuracy",
    }
    last = [float(r["value"]) for r in diag if r["measure"] == "knn_accuracy" and r["epoch"] == "3"]
    assert len(last) == 3 and max(last) > 0.5  # it learned something on digits
    assert (tmp_path / "figures" / "modularity_curves.png").is_file()
    assert (tmp_path / "figures" / "diagnostics_purity_heatmap.png").is_file()


def test_plain_module_with_named_and_regex_taps(capsys) -> None:
    code = readme_example("plain nn.Module")
    scope: dict = {"__name__": "readme_example"}
    exec(compile(code, "README.md: plain nn.Module", "exec"), scope)
    curve, report = scope["curve"], scope["report"]
    assert list(curve) == ["1", "3"] and all(-0.5 < q <= 1 for q in curve.values())
    assert report.meta["layers"] == ["1", "3", "5"]
    assert report.meta["per_layer"][0]["modularity"] == pytest.approx(curve["1"], abs=1e-12)
    assert "most_entangled" in report.meta["per_layer"][-1]
    assert capsys.readouterr().out.strip()
    plt.close("all")
