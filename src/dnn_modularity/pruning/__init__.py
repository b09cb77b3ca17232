"""Modularity-guided layer pruning: curve -> layers to remove -> smaller network -> table.

- :mod:`~dnn_modularity.pruning.rules`: the rules (``delta``, ``criterion1``, ``explicit``) on a
  per-layer curve, the candidates and stages of a model, :class:`PruningDecision`;
- :mod:`~dnn_modularity.pruning.curves`: the curve a rule reads (a record or measured);
- :mod:`~dnn_modularity.pruning.plan`: which networks a run builds (one decision or a sweep);
- :mod:`~dnn_modularity.pruning.surgery`: the physically smaller network with inherited weights;
- :mod:`~dnn_modularity.pruning.costs`: params / MACs / FLOPs and their reductions;
- :mod:`~dnn_modularity.pruning.finetune`: build, evaluate, fine-tune, re-evaluate one network;
- :mod:`~dnn_modularity.pruning.table`: the papers' table and the Fig. 10(b) records.

The command is ``python -m dnn_modularity.prune``.
"""

from dnn_modularity.models.unwrap import bare_model
from dnn_modularity.pruning.costs import Costs, PruningCosts, count_costs, pruning_costs
from dnn_modularity.pruning.rules import (
    CURVE_KINDS,
    DEFAULT_TAU,
    DEFAULT_TOLERANCE,
    ON_EMPTY_STAGE,
    RULES,
    PruningDecision,
    criterion1_flags,
    criterion1_threshold,
    curve_deltas,
    curve_stats,
    decide,
    decide_for_model,
    delta_flags,
    model_stages,
    non_candidate_reasons,
    removable_layers,
)
from dnn_modularity.pruning.surgery import build_pruned, inherit_state_dict

__all__ = [
    "CURVE_KINDS",
    "DEFAULT_TAU",
    "DEFAULT_TOLERANCE",
    "ON_EMPTY_STAGE",
    "RULES",
    "Costs",
    "PruningCosts",
    "PruningDecision",
    "bare_model",
    "build_pruned",
    "count_costs",
    "criterion1_flags",
    "criterion1_threshold",
    "curve_deltas",
    "curve_stats",
    "decide",
    "decide_for_model",
    "delta_flags",
    "inherit_state_dict",
    "model_stages",
    "non_candidate_reasons",
    "pruning_costs",
    "removable_layers",
]
