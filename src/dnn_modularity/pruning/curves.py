"""The curve a pruning rule reads: from a record another command wrote, or measured here.

:func:`read_curve` understands every record this package writes (``analyze``'s ``curve.csv`` /
``curve_summary.csv`` / ``ring.csv``, ``train``'s ``modularity.csv``, see
:func:`dnn_modularity.records.read_curve_record`) and the curve paper 1's authors published;
:func:`measure_curve` measures the parent's curve on ``probe.repeats`` probe sets (paper 1's
Newman Q of the k-NN graph, or paper 2's M = r·AQ·(1−EQ) of the top-|E| graph).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch import nn

from dnn_modularity.analysis.curve import curve_analysis
from dnn_modularity.analysis.measure import (
    AnalysisOutput,
    layer_features,
    save_output,
    summarize_rows,
)
from dnn_modularity.analysis.settings import AnalysisSettings
from dnn_modularity.data.probe import ProbeSet, check_probe_size
from dnn_modularity.graph import class_separation, resolve_num_edges, top_edges_graph
from dnn_modularity.records import (
    MEASURES,
    Curve,
    check_measure,
    curve_by_repeat,
    read_curve_record,
)
from dnn_modularity.reference import authors_curve, authors_curve_name
from dnn_modularity.taps import resolve_taps

__all__ = ["MEASURES", "PRUNE_TAPS", "Curve", "measure_curve", "read_curve"]


def read_curve(spec: str | Path, measure: str = "modularity") -> Curve:
    """The curve named by ``curve=``: a record path, or ``authors:cifar10`` / ``authors:cifar100``.

    ``authors:<dataset>`` is the ResNet-56 curve paper 1's authors published with their code
    (:mod:`dnn_modularity.reference`; Newman Q, so ``measure=modularity`` only). Paper 1's rule on
    ``authors:cifar10`` gives Table 1's blocks [2, 3, 6].

    Raises:
        ValueError: an unknown ``authors:`` name, or ``measure=M`` with a published curve.
        FileNotFoundError: a record path that does not exist.
    """
    dataset = authors_curve_name(spec)
    if dataset is None:
        return read_curve_record(spec, measure)
    if check_measure(measure) != "modularity":
        raise ValueError(
            f"curve={spec} is a Newman-modularity curve (paper 1); use measure=modularity, "
            f"not measure={measure}"
        )
    ref = authors_curve(dataset)
    return Curve(
        layers=list(ref.layers), values=[list(ref.values)], measure=measure, source=str(spec)
    )


#: Tap modes a pruning curve can be read at: both give one value per prunable unit.
PRUNE_TAPS: tuple[str, ...] = ("block", "official")


def _unit_names(model: nn.Module, taps: str) -> dict[str, str]:
    """Tap name -> the prunable unit it reads (its ``block`` tap name).

    ``block`` taps are the units; ``official`` taps correspond one to one, in order
    (``stem.conv`` -> ``stem``, ``stage1.0.conv`` -> ``stage1.0``, ``layer1.0`` -> ``layer1.0``).

    Raises:
        ValueError: another tap selection (the rules need one value per unit).
    """
    if taps not in PRUNE_TAPS:
        raise ValueError(
            f"probe.taps={taps!r} cannot drive a pruning rule (it needs one value per prunable "
            f"unit); valid choices: {list(PRUNE_TAPS)}"
        )
    block = [p.name for p in resolve_taps(model, "block")]
    read = [p.name for p in resolve_taps(model, taps)]
    if len(read) != len(block):  # pragma: no cover - every zoo model declares matching taps
        raise ValueError(f"{taps} taps {read} do not match the units {block} one to one")
    return dict(zip(read, block, strict=True))


def _m_curve_rows(
    model: nn.Module, probes: Sequence[Any], cfg: DictConfig, taps: str = "block"
) -> list[dict[str, Any]]:
    """Paper 2's M per layer and repeat (engine: top-|E| graph + class_separation)."""
    rows = []
    settings = AnalysisSettings(taps=taps, batch_size=int(cfg.batch_size))
    explicit = cfg.graph.get("num_edges")
    for repeat, probe in enumerate(probes):
        # |E|: paper 2's edge density for this N unless graph.num_edges is given (then clamped)
        budget = resolve_num_edges(len(probe), None if explicit is None else int(explicit))
        for point, feats in layer_features(model, probe.images, settings):
            graph = top_edges_graph(
                feats,
                num_edges=budget.num_edges,
                metric=str(cfg.graph.metric),
                block_size=cfg.graph.get("block_size"),
            )
            sep = class_separation(graph, probe.labels)
            rows.append(
                {
                    "analysis": "curve",
                    "variant": "trained",
                    "layer_index": int(point.index),
                    "layer": str(point.name),
                    "tap": taps,
                    "N": len(probe),
                    "num_edges": budget.num_edges,
                    "edge_density": budget.density,
                    "metric": str(cfg.graph.metric),
                    "repeat": repeat,
                    "measure": "M",
                    "value": float(sep.m),
                }
            )
    return rows


def measure_curve(model: nn.Module, datamodule: Any, cfg: DictConfig, out_dir: Path) -> Curve:
    """Measure the parent's curve on ``probe.repeats`` probe sets and write it to ``out_dir``.

    One value per prunable unit (the layers the rules speak of), read at ``probe.taps``:
    ``block`` (the unit's output, the papers' text) or ``official`` (the official code's hooks:
    a VGG unit's conv before BN, a ResNet's stem conv before BN; the value is filed under the
    unit it belongs to, so the rules see the same layer names). The ``tap`` column says which.

    Args:
        model: the parent (``Normalized``, takes [0, 1] images).
        datamodule: the data module (probe sets come from its test split).
        cfg: the composed ``prune`` config (``probe``, ``graph``, ``measure``, ``batch_size``).
        out_dir: where ``curve.csv`` (and for Q the summary and figure) go.

    Returns:
        The :class:`Curve`.
    """
    measure = check_measure(str(cfg.measure))
    probe = cfg.probe
    n, k = int(probe.n), int(cfg.graph.k)
    check_probe_size(
        n,
        getattr(datamodule, "num_classes", None),
        k=k if measure == "modularity" else None,
        dataset=getattr(datamodule, "name", None),
    )
    probes = [
        ProbeSet.from_datamodule(
            datamodule,
            n,
            seed=int(probe.seed),
            strategy=str(probe.get("strategy", "balanced")),
            repeat=r,
            disjoint=bool(probe.get("disjoint", True)),
        )
        for r in range(int(probe.get("repeats", 1)))
    ]
    model = model.eval()
    taps = str(probe.get("taps", "block"))
    units = _unit_names(model, taps)
    if measure == "modularity":
        settings = AnalysisSettings(
            k=k,
            metric=str(cfg.graph.metric),
            taps=taps,
            seed=int(probe.seed),
            batch_size=int(cfg.batch_size),
            block_size=cfg.graph.get("block_size"),
        )
        output = curve_analysis(
            model,
            probes,
            settings,
            shuffled_null=False,
            random_init=False,
            title="parent modularity curve (pruning input)",
        )
    else:
        rows = _m_curve_rows(model, probes, cfg, taps=taps)
        output = AnalysisOutput("curve", rows=rows, summary=summarize_rows(rows))
    for row in [*output.rows, *output.summary]:
        if "layer" in row:
            row["layer"] = units.get(str(row["layer"]), row["layer"])
    save_output(output, out_dir)
    trained = [r for r in output.rows if r.get("variant", "trained") == "trained"]
    curve = curve_by_repeat(trained, "value", out_dir / "curve.csv", measure)
    curve.source = "measured"
    return curve
