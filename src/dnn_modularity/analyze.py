r"""``python -m dnn_modularity.analyze ckpt_path=... analysis=<name>`` (``dnn-analyze``).

One Hydra entry point for every analysis of the two papers; ``analysis=`` picks the module of
:mod:`dnn_modularity.analysis` (the config's ``analysis.fn``) whose ``run(cfg)`` does the work:

=============  ==============================================================================
curve          per-layer modularity, R repeats, mean ± std, 95% interval + null baselines
               (paper 1 Figs. 4, 5, 7, B11-B13)
adversarial    success rates and curves of adversarial samples vs clean (paper 1 Fig. 6a)
dynamics       modularity of each layer vs epoch beside accuracy (paper 1 Fig. 6b)
difference     |M_i - M_j| heatmap beside linear CKA (paper 1 Fig. 8)
histograms     all-pairs similarity histograms per layer (paper 2 Figs. 2-5)
ring           ring graphs (grid + GIF), M vs Newman Q (paper 2 Figs. 6-10)
=============  ==============================================================================

Examples::

    python -m dnn_modularity.analyze ckpt_path=outputs/train/.../checkpoints/last.ckpt \\
        data=cifar10 analysis=curve probe.n=500 probe.repeats=5
    python -m dnn_modularity.analyze -m experiment=fig7a_batch_size ckpt_path=... \\
        probe.n=100,200,300,400,500

Tests call :func:`analyze` with a composed config.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import hydra
from omegaconf import DictConfig

from dnn_modularity.runtime import CONF_DIR

__all__ = ["ANALYSES", "CONF_DIR", "analyze", "main"]

log = logging.getLogger(__name__)

#: Analysis name -> the ``run(cfg)`` it calls (the configs name the same in ``analysis.fn``).
ANALYSES = {
    name: f"dnn_modularity.analysis.{name}.run"
    for name in ("curve", "adversarial", "dynamics", "difference", "histograms", "ring")
}


def analyze(cfg: DictConfig, *, started: float | None = None) -> dict[str, Any]:
    """Run the analysis that ``cfg.analysis`` selects.

    Args:
        cfg: Composed ``analyze`` config.
        started: ``time.perf_counter()`` at the entry of the command (default: now). The
            ``seconds`` reported and logged are the wall time from there to the end, figures
            and loggers included.

    Returns:
        The analysis's run summary (output folder, record and figure paths, metric keys).

    Raises:
        KeyError: Unknown analysis name (message lists the valid ones).
    """
    started = time.perf_counter() if started is None else started
    import lightning.pytorch as L
    import torch
    from hydra.utils import get_method

    from dnn_modularity.analysis.context import command_clock
    from dnn_modularity.progress import format_seconds

    name = str(cfg.analysis.name)
    target = cfg.analysis.get("fn") or ANALYSES.get(name)
    if target is None:
        raise KeyError(f"unknown analysis {name!r}; valid choices: {sorted(ANALYSES)}")
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    with command_clock(started):
        result = get_method(str(target))(cfg)
    result["seconds"] = time.perf_counter() - started
    log.info(
        "analysis=%s done in %s -> %s", name, format_seconds(result["seconds"]), result["out_dir"]
    )
    for attack in result.get("attacks", []):
        log.info(
            "  %s: %s, success rate %s",
            attack["attack"],
            attack["status"],
            attack.get("success_rate"),
        )
    return result


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="analyze")
def main(cfg: DictConfig) -> None:
    """Console entry point (Hydra parses the command line)."""
    analyze(cfg, started=time.perf_counter())


if __name__ == "__main__":
    main()
