"""``python -m dnn_modularity.prune ckpt_path=... pruning=<rule>`` (console script ``dnn-prune``).

Modularity-guided layer pruning as one command (paper 1, Sec. 5.2, Figs. 9-10, Table 1; paper 2,
Sec. 4.4, Criterion I, Table 1):

1. load the trained classifier (``ckpt_path``);
2. its per-layer curve: read from a record (``curve=<path>``: ``analyze``'s ``curve.csv`` /
   ``curve_summary.csv`` / ``ring.csv`` or ``train``'s ``modularity.csv``), or measured here on
   ``probe.repeats`` probe sets (``measure=modularity``: paper 1's Newman Q of the k-NN graph via
   :func:`dnn_modularity.pruning.curves.measure_curve`; ``measure=M``: paper 2's
   M = r·AQ·(1−EQ) of the top-|E| graph via the engine);
3. the rule (``conf/pruning``: ``delta``, ``criterion1``, ``explicit``) -> a
   :class:`~dnn_modularity.pruning.rules.PruningDecision` (``decision.json``, ``decision.csv``);
4. the physically smaller network with the kept layers' weights
   (:func:`~dnn_modularity.pruning.surgery.build_pruned`), evaluated before fine-tuning
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

from typing import Any

import hydra
import lightning.pytorch as L
from omegaconf import DictConfig

from dnn_modularity.loggers import (
    build_loggers,
    default_run_name,
    finish_wandb,
    log_artifacts,
    log_config,
)
from dnn_modularity.models.classifier import check_model_fits_data, load_classifier
from dnn_modularity.pruning.curves import measure_curve, read_curve
from dnn_modularity.pruning.finetune import prune_variants
from dnn_modularity.pruning.plan import SWEEP_RULE, plan_decisions
from dnn_modularity.pruning.rules import RULES
from dnn_modularity.pruning.table import (
    TABLE_COLUMNS,
    delta_m_vs_delta_acc,
    final_acc,
    markdown_table,
    summary_metrics,
)
from dnn_modularity.records import (
    MEASURES,
    Curve,
    atomic_write_text,
    check_measure,
    write_csv_rows,
    write_json,
)
from dnn_modularity.runtime import (
    CONF_DIR,
    configure_torch,
    hydra_config,
    instantiate,
    is_rank_zero,
    prepare_run_dir,
)

__all__ = ["CONF_DIR", "main", "prune"]


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
    if not cfg.get("ckpt_path"):
        raise ValueError("prune needs ckpt_path=<train run>/checkpoints/<file>.ckpt")
    rule = str(cfg.pruning.rule)
    if rule not in (*RULES, SWEEP_RULE):
        raise ValueError(f"unknown pruning rule {rule!r}; valid rules: {[*RULES, SWEEP_RULE]}")
    measure = check_measure(str(cfg.measure))
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
    decisions, sweep_layers = plan_decisions(cfg.pruning, parent.net, curve, curve_kwargs)
    if is_rank_zero():
        write_json(
            run_dir / "decision.json",
            decisions[0].to_dict() if len(decisions) == 1 else [d.to_dict() for d in decisions],
        )

    loggers: list[Any] = []
    try:
        loggers = build_loggers(cfg.get("logger"), run_dir, default_run_name(cfg, run_dir))
        log_config(loggers, cfg)
        rows, sweep_rows = prune_variants(
            cfg,
            parent=parent,
            decisions=decisions,
            sweep_layers=sweep_layers,
            datamodule=datamodule,
            run_dir=run_dir,
            loggers=loggers,
        )
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
            table = write_csv_rows(
                run_dir / "pruning_table.csv", rows, [*TABLE_COLUMNS, "finetune_seconds"]
            )
            result["table_csv"] = str(table)
            markdown = atomic_write_text(run_dir / "pruning_table.md", markdown_table(rows))
            result["table_md"] = str(markdown)
            if sweep_rows:
                model_name = rows[0]["model"] if rows else ""
                result["sweep"] = delta_m_vs_delta_acc(
                    sweep_rows,
                    run_dir,
                    title=f"{model_name} on {getattr(datamodule, 'name', '')}: ΔM vs ΔAcc "
                    "(paper 1, Fig. 10b)",
                )
                result["sweep"]["rows"] = sweep_rows
            log_artifacts(
                loggers,
                "pruning",
                metrics=summary_metrics(rows),
                tables={"table": rows, "delta_m_vs_delta_acc": sweep_rows},
                columns={"table": TABLE_COLUMNS},
                step=None,
                close=False,
            )
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
    return final_acc(rows[0]) if len(rows) == 1 else None


if __name__ == "__main__":
    main()
