"""Atomic file outputs: text, bytes, JSON, CSV rows and matplotlib figures.

Every writer puts the new content into a temporary file in the destination's directory and then
`os.replace`s it over the destination, so a reader (or a crashed/killed run) never sees a
half-written file: it sees the old content or the new one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import stat
import tempfile
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "append_csv_rows",
    "atomic_save_figure",
    "atomic_write_bytes",
    "atomic_write_text",
    "current_umask",
    "read_csv_rows",
    "to_jsonable",
    "write_csv_rows",
    "write_json",
]

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask (read from /proc when possible: setting it is process-wide)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:  # os.umask can only be read by setting it; restore at once
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _file_mode(path: Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~current_umask()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically (temporary file in the same folder + `os.replace`).

    Args:
        path: Destination file; its parent folders are created.
        data: The complete new content.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory: os.replace is only atomic within one file system.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates the file 0600; give it the mode a plain open() would: the old file's
        # mode when replacing one, else 0666 minus the umask (shared storage stays readable).
        os.fchmod(fd, _file_mode(path))
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write `text` to `path` atomically.

    Args:
        path: Destination file; its parent folders are created.
        text: The complete new content.
        encoding: Text encoding.

    Returns:
        The destination path.
    """
    return atomic_write_bytes(path, text.encode(encoding))


def to_jsonable(obj: Any) -> Any:
    """Convert tensors, numpy values, paths, tuples and mappings into JSON-serialisable values.

    Non-finite floats become `None` (JSON has no NaN/inf).
    """
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # torch.Tensor, numpy array or scalar
        return to_jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def write_json(path: str | os.PathLike[str], obj: Any, indent: int = 2) -> Path:
    """Write `obj` as JSON atomically (tensors/arrays become lists, paths strings).

    Args:
        path: Destination `.json` file.
        obj: Any nesting of mappings, sequences, scalars, tensors and paths.
        indent: JSON indentation.

    Returns:
        The destination path.
    """
    text = json.dumps(to_jsonable(obj), indent=indent, sort_keys=False) + "\n"
    return atomic_write_text(path, text)


def read_csv_rows(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Read a CSV file with a header into a list of row dicts (values are strings).

    Returns an empty list when the file does not exist.
    """
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _merge_fieldnames(*groups: Iterable[str]) -> list[str]:
    names: list[str] = []
    for group in groups:
        for name in group:
            if name not in names:
                names.append(name)
    return names


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if hasattr(value, "item") and callable(value.item):  # 0-d tensor / numpy scalar
        return value.item()
    return value


def write_csv_rows(
    path: str | os.PathLike[str],
    rows: Sequence[Mapping[str, Any]],
    fieldnames: Sequence[str] | None = None,
) -> Path:
    """Write `rows` (with a header) to `path` atomically, replacing any old content.

    Args:
        path: Destination `.csv` file.
        rows: Row dicts; `None` values become empty cells.
        fieldnames: Column order; default: keys in first-seen order over the rows.

    Returns:
        The destination path.
    """
    names = list(fieldnames) if fieldnames is not None else _merge_fieldnames(*rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=names, extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_value(v) for k, v in row.items()})
    return atomic_write_text(path, buffer.getvalue())


def append_csv_rows(
    path: str | os.PathLike[str],
    rows: Sequence[Mapping[str, Any]],
    fieldnames: Sequence[str] | None = None,
) -> Path:
    """Append `rows` to a CSV file atomically (read the old rows, write old + new, `os.replace`).

    New columns are added at the end of the header (old rows get empty cells there).

    Args:
        path: Destination `.csv` file (created when missing).
        rows: Row dicts to append.
        fieldnames: Preferred column order for a new file (and for new columns).

    Returns:
        The destination path.
    """
    old = read_csv_rows(path)
    old_names: list[str] = []
    if Path(path).exists():
        with Path(path).open(newline="", encoding="utf-8") as handle:
            old_names = next(csv.reader(handle), [])
    names = _merge_fieldnames(old_names, fieldnames or [], *rows)
    return write_csv_rows(path, [*old, *rows], fieldnames=names)


def _tight_bbox(fig: Any) -> Any:
    """The figure's tight bounding box (inches, padded as ``savefig(bbox_inches="tight")``).

    ``savefig(bbox_inches="tight")`` renders the whole figure once just to measure it, for
    every format: for a dense figure (the ring grid's 28 panels of 40,000 edges) that is a
    second full rendering per file. Measured once here with a bare Agg renderer (text extents
    only, no drawing) and passed to every ``savefig``.
    """
    import matplotlib
    from matplotlib.backends.backend_agg import RendererAgg

    if fig.get_layout_engine() is not None:
        fig.get_layout_engine().execute(fig)  # what a draw would do first
    renderer = RendererAgg(int(fig.bbox.width), int(fig.bbox.height), fig.dpi)
    return fig.get_tightbbox(renderer).padded(matplotlib.rcParams["savefig.pad_inches"])


def atomic_save_figure(
    fig: Any,
    path_without_suffix: str | os.PathLike[str],
    formats: Sequence[str] = ("png", "pdf"),
    dpi: int = 150,
) -> list[Path]:
    """Save a matplotlib figure as PNG and PDF (by default), each file written atomically.

    Args:
        fig: A `matplotlib.figure.Figure`.
        path_without_suffix: Destination without extension, e.g. `run/figures/modularity_curves`.
        formats: File formats (matplotlib names), one file each.
        dpi: Resolution of raster formats.

    Returns:
        The written paths, in `formats` order.
    """
    base = Path(path_without_suffix)
    bbox = _tight_bbox(fig)
    paths = []
    for fmt in formats:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=dpi, bbox_inches=bbox)
        paths.append(atomic_write_bytes(base.with_name(f"{base.name}.{fmt}"), buffer.getvalue()))
    return paths
