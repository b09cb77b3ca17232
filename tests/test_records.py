"""dnn_modularity.records: atomic text/bytes/JSON/CSV/figure writers."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from dnn_modularity import records


def test_atomic_write_text_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.txt"
    records.atomic_write_text(target, "one")
    records.atomic_write_text(target, "two")
    assert target.read_text() == "two"
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]


def test_atomic_write_keeps_old_content_when_writing_fails(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "a.bin"
    records.atomic_write_bytes(target, b"old")

    def boom(src, dst):  # the final rename fails (disk full, killed, ...)
        raise OSError("replace failed")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="replace failed"):
        records.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]  # temp file removed


def test_write_json_converts_tensors_paths_and_nonfinite(tmp_path: Path) -> None:
    path = records.write_json(
        tmp_path / "r.json",
        {"t": torch.tensor([1.5, 2.0]), "p": tmp_path, "nan": math.nan, "n": (1, 2)},
    )
    data = json.loads(path.read_text())
    assert data == {"t": [1.5, 2.0], "p": str(tmp_path), "nan": None, "n": [1, 2]}


def test_append_csv_rows_appends_and_extends_header(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    records.append_csv_rows(path, [{"epoch": 0, "q": 0.1}], fieldnames=["epoch", "q", "M"])
    records.append_csv_rows(path, [{"epoch": 1, "q": torch.tensor(0.25), "extra": "x"}])
    rows = records.read_csv_rows(path)
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert rows[0]["M"] == "" and rows[1]["q"] == "0.25"
    assert path.read_text().splitlines()[0] == "epoch,q,M,extra"


def test_write_csv_rows_none_becomes_empty(tmp_path: Path) -> None:
    path = records.write_csv_rows(tmp_path / "x.csv", [{"a": None, "b": 2}])
    assert path.read_text() == "a,b\n,2\n"
    assert records.read_csv_rows(tmp_path / "missing.csv") == []


def test_atomic_save_figure_writes_png_and_pdf(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    paths = records.atomic_save_figure(fig, tmp_path / "figs" / "curve.v1")
    plt.close(fig)
    assert [p.name for p in paths] == ["curve.v1.png", "curve.v1.pdf"]
    assert paths[0].read_bytes()[:4] == b"\x89PNG"
    assert paths[1].read_bytes()[:4] == b"%PDF"


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_respect_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    # The temporary file of the atomic writers (mkstemp: 0600) used to become the output file,
    # so collaborators could not read records, figures or configs on shared storage.
    old = os.umask(umask)
    try:
        paths = [
            records.atomic_write_text(tmp_path / "config.yaml", "a: 1\n"),
            records.write_json(tmp_path / "results.json", {"a": 1}),
            records.write_csv_rows(tmp_path / "m.csv", [{"a": 1}]),
            records.append_csv_rows(tmp_path / "m.csv", [{"a": 2}]),
        ]
        assert records.current_umask() == umask
    finally:
        os.umask(old)
    assert {oct(p.stat().st_mode & 0o777) for p in paths} == {oct(mode)}


def test_rewriting_a_file_keeps_its_mode(tmp_path: Path) -> None:
    path = records.atomic_write_text(tmp_path / "shared.csv", "a\n")
    path.chmod(0o640)  # the user's choice, as open(path, "w") would keep it
    records.atomic_write_text(path, "b\n")
    assert path.stat().st_mode & 0o777 == 0o640
