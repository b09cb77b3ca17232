"""Published reference curves shipped with the package (package data, no download).

``authors_resnet56_curves.json`` holds the two per-block Newman-modularity curves of a trained
ResNet-56 that paper 1's authors published as comments next to ``resnet56_modularity_c10`` and
``resnet56_modularity_c100`` in the model file of their public code (28 values: the stem's conv
output before BN, then the 27 residual blocks; the first test images, k = 3, cosine), with the
pruned models they derived from them:

* CIFAR-10, "threshold 0.03" -> blocks [2, 3, 6] (paper 1, Table 1). Paper 1's rule
  (:func:`dnn_modularity.pruning.delta_flags`, ΔM_i < 0.03) on this curve gives exactly that.
* CIFAR-100 -> blocks [1, 6, 9] ("to avoid an empty first stage, one block is kept"). The same
  rule at τ = 0.03 gives [1, 1, 6] on this curve (every block of stage 1 and all but the first of
  stage 2 grow by less than 0.03), so the published CIFAR-100 model is not what the rule gives;
  it is recorded here, not reproduced.

Uses: ``prune curve=authors:cifar10`` (the rule on the authors' curve), and a dashed "authors'
curve" reference line in the curve figures of ResNet-56 runs on CIFAR-10/100.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

__all__ = [
    "AUTHORS_CURVE_PREFIX",
    "AUTHORS_DATASETS",
    "AuthorsCurve",
    "authors_curve",
    "authors_curve_name",
    "matching_authors_curve",
]

#: ``curve=authors:<dataset>`` names a published curve instead of a record path.
AUTHORS_CURVE_PREFIX = "authors:"
#: Datasets with a published ResNet-56 curve.
AUTHORS_DATASETS: tuple[str, ...] = ("cifar10", "cifar100")
#: The model the published curves belong to.
AUTHORS_MODEL = "resnet56"
_FILE = "authors_resnet56_curves.json"


@dataclass(frozen=True)
class AuthorsCurve:
    """One published curve.

    Attributes:
        model: ``resnet56``.
        dataset: ``cifar10`` or ``cifar100``.
        layers: ``(28,)`` layer names (our block-tap names: ``stem``, ``layer1.0`` ...).
        values: ``(28,)`` Newman modularity per layer, front to back.
        pruned_blocks: blocks per stage of the pruned model the authors derived from it.
        note: the authors' remark next to it.
        source: where the numbers come from.
    """

    model: str
    dataset: str
    layers: tuple[str, ...]
    values: tuple[float, ...]
    pruned_blocks: tuple[int, ...]
    note: str
    source: str

    @property
    def label(self) -> str:
        """Legend entry of the reference line."""
        return f"authors' curve ({self.model}, {self.dataset})"


@lru_cache(maxsize=1)
def _load() -> dict[str, Any]:
    text = resources.files(__name__).joinpath(_FILE).read_text(encoding="utf-8")
    return json.loads(text)


def authors_curve(dataset: str) -> AuthorsCurve:
    """The authors' published ResNet-56 curve of ``dataset``.

    Args:
        dataset: ``cifar10`` or ``cifar100``.

    Raises:
        ValueError: another dataset (the message lists the valid ones).
    """
    if dataset not in AUTHORS_DATASETS:
        raise ValueError(
            f"no published curve for dataset {dataset!r}; valid choices: {list(AUTHORS_DATASETS)}"
        )
    data = _load()
    entry = data[dataset]
    return AuthorsCurve(
        model=AUTHORS_MODEL,
        dataset=dataset,
        layers=tuple(str(n) for n in data["layers"]),
        values=tuple(float(v) for v in entry["curve"]),
        pruned_blocks=tuple(int(b) for b in entry["pruned_blocks"]),
        note=str(entry.get("note", "")),
        source=str(data.get("source", "")),
    )


def authors_curve_name(spec: Any) -> str | None:
    """The dataset of a ``curve=authors:<dataset>`` value, or None for anything else (a path).

    Raises:
        ValueError: ``authors:`` with an unknown dataset.
    """
    text = str(spec)
    if not text.startswith(AUTHORS_CURVE_PREFIX):
        return None
    dataset = text[len(AUTHORS_CURVE_PREFIX) :]
    if dataset not in AUTHORS_DATASETS:
        valid = [AUTHORS_CURVE_PREFIX + d for d in AUTHORS_DATASETS]
        raise ValueError(f"unknown published curve {text!r}; valid choices: {valid}")
    return dataset


def matching_authors_curve(
    model: str | None, dataset: str | None, num_layers: int | None = None
) -> AuthorsCurve | None:
    """The published curve a run can be compared with, or None.

    A run matches when it is a ResNet-56 on CIFAR-10 or CIFAR-100 whose curve has the same
    number of layers (28: the stem plus 27 blocks, at the ``block`` or ``official`` taps).

    Args:
        model: the architecture name (``arch_config()["name"]``).
        dataset: the data module's name.
        num_layers: the run's number of layers (None: not checked).
    """
    if model != AUTHORS_MODEL or dataset not in AUTHORS_DATASETS:
        return None
    curve = authors_curve(str(dataset))
    if num_layers is not None and int(num_layers) != len(curve.values):
        return None
    return curve
