"""``python -m dnn_modularity.prune ckpt_path=... pruning=<rule>`` (console script ``dnn-prune``).

Modularity-guided layer pruning as one command (paper 1, Sec. 5.2, Figs. 9-10, Table 1; paper 2,
Sec. 4.4, Criterion I, Table 1):

1. load the trained classifier (``ckpt_path``);
2. its per-layer curve: read from a record (``curve=<path>``: ``analyze``'s ``curve.csv`` /
   ``curve_summary.csv`` / ``ring.csv`` or ``train``'s ``modularity.csv``), or measured here on
   ``probe.repeats`` probe sets (``measure=modularity``: paper 1's Newman Q of the k-NN graph via
   :func:`dnn_modularity.analysis.curve.curve_analysis`; ``measure=M``: paper 2's
   M = r·AQ·(1−EQ) of the top-|E| graph via the engine);
3. the rule (``conf/pruning``: ``delta``, ``criterion1``, ``explicit``) -> a
   :class:`~dnn_modularity.pruning.PruningDecision` (``decision.json``, ``decision.csv``);
4. the physically smaller network with the kept layers' weights
   (:func:`~dnn_modularity.pruning.build_pruned`), evaluated before fine-tuning
   (``pruned_init.ckpt``);
5. fine-tuning with the same Lightning trainer, callbacks and loggers as ``train`` (the
   ``trainer``/``optimizer``/``scheduler``/``callbacks``/``logger`` groups; ``checkpoints/``,
   ``metrics.csv``, the pruned network's ``modularity.csv``), then re-evaluation on the test split
   (``pruned_final.ckpt`` = the weights after fine-tuning; ``test_ckpt=best`` reports the best
   ``val/acc`` checkpoint instead). ``finetune_control=true`` also fine-tunes the unpruned parent
   with the same recipe (``control/``), separating the effect of pruning from that of training;
6. the table (``pruning_table.csv``, ``pruning_table.md``, W&B table ``pruning/table``): model,
   rule, removed layers, accuracy of the parent / before / after fine-tuning, params, MACs and
   FLOPs with their reductions.

``pruning=single_layer_sweep`` prunes each listed layer on its own (one fine-tuned variant per
layer, in ``variants/<layer>/``) and adds paper 1's Fig. 10(b) analysis: ΔM of the removed layer
(M_i − M_{i−1}) against the accuracy drop ΔAcc = Acc_parent − Acc_pruned
(``delta_m_vs_delta_acc.csv`` and ``figures/delta_m_vs_delta_acc.png|pdf``).

Tests call :func:`prune` with a config composed from ``conf/prune.yaml``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig
from torch import nn

from dnn_modularity.io import atomic_save_figure, atomic_write_text, write_csv_rows, write_json
from dnn_modularity.pruning import (
    PruningDecision,
    bare_model,
    build_pruned,
    decide_for_model,
    pruning_costs,
)
from dnn_modularity.runtime import (
    CONF_DIR,
    build_callbacks,
    build_classifier,
    build_loggers,
    build_trainer,
    checkpoint_files,
    configure_torch,
    default_run_name,
    finish_wandb,
    hydra_config,
    instantiate,
    is_rank_zero,
    log_config,
    missing_outputs,
    prepare_run_dir,
    require_outputs,
)

__all__ = [
    "CONF_DIR",
    "MEASURES",
    "SWEEP_RULE",
    "TABLE_COLUMNS",
    "Curve",
    "delta_m_vs_delta_acc",
    "main",
    "markdown_table",
    "measure_curve",
    "prune",
    "read_curve",
    "read_curve_record",
]

#: Curve measures: record name -> the curve kind stored in the decision.
MEASURES: dict[str, str] = {"modularity": "Q", "M": "M"}
#: The rule name of the single-layer sweep (Fig. 10(b)); the other rules are pruning.RULES.
SWEEP_RULE = "single_layer_sweep"

#: Columns of ``pruning_table.csv`` (accuracies in %, reductions in % of the parent's cost;
#: ``delta_acc`` = acc_parent − acc_pruned_after_ft in points, paper 1's ΔAcc: a drop is > 0).
TABLE_COLUMNS: tuple[str, ...] = (
    "model",
    "data",
    "rule",
    "params_rule",
    "measure",
    "num_removed",
    "removed_layers",
    "acc_parent",
    "acc_parent_ft",
    "acc_pruned_before_ft",
    "acc_pruned_after_ft",
    "delta_acc",
    "finetune_epochs",
    "params",
    "pruned_params",
    "params_reduction",
    "macs",
    "pruned_macs",
    "macs_reduction",
    "flops",
    "pruned_flops",
    "flops_reduction",
    "pruned_arch",
    "checkpoint",
)


# --------------------------------------------------------------------------------------------
# Curves
# --------------------------------------------------------------------------------------------


@dataclass
class Curve:
    """A per-layer curve with its repeats.

    Attributes:
        layers: layer names (L,), front to back.
        values: ``(R, L)`` values, R repeats.
        measure: ``modularity`` (Newman Q) or ``M`` (paper 2).
        source: where it came from (a record path or ``measured``).
    """

    layers: list[str]
    values: list[list[float]]
    measure: str
    source: str


def _check_measure(measure: str) -> str:
    if measure not in MEASURES:
        raise ValueError(f"unknown curve measure {measure!r}; valid choices: {list(MEASURES)}")
    return measure


def _by_repeat(
    rows: Sequence[Mapping[str, Any]], value_col: str, path: Path, measure: str
) -> Curve:
    """Rows with ``layer_index``, ``layer``, a value column and optional ``repeat`` -> Curve."""
    per_repeat: dict[str, dict[int, tuple[str, float]]] = {}
    for row in rows:
        cell = row.get(value_col)
        if cell in (None, ""):
            continue
        rep = next((str(row[c]) for c in ("repeat", "seed") if row.get(c) not in (None, "")), "0")
        per_repeat.setdefault(rep, {})[int(row["layer_index"])] = (str(row["layer"]), float(cell))
    if not per_repeat:
        raise ValueError(
            f"curve record {str(path)!r} has no {measure!r} values (column {value_col!r})"
        )
    layer_sets = {tuple(sorted(v)) for v in per_repeat.values()}
    if len(layer_sets) != 1:
        raise ValueError(f"curve record {str(path)!r}: repeats cover different layers")
    first = next(iter(per_repeat.values()))
    order = sorted(first)
    layers = [first[i][0] for i in order]
    values = [[reps[i][1] for i in order] for reps in per_repeat.values()]
    return Curve(layers=layers, values=values, measure=measure, source=str(path))


def read_curve_record(path: str | Path, measure: str = "modularity") -> Curve:
    """Read a per-layer curve from a record another command wrote.

    Understood layouts (CSV):

    * ``analyze`` tidy records (``curve.csv``, ``ring.csv``): columns ``variant``, ``repeat``,
      ``layer_index``, ``layer``, ``measure``, ``value``; the ``trained`` variant's rows of
      ``measure`` are used, one curve per repeat;
    * ``analyze`` summaries (``curve_summary.csv``): ``measure`` and ``mean`` per layer;
    * ``train``'s ``modularity.csv``: ``epoch``, ``layer_index``, ``layer``, ``modularity``,
      ``M``, ``repeat``; the last epoch is used.

    Args:
        path: the CSV file.
        measure: ``modularity`` (Newman Q, paper 1) or ``M`` (paper 2).

    Returns:
        The :class:`Curve`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unknown measure, or a file without that measure's values.
    """
    from dnn_modularity.io import read_csv_rows

    _check_measure(measure)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"curve record {str(path)!r} does not exist")
    rows = read_csv_rows(path)
    if not rows:
        raise ValueError(f"curve record {str(path)!r} is empty")
    cols = set(rows[0])
    if {"layer_index", "layer"} - cols:
        raise ValueError(
            f"curve record {str(path)!r} lacks layer_index/layer columns; columns: {sorted(cols)}"
        )
    if "epoch" in cols and measure in cols:  # train's modularity.csv
        last = max(int(float(r["epoch"])) for r in rows)
        rows = [r for r in rows if int(float(r["epoch"])) == last]
        return _by_repeat(rows, measure, path, measure)
    if "measure" in cols:
        rows = [
            r
            for r in rows
            if r.get("measure") == measure and r.get("variant", "trained") in ("", "trained")
        ]
        if "value" in cols:
            return _by_repeat(rows, "value", path, measure)
        if "mean" in cols:
            return _by_repeat([{**r, "repeat": "0"} for r in rows], "mean", path, measure)
    raise ValueError(
        f"curve record {str(path)!r} has no {measure!r} curve; expected analyze's curve.csv / "
        f"curve_summary.csv / ring.csv or train's modularity.csv; columns: {sorted(cols)}"
    )


def read_curve(spec: str | Path, measure: str = "modularity") -> Curve:
    """The curve named by ``curve=``: a record path, or ``authors:cifar10`` / ``authors:cifar100``.

    ``authors:<dataset>`` is the ResNet-56 curve paper 1's authors published with their code
    (:mod:`dnn_modularity.reference`; Newman Q, so ``measure=modularity`` only). Paper 1's rule on
    ``authors:cifar10`` gives Table 1's blocks [2, 3, 6].

    Raises:
        ValueError: an unknown ``authors:`` name, or ``measure=M`` with a published curve.
        FileNotFoundError: a record path that does not exist.
    """
    from dnn_modularity.reference import authors_curve, authors_curve_name

    dataset = authors_curve_name(spec)
    if dataset is None:
        return read_curve_record(spec, measure)
    if _check_measure(measure) != "modularity":
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
    from dnn_modularity.taps import resolve_taps

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
    from dnn_modularity.analysis.common import layer_features
    from dnn_modularity.graph import class_separation, resolve_num_edges, top_edges_graph

    rows = []
    explicit = cfg.graph.get("num_edges")
    for repeat, probe in enumerate(probes):
        # |E|: paper 2's edge density for this N unless graph.num_edges is given (then clamped)
        budget = resolve_num_edges(len(probe), None if explicit is None else int(explicit))
        for point, feats in layer_features(
            model, probe.images, taps=taps, batch_size=int(cfg.batch_size)
        ):
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
    from dnn_modularity.analysis.common import AnalysisOutput, save_output, summarize_rows
    from dnn_modularity.data.probe import ProbeSet, check_probe_size

    measure = _check_measure(str(cfg.measure))
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
        from dnn_modularity.analysis.curve import curve_analysis

        output = curve_analysis(
            model,
            probes,
            k=k,
            metric=str(cfg.graph.metric),
            taps=taps,
            seed=int(probe.seed),
            shuffled_null=False,
            random_init=False,
            batch_size=int(cfg.batch_size),
            block_size=cfg.graph.get("block_size"),
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
    curve = _by_repeat(trained, "value", out_dir / "curve.csv", measure)
    curve.source = "measured"
    return curve


# --------------------------------------------------------------------------------------------
# Lightning plumbing (TRAIN's building blocks)
# --------------------------------------------------------------------------------------------


def _eval_trainer(cfg: DictConfig, run_dir: Path) -> Any:
    """A trainer of ``cfg.trainer`` for evaluation only (no loggers, callbacks or checkpoints)."""
    return build_trainer(cfg.trainer, run_dir, enable_checkpointing=False)


def _test_acc(trainer: Any, module: Any, datamodule: Any, ckpt_path: str | None = None) -> float:
    """Test accuracy in % (the classifier logs ``test/acc``)."""
    results = trainer.test(
        module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False, weights_only=True
    )
    return 100.0 * float(results[0]["test/acc"]) if results else math.nan


def _make_module(cfg: DictConfig, net: nn.Module, datamodule: Any, parent: Any) -> Any:
    """An ``ImageClassifier`` for ``net``'s architecture with ``net``'s weights.

    The input normalisation is the parent's (the statistics its weights were trained with, kept
    in its hyperparameters), not the datamodule's: the inherited weights expect those inputs.
    """
    module = build_classifier(
        cfg,
        bare_model(net).arch_config(),
        datamodule,
        mean=list(parent.hparams.mean),
        std=list(parent.hparams.std),
    )
    module.net.load_state_dict(bare_model(net).state_dict(), strict=True)
    return module


def _finetune(
    cfg: DictConfig,
    module: Any,
    datamodule: Any,
    run_dir: Path,
    loggers: list[Any],
    what: str = "fine-tune",
) -> dict[str, Any]:
    """Fine-tune ``module`` with ``cfg.trainer`` + TRAIN's callbacks; test; return the record.

    ``what`` names the fine-tune in its progress lines (start, epochs with ETA, end).
    """
    import lightning.pytorch as L

    from dnn_modularity.callbacks.progress import EpochProgress

    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    callbacks = build_callbacks(cfg.get("callbacks"), run_dir)
    callbacks.append(EpochProgress(what))  # epochs done and an ETA in the log, not only on a TTY
    trainer = build_trainer(cfg.trainer, run_dir, callbacks=callbacks, loggers=loggers)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    seconds = time.perf_counter() - start
    # The final weights, whatever the checkpoint callbacks keep (callbacks=none included).
    final = run_dir / "pruned_final.ckpt"
    trainer.save_checkpoint(str(final), weights_only=False)
    # Lightning skips checkpoints it may not write without an error: fail instead.
    missing = missing_outputs({**checkpoint_files(trainer), "final checkpoint": final})
    require_outputs(trainer.strategy.broadcast(missing if trainer.is_global_zero else {}), run_dir)
    tested = str(final)
    best = getattr(trainer.checkpoint_callback, "best_model_path", "")
    if str(cfg.get("test_ckpt", "last")) == "best" and best:
        tested = best
    acc = _test_acc(trainer, module, datamodule, ckpt_path=None if tested == str(final) else tested)
    return {
        "acc": acc,
        "epochs": int(trainer.current_epoch),
        "seconds": seconds,
        "checkpoint": tested,
    }


# --------------------------------------------------------------------------------------------
# One pruning: decision -> pruned net -> evaluate -> fine-tune -> evaluate
# --------------------------------------------------------------------------------------------


def _prune_and_finetune(
    cfg: DictConfig,
    *,
    parent: Any,
    acc_parent: float,
    decision: PruningDecision,
    datamodule: Any,
    run_dir: Path,
    loggers: list[Any],
) -> dict[str, Any]:
    """Build, evaluate, fine-tune and re-evaluate one pruned network; return its table row."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "decision.json", decision.to_dict())
    write_csv_rows(run_dir / "decision.csv", decision.layer_table())

    child = build_pruned(parent.net, decision.removed)
    size = (int(datamodule.in_channels), int(datamodule.image_size), int(datamodule.image_size))
    costs = pruning_costs(parent.net, child, size)
    module = _make_module(cfg, child, datamodule, parent)

    eval_trainer = _eval_trainer(cfg, run_dir)
    acc_before = _test_acc(eval_trainer, module, datamodule)
    init_ckpt = run_dir / "pruned_init.ckpt"
    eval_trainer.save_checkpoint(str(init_ckpt), weights_only=False)
    if is_rank_zero():
        require_outputs(missing_outputs({"pruned network checkpoint": init_ckpt}), run_dir)

    if bool(cfg.get("finetune", True)):
        removed = ", ".join(decision.removed)
        what = f"fine-tune of the pruned network (without {removed})"
        ft = _finetune(cfg, module, datamodule, run_dir, loggers, what)
    else:
        # No fine-tuning: the "after FT" cells stay empty rather than repeat the "before" ones.
        ft = {"acc": None, "epochs": 0, "seconds": 0.0, "checkpoint": str(init_ckpt)}

    arch = bare_model(child).arch_config()
    c = costs.to_dict()
    return {
        "model": parent.net.arch_config().get("name"),
        "data": getattr(datamodule, "name", ""),
        "rule": decision.rule,
        "params_rule": ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in decision.params.items()
            if k != "remove"
        ),
        "measure": cfg.measure if decision.values is not None else "",
        "num_removed": len(decision.removed),
        "removed_layers": " ".join(decision.removed),
        "acc_parent": acc_parent,
        "acc_pruned_before_ft": acc_before,
        "acc_pruned_after_ft": ft["acc"],
        # Paper 1 (Sec. 5.2, Fig. 10b): ΔAcc = Acc_parent − Acc_pruned, the accuracy *drop*
        # (positive = the pruned network is worse), as in delta_m_vs_delta_acc.csv.
        "delta_acc": None if ft["acc"] is None else acc_parent - ft["acc"],
        "finetune_epochs": ft["epochs"],
        "params": c["params"],
        "pruned_params": c["pruned_params"],
        "params_reduction": c["params_reduction"],
        "macs": c["macs"],
        "pruned_macs": c["pruned_macs"],
        "macs_reduction": c["macs_reduction"],
        "flops": c["flops"],
        "pruned_flops": c["pruned_flops"],
        "flops_reduction": c["flops_reduction"],
        "pruned_arch": _arch_summary(arch),
        "checkpoint": ft["checkpoint"],
        "finetune_seconds": ft["seconds"],
    }


def _arch_summary(arch: Mapping[str, Any]) -> str:
    """``resnet56 blocks=[2, 3, 6]`` / ``vgg19_bn cfg=[...]``: the pruned layout in one cell."""
    keys = [k for k in ("blocks", "cfg") if arch.get(k) is not None]
    return " ".join([str(arch.get("name"))] + [f"{k}={arch[k]}" for k in keys])


# --------------------------------------------------------------------------------------------
# Tables and the Fig. 10(b) analysis
# --------------------------------------------------------------------------------------------


def _fmt(value: Any, column: str) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return "nan"
        if column.endswith("reduction") or column.startswith(("acc", "delta")):
            return f"{value:.2f}"
        return f"{value:.4g}"
    if isinstance(value, int) and column in ("params", "pruned_params"):
        return f"{value / 1e6:.3f}M"
    if isinstance(value, int) and column.endswith(("macs", "flops")):
        return f"{value / 1e6:.2f}M"
    return str(value).replace("|", "\\|")


#: Markdown headers (accuracies in %, reductions in % of the parent).
_MD_HEADERS = {
    "model": "model",
    "rule": "rule",
    "params_rule": "rule params",
    "measure": "curve",
    "removed_layers": "removed layers",
    "acc_parent": "acc parent (%)",
    "acc_parent_ft": "acc parent + same FT (%)",
    "acc_pruned_before_ft": "acc pruned, before FT (%)",
    "acc_pruned_after_ft": "acc pruned, after FT (%)",
    "params": "params",
    "pruned_params": "params pruned",
    "params_reduction": "params ↓ (%)",
    "macs": "MACs",
    "pruned_macs": "MACs pruned",
    "macs_reduction": "MACs ↓ (%)",
    "flops": "FLOPs",
    "pruned_flops": "FLOPs pruned",
    "flops_reduction": "FLOPs ↓ (%)",
}


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The papers' table style in Markdown: one row per pruned network."""
    optional = ("acc_parent_ft", "acc_pruned_after_ft")  # absent without fine-tuning
    cols = [
        c for c in _MD_HEADERS if c not in optional or any(r.get(c) not in (None, "") for r in rows)
    ]
    lines = [
        "| " + " | ".join(_MD_HEADERS[c] for c in cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c), c) for c in cols) + " |")
    notes = (
        '\nMACs = multiply-accumulates of conv + linear layers (the papers\' "FLOPs", counted '
        "with thop); FLOPs = 2 × MACs. Reductions are relative to the parent network. "
        "FT = fine-tuning.\n"
    )
    return "\n".join(lines) + "\n" + notes


def delta_m_vs_delta_acc(
    rows: Sequence[Mapping[str, Any]], out_dir: Path, title: str = ""
) -> dict[str, Any]:
    """Paper 1, Fig. 10(b): ΔM of each single removed layer vs the accuracy drop it causes.

    Args:
        rows: one dict per single-layer variant with ``layer``, ``delta_m`` (M_i − M_{i−1} on
            the parent's curve) and ``delta_acc_drop`` (Acc_parent − Acc_pruned after
            fine-tuning, in points); when every row also has ``delta_acc_drop_vs_control``
            (the parent fine-tuned with the same recipe minus the pruned one), that is plotted.
        out_dir: run folder (``delta_m_vs_delta_acc.csv``, ``figures/delta_m_vs_delta_acc.*``).
        title: figure title.

    Returns:
        ``{"csv": path, "y": plotted column, "figure": [png, pdf], "pearson_r": r or nan,
        "slope": s or nan}``.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    csv = write_csv_rows(out_dir / "delta_m_vs_delta_acc.csv", list(rows))
    # With the control run (the parent fine-tuned the same way), the drop is measured against it:
    # extra training alone can move an under-trained parent's accuracy.
    control = all(r.get("delta_acc_drop_vs_control") is not None for r in rows)
    y_key = "delta_acc_drop_vs_control" if control else "delta_acc_drop"
    x = np.asarray([_num(r["delta_m"]) for r in rows], dtype=float)
    y = np.asarray([_num(r[y_key]) for r in rows], dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    r_val = slope = math.nan
    fig, ax = plt.subplots(figsize=(5.0, 3.8))
    ax.scatter(x[ok], y[ok], color="#1f77b4", zorder=3)
    for row, xi, yi in zip(rows, x, y, strict=True):
        if math.isfinite(xi) and math.isfinite(yi):
            ax.annotate(
                str(row["layer"]), (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
    if ok.sum() >= 2 and np.ptp(x[ok]) > 0:
        slope, intercept = np.polyfit(x[ok], y[ok], 1)
        grid = np.linspace(x[ok].min(), x[ok].max(), 50)
        ax.plot(grid, slope * grid + intercept, color="#d62728", lw=1, label=f"slope {slope:.2f}")
        if ok.sum() >= 3 and np.ptp(y[ok]) > 0:
            r_val = float(np.corrcoef(x[ok], y[ok])[0, 1])
            ax.plot([], [], " ", label=f"Pearson r = {r_val:.2f}")
        ax.legend(fontsize=8)
    ax.axhline(0.0, color="0.6", lw=0.8)
    ax.set_xlabel(r"$\Delta M = M_i - M_{i-1}$ of the removed layer")
    parent = r"Acc$_{parent+FT}$" if control else r"Acc$_{parent}$"
    ax.set_ylabel(r"$\Delta$Acc = " + parent + r" − Acc$_{pruned}$ (points)")
    ax.set_title(title or "single-layer removals (paper 1, Fig. 10b)", fontsize=9)
    fig.tight_layout()
    paths = atomic_save_figure(fig, out_dir / "figures" / "delta_m_vs_delta_acc")
    plt.close(fig)
    return {
        "csv": str(csv),
        "y": y_key,
        "figure": [str(p) for p in paths],
        "pearson_r": r_val,
        "slope": float(slope),
    }


def _num(value: Any) -> float:
    """A float, NaN for a missing value (the first layer has no ΔM)."""
    return math.nan if value is None or value == "" else float(value)


def _log_results(
    loggers: Sequence[Any], rows: Sequence[Mapping[str, Any]], sweep: Sequence[Mapping[str, Any]]
) -> None:
    """W&B tables (``pruning/table``, ``pruning/delta_m_vs_delta_acc``) and summary metrics."""
    for logger in loggers:
        if len(rows) == 1:
            row = rows[0]
            metrics = {
                f"pruning/{k}": float(row[k])
                for k in (
                    "acc_parent",
                    "acc_pruned_before_ft",
                    "acc_pruned_after_ft",
                    "params_reduction",
                    "macs_reduction",
                    "flops_reduction",
                    "num_removed",
                )
                if row.get(k) is not None
            }
            logger.log_metrics(metrics)
        if type(logger).__name__ == "WandbLogger":
            cols = list(TABLE_COLUMNS)
            data = [[_cell(r.get(c)) for c in cols] for r in rows]
            logger.log_table(key="pruning/table", columns=cols, data=data)
            if sweep:
                scols = list(dict.fromkeys(k for r in sweep for k in r))
                logger.log_table(
                    key="pruning/delta_m_vs_delta_acc",
                    columns=scols,
                    data=[[_cell(r.get(c)) for c in scols] for r in sweep],
                )
        logger.save()


def _cell(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


# --------------------------------------------------------------------------------------------
# Entry
# --------------------------------------------------------------------------------------------


def _rule_kwargs(pruning: DictConfig) -> dict[str, Any]:
    rule = str(pruning.rule)
    kwargs: dict[str, Any] = {"on_empty_stage": str(pruning.get("on_empty_stage", "error"))}
    if rule == "delta":
        kwargs["tau"] = float(pruning.tau)
    elif rule == "criterion1":
        kwargs["tolerance"] = float(pruning.tolerance)
    elif rule == "explicit":
        remove = pruning.get("remove")
        if remove is None:
            raise ValueError(
                "pruning=explicit needs pruning.remove=[<layer>, ...] (removable layer names)"
            )
        kwargs["remove"] = [remove] if isinstance(remove, str) else list(remove)
    return kwargs


#: How ``single_layer_sweep`` builds its variants: ``single`` removes each listed layer on its
#: own; ``cumulative`` removes the first j listed layers in variant j (paper 1's VGG11_1..3,
#: removed back to front from the parent, each variant inheriting the parent's weights).
SWEEP_MODES: tuple[str, ...] = ("single", "cumulative")


def _sweep_decisions(
    pruning: DictConfig, net: nn.Module, curve: Curve, curve_kwargs: Mapping[str, Any]
) -> tuple[list[PruningDecision], list[str]]:
    """The variants of ``pruning=single_layer_sweep`` and the layer each one adds (Fig. 10b).

    ``pruning.layers`` lists the layers in removal order (null: every removable layer; back to
    front for ``mode=cumulative``); ``pruning.max_layers`` keeps the deepest N of them.
    """
    from dnn_modularity.pruning import removable_layers

    mode = str(pruning.get("mode", "single"))
    if mode not in SWEEP_MODES:
        raise ValueError(f"unknown pruning.mode {mode!r}; valid choices: {list(SWEEP_MODES)}")
    listed = pruning.get("layers")
    if listed is None:
        layers = removable_layers(net)
        if mode == "cumulative":
            layers = layers[::-1]  # paper 1 removes back to front
    else:
        layers = [str(x) for x in listed]
    limit = pruning.get("max_layers")
    if limit is not None:
        # the deepest ones: paper 1 removes back to front
        layers = layers[: int(limit)] if mode == "cumulative" else layers[-int(limit) :]
    off_curve = [name for name in layers if name not in curve.layers]
    if off_curve:
        raise ValueError(
            f"pruning.layers {off_curve} are not on the curve (block taps); curve layers: "
            f"{curve.layers}"
        )
    on_empty = str(pruning.get("on_empty_stage", "error"))
    decisions = [
        decide_for_model(
            net,
            "explicit",
            remove=layers[: j + 1] if mode == "cumulative" else [name],
            on_empty_stage=on_empty,
            **curve_kwargs,
        )
        for j, name in enumerate(layers)
    ]
    return decisions, layers


def _final_acc(row: Mapping[str, Any]) -> float:
    """The pruned network's reported accuracy: after fine-tuning, or before it without one."""
    after = row.get("acc_pruned_after_ft")
    return float(row["acc_pruned_before_ft"] if after is None else after)


def _sweep_row(
    decision: PruningDecision,
    name: str,
    row: Mapping[str, Any],
    measure: str,
    previous_acc: float,
) -> dict[str, Any]:
    """One point of Fig. 10(b): ΔM of the layer ``name`` against the accuracy drop.

    ``delta_acc_drop`` = Acc_parent − Acc_variant (paper 1: "the accuracy of the original model
    and pruned model"); ``delta_acc_step`` = Acc of the previous variant (the parent for the
    first) − Acc_variant, the drop the added layer alone causes in a cumulative sweep.
    """
    idx = decision.layers.index(name)
    final = _final_acc(row)
    return {
        "layer": name,
        "layer_index": idx + 1,
        "removed_layers": " ".join(decision.removed),
        "num_removed": len(decision.removed),
        "measure": measure,
        "M_prev": decision.values[idx - 1] if idx > 0 else None,
        "M_layer": decision.values[idx],
        "delta_m": decision.deltas[idx],
        "acc_parent": row["acc_parent"],
        "acc_pruned_before_ft": row["acc_pruned_before_ft"],
        "acc_pruned_after_ft": row["acc_pruned_after_ft"],
        "finetuned": row["acc_pruned_after_ft"] is not None,
        "delta_acc_drop": row["acc_parent"] - final,
        "delta_acc_step": previous_acc - final,
        "params_reduction": row["params_reduction"],
        "flops_reduction": row["flops_reduction"],
    }


def prune(cfg: DictConfig) -> dict[str, Any]:
    """Prune a trained classifier by its modularity curve, fine-tune, and tabulate.

    Args:
        cfg: composed from ``conf/prune.yaml`` (by ``@hydra.main`` or ``hydra.compose``).

    Returns:
        ``{"run_dir", "decision", "rows", "table_csv", "table_md", "curve", "sweep"}``; ``rows``
        are the table rows (one per pruned network).

    Raises:
        ValueError: missing ``ckpt_path``, data that does not fit the checkpoint, unknown rule or
            measure, bad layer names, a rule that would empty a stage (before any training).
        FileNotFoundError: missing checkpoint or curve record.
    """
    import lightning.pytorch as L

    from dnn_modularity.models.classifier import check_model_fits_data, load_classifier
    from dnn_modularity.pruning import RULES

    if not cfg.get("ckpt_path"):
        raise ValueError("prune needs ckpt_path=<train run>/checkpoints/<file>.ckpt")
    rule = str(cfg.pruning.rule)
    if rule not in (*RULES, SWEEP_RULE):
        raise ValueError(f"unknown pruning rule {rule!r}; valid rules: {[*RULES, SWEEP_RULE]}")
    measure = _check_measure(str(cfg.measure))
    configure_torch(cfg)
    # weights_only=True inside; the checkpoint's optimizer/scheduler entries stay plain data.
    parent = load_classifier(str(cfg.ckpt_path))
    datamodule = instantiate(cfg.data)
    datamodule.setup()
    check_model_fits_data(
        parent.net.arch_config(),
        datamodule,
        f"checkpoint {str(cfg.ckpt_path)!r}",
        parent.hparams.get("data"),
    )
    # Claimed after the checks above, so a refused config leaves no folder behind.
    run_dir = prepare_run_dir(cfg, hydra_config(), inputs=[cfg.ckpt_path, cfg.get("curve")])
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)

    # The curve (not needed by an explicit list, but recorded with it when available).
    curve: Curve | None = None
    if cfg.get("curve"):
        curve = read_curve(str(cfg.curve), measure)
    elif rule != "explicit" or bool(cfg.get("measure_for_explicit", False)):
        curve = measure_curve(parent.model, datamodule, cfg, run_dir / "curve")
    curve_kwargs: dict[str, Any] = {}
    if curve is not None:
        curve_kwargs = {
            "layers": curve.layers,
            "values": curve.values,
            "curve_kind": MEASURES[measure],
        }

    # Decisions are made (and refused) before any training.
    sweep_layers: list[str] = []
    if rule == SWEEP_RULE:
        if curve is None:
            raise ValueError("pruning=single_layer_sweep needs a curve (curve=<path> or measured)")
        decisions, sweep_layers = _sweep_decisions(cfg.pruning, parent.net, curve, curve_kwargs)
    else:
        decisions = [
            decide_for_model(parent.net, rule, **_rule_kwargs(cfg.pruning), **curve_kwargs)
        ]
    if is_rank_zero():
        write_json(
            run_dir / "decision.json",
            decisions[0].to_dict() if len(decisions) == 1 else [d.to_dict() for d in decisions],
        )

    loggers: list[Any] = []
    try:
        loggers = build_loggers(cfg.get("logger"), run_dir, default_run_name(cfg, run_dir))
        log_config(loggers, cfg)
        acc_parent = _test_acc(_eval_trainer(cfg, run_dir), parent, datamodule)
        acc_control: float | None = None
        if bool(cfg.get("finetune_control", False)) and bool(cfg.get("finetune", True)):
            # The unpruned parent fine-tuned with the same recipe: separates the effect of
            # removing layers from the effect of the extra training epochs.
            control = _make_module(cfg, parent.net, datamodule, parent)
            acc_control = _finetune(
                cfg, control, datamodule, run_dir / "control", [], "fine-tune of the parent"
            )["acc"]
            del control

        rows: list[dict[str, Any]] = []
        sweep_rows: list[dict[str, Any]] = []
        sweep = rule == SWEEP_RULE
        previous_acc = acc_parent
        for step, decision in enumerate(decisions):
            # Sweep variants fine-tune in variants/<layer>/ without the run's loggers (their step
            # counters would clash); their numbers go into the tables, which are logged.
            row = _prune_and_finetune(
                cfg,
                parent=parent,
                acc_parent=acc_parent,
                decision=decision,
                datamodule=datamodule,
                run_dir=run_dir / "variants" / sweep_layers[step] if sweep else run_dir,
                loggers=[] if sweep else loggers,
            )
            row["acc_parent_ft"] = acc_control
            if sweep:
                row["rule"] = SWEEP_RULE
                sweep_rows.append(
                    _sweep_row(decision, sweep_layers[step], row, measure, previous_acc)
                )
                previous_acc = _final_acc(row)
                if acc_control is not None:
                    sweep_rows[-1]["acc_parent_ft"] = acc_control
                    sweep_rows[-1]["delta_acc_drop_vs_control"] = acc_control - _final_acc(row)
            rows.append(row)

        result: dict[str, Any] = {
            "run_dir": str(run_dir),
            "decision": decisions[0].to_dict() if len(decisions) == 1 else None,
            "rows": rows,
            "curve": None
            if curve is None
            else {"source": curve.source, "measure": measure, "layers": curve.layers},
            "sweep": None,
        }
        if is_rank_zero():
            result["table_csv"] = str(
                write_csv_rows(
                    run_dir / "pruning_table.csv", rows, [*TABLE_COLUMNS, "finetune_seconds"]
                )
            )
            result["table_md"] = str(
                atomic_write_text(run_dir / "pruning_table.md", markdown_table(rows))
            )
            if sweep_rows:
                model_name = rows[0]["model"] if rows else ""
                result["sweep"] = delta_m_vs_delta_acc(
                    sweep_rows,
                    run_dir,
                    title=f"{model_name} on {getattr(datamodule, 'name', '')}: ΔM vs ΔAcc "
                    "(paper 1, Fig. 10b)",
                )
                result["sweep"]["rows"] = sweep_rows
            _log_results(loggers, rows, sweep_rows)
            write_json(run_dir / "results.json", result)
        return result
    finally:
        finish_wandb(loggers)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="prune")
def main(cfg: DictConfig) -> float | None:
    """Console entry point (``dnn-prune`` / ``python -m dnn_modularity.prune``).

    Returns the pruned network's test accuracy (after fine-tuning, or before it with
    ``finetune=false``) for Hydra sweepers, or None for a sweep.
    """
    result = prune(cfg)
    rows = result["rows"]
    return _final_acc(rows[0]) if len(rows) == 1 else None


if __name__ == "__main__":
    main()
