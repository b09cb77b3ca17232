"""The one analysis registry: ``conf/analysis/<name>.yaml`` with ``fn: <module>.run``.

Adding an analysis is one entry: a module with ``run(cfg)`` under :mod:`dnn_modularity.analysis`
and its config file naming it in ``fn``. ``analyze`` calls the ``fn`` of the composed config,
``report`` collects the records of every registered name.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from dnn_modularity import config_dir

__all__ = ["analysis_functions"]


def analysis_functions(conf_dir: str | Path | None = None) -> dict[str, str]:
    """Analysis name -> the dotted path of its ``run(cfg)``, from ``<conf>/analysis/*.yaml``.

    Args:
        conf_dir: The config folder (default: :func:`dnn_modularity.config_dir`).

    Returns:
        ``{name: fn}`` in name order (files without ``fn`` are skipped).
    """
    folder = Path(conf_dir or config_dir()) / "analysis"
    found = {}
    for path in sorted(folder.glob("*.yaml")):
        node = OmegaConf.load(path)
        if node.get("fn"):
            found[str(node.get("name") or path.stem)] = str(node.fn)
    return found
