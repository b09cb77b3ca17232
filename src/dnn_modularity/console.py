"""Keep third-party advertisements and known-harmless deprecations off the console.

Every Lightning run printed two lines a user can do nothing about, which teaches users to skip
the console (and so to miss real warnings). Each is silenced at its source, narrowly:

* Lightning's **LitLogger / litmodels tips** (``💡 Tip: ... try installing [litlogger] ...``) are
  INFO records of the logger ``lightning.pytorch.utilities.rank_zero``, emitted by
  ``Trainer.__init__`` whenever no ``LitLogger`` is configured; Lightning offers no switch for
  them. A :class:`logging.Filter` on that one logger drops records that start with ``💡 Tip:``
  and name ``litlogger`` or ``litmodels``; every other Lightning message still passes.
* torch's **``LeafSpec`` deprecation** (``FutureWarning: `isinstance(treespec, LeafSpec)` is
  deprecated``) is raised by Lightning's own ``lightning/pytorch/utilities/_pytree.py``, which
  constructs ``torch.utils._pytree.LeafSpec`` for every ``CombinedLoader`` (every fit, validate
  and test). The call is inside Lightning and cannot be avoided from here, so one
  ``warnings.filterwarnings`` entry ignores exactly that message, category and module; the same
  deprecation raised from any other module, and every other warning, stays visible.

:func:`silence_known_noise` is idempotent; :func:`dnn_modularity.runtime.build_trainer` calls it
before it creates a Trainer.
"""

from __future__ import annotations

import logging
import warnings

__all__ = ["LIGHTNING_TIP_LOGGER", "PYTREE_WARNING", "silence_known_noise"]

#: The logger Lightning's ``rank_zero_info`` writes to (and so its tips).
LIGHTNING_TIP_LOGGER = "lightning.pytorch.utilities.rank_zero"

#: ``(message regex, category, module regex)`` of torch's LeafSpec deprecation as Lightning
#: triggers it (the warning is attributed to Lightning's module by its stacklevel).
PYTREE_WARNING = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    FutureWarning,
    r"lightning\.pytorch\.utilities\._pytree",
)


class _AdvertisementFilter(logging.Filter):
    """Drop Lightning's "install litlogger / litmodels" tips, nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        is_tip = message.startswith("💡 Tip:")
        return not (is_tip and ("litlogger" in message or "litmodels" in message))


_FILTER = _AdvertisementFilter()


def silence_known_noise() -> None:
    """Install the two narrow filters described in the module docstring (idempotent)."""
    logger = logging.getLogger(LIGHTNING_TIP_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    message, category, module = PYTREE_WARNING
    # filterwarnings replaces an identical entry instead of stacking a copy.
    warnings.filterwarnings("ignore", message=message, category=category, module=module)
