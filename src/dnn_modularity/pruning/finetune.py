"""One pruned network end to end: build, evaluate, fine-tune with `train`'s recipe, re-evaluate.

The fine-tuning is `runtime.fit_and_test` with the `trainer` / `callbacks` / `optimizer` /
`scheduler` groups, exactly as `train` fits; a pruned network starts from its parent's weights
and input normalisation.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from omegaconf import DictConfig
from torch import nn

from dnn_modularity.callbacks.progress import EpochProgress
from dnn_modularity.models.unwrap import bare_model
from dnn_modularity.pruning.costs import pruning_costs
from dnn_modularity.pruning.plan import SWEEP_RULE
from dnn_modularity.pruning.rules import PruningDecision
from dnn_modularity.pruning.surgery import build_pruned
from dnn_modularity.pruning.table import final_acc, sweep_row, table_row
from dnn_modularity.records import write_csv_rows, write_json
from dnn_modularity.runtime import (
    build_callbacks,
    build_classifier,
    build_trainer,
    fit_and_test,
    is_rank_zero,
    missing_outputs,
    require_outputs,
)

__all__ = [
    "classifier_like",
    "eval_trainer",
    "finetune",
    "prune_and_finetune",
    "prune_variants",
    "test_accuracy",
]


def eval_trainer(cfg: DictConfig, run_dir: Path) -> Any:
    """A trainer of ``cfg.trainer`` for evaluation only (no loggers, callbacks or checkpoints)."""
    return build_trainer(cfg.trainer, run_dir, enable_checkpointing=False)


def test_accuracy(
    trainer: Any, module: Any, datamodule: Any, ckpt_path: str | None = None
) -> float:
    """Test accuracy in % (the classifier logs ``test/acc``)."""
    results = trainer.test(
        module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False, weights_only=True
    )
    return 100.0 * float(results[0]["test/acc"]) if results else math.nan


def classifier_like(cfg: DictConfig, net: nn.Module, datamodule: Any, parent: Any) -> Any:
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


def finetune(
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
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    callbacks = build_callbacks(cfg.get("callbacks"), run_dir)
    callbacks.append(EpochProgress(what))  # epochs done and an ETA in the log, not only on a TTY
    trainer = build_trainer(cfg.trainer, run_dir, callbacks=callbacks, loggers=loggers)
    # The final weights, whatever the checkpoint callbacks keep (callbacks=none included).
    final = run_dir / "pruned_final.ckpt"
    fitted = fit_and_test(
        trainer,
        module,
        datamodule,
        run_dir,
        test_ckpt=str(cfg.get("test_ckpt", "last")),
        final_ckpt=final,
    )
    tested = fitted.tested_ckpt or str(final)
    acc = 100.0 * fitted.test["test/acc"] if "test/acc" in fitted.test else math.nan
    seconds = fitted.seconds
    return {
        "acc": acc,
        "epochs": int(trainer.current_epoch),
        "seconds": seconds,
        "checkpoint": tested,
    }


def prune_and_finetune(
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
    module = classifier_like(cfg, child, datamodule, parent)

    evaluator = eval_trainer(cfg, run_dir)
    acc_before = test_accuracy(evaluator, module, datamodule)
    init_ckpt = run_dir / "pruned_init.ckpt"
    evaluator.save_checkpoint(str(init_ckpt), weights_only=False)
    if is_rank_zero():
        require_outputs(missing_outputs({"pruned network checkpoint": init_ckpt}), run_dir)

    if bool(cfg.get("finetune", True)):
        removed = ", ".join(decision.removed)
        what = f"fine-tune of the pruned network (without {removed})"
        ft = finetune(cfg, module, datamodule, run_dir, loggers, what)
    else:
        # No fine-tuning: the "after FT" cells stay empty rather than repeat the "before" ones.
        ft = {"acc": None, "epochs": 0, "seconds": 0.0, "checkpoint": str(init_ckpt)}

    return table_row(
        model=parent.net.arch_config().get("name"),
        data=getattr(datamodule, "name", ""),
        decision=decision,
        measure=str(cfg.measure),
        acc_parent=acc_parent,
        acc_before=acc_before,
        finetuned=ft,
        costs=costs,
        arch=bare_model(child).arch_config(),
    )


def prune_variants(
    cfg: DictConfig,
    *,
    parent: Any,
    decisions: list[PruningDecision],
    sweep_layers: list[str],
    datamodule: Any,
    run_dir: Path,
    loggers: list[Any],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Evaluate the parent, then prune and fine-tune every decision; the table and sweep rows.

    ``finetune_control=true`` first fine-tunes the unpruned parent with the same recipe (in
    ``control/``): it separates the effect of removing layers from that of the extra epochs.
    Sweep variants (``sweep_layers`` given) fine-tune in ``variants/<layer>/`` without the run's
    loggers (their step counters would clash); their numbers go into the tables.

    Args:
        cfg: The composed ``prune`` config.
        parent: The trained ``ImageClassifier``.
        decisions: One decision per pruned network (see `plan.plan_decisions`).
        sweep_layers: The layer each sweep variant adds (empty: not a sweep).
        datamodule: The data (already set up).
        run_dir: The run folder.
        loggers: The run's Lightning loggers.

    Returns:
        ``(rows, sweep_rows)``: one table row per network, and paper 1 Fig. 10(b)'s points.
    """
    acc_parent = test_accuracy(eval_trainer(cfg, run_dir), parent, datamodule)
    acc_control: float | None = None
    if bool(cfg.get("finetune_control", False)) and bool(cfg.get("finetune", True)):
        control = classifier_like(cfg, parent.net, datamodule, parent)
        acc_control = finetune(
            cfg, control, datamodule, run_dir / "control", [], "fine-tune of the parent"
        )["acc"]
        del control
    rows: list[dict[str, Any]] = []
    sweep_rows: list[dict[str, Any]] = []
    previous_acc = acc_parent
    for step, decision in enumerate(decisions):
        row = prune_and_finetune(
            cfg,
            parent=parent,
            acc_parent=acc_parent,
            decision=decision,
            datamodule=datamodule,
            run_dir=run_dir / "variants" / sweep_layers[step] if sweep_layers else run_dir,
            loggers=[] if sweep_layers else loggers,
        )
        row["acc_parent_ft"] = acc_control
        if sweep_layers:
            row["rule"] = SWEEP_RULE
            point = sweep_row(decision, sweep_layers[step], row, str(cfg.measure), previous_acc)
            previous_acc = final_acc(row)
            if acc_control is not None:
                point["acc_parent_ft"] = acc_control
                point["delta_acc_drop_vs_control"] = acc_control - final_acc(row)
            sweep_rows.append(point)
        rows.append(row)
    return rows, sweep_rows
