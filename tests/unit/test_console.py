"""Lightning's litlogger/litmodels tips and torch's LeafSpec deprecation are silenced, narrowly."""

from __future__ import annotations

import logging
import warnings

import pytest

from dnn_modularity.console import LIGHTNING_TIP_LOGGER, silence_known_noise

TIP = (
    "💡 Tip: For seamless cloud logging and experiment tracking, try installing "
    "[litlogger](https://pypi.org/project/litlogger/) to enable LitLogger, which logs metrics "
    "and artifacts automatically to the Lightning Experiments platform."
)
LEAFSPEC = (
    "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec) and "
    "treespec.is_leaf()` instead."
)


def test_lightning_trainer_tip_is_dropped_other_messages_pass(
    caplog: pytest.LogCaptureFixture, tmp_path
) -> None:
    import lightning.pytorch as L

    caplog.set_level(logging.INFO)
    silence_known_noise()
    silence_known_noise()  # idempotent
    assert len(logging.getLogger(LIGHTNING_TIP_LOGGER).filters) == 1
    L.Trainer(accelerator="cpu", logger=False, default_root_dir=str(tmp_path))
    messages = [r.getMessage() for r in caplog.records]
    assert not any("litlogger" in m or "litmodels" in m for m in messages)
    assert any(m.startswith("GPU available") for m in messages)  # real information stays
    logging.getLogger(LIGHTNING_TIP_LOGGER).info(TIP)
    assert not any("litlogger" in r.getMessage() for r in caplog.records)
    logging.getLogger(LIGHTNING_TIP_LOGGER).info("💡 Tip: something else")
    assert caplog.records[-1].getMessage() == "💡 Tip: something else"


def test_only_lightnings_leafspec_deprecation_is_ignored() -> None:
    from lightning.pytorch.utilities._pytree import _tree_flatten

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_known_noise()
        _tree_flatten([1, 2])  # Lightning's CombinedLoader path: LeafSpec() in its module
        warnings.warn(LEAFSPEC, FutureWarning, stacklevel=1)  # same text from another module
        warnings.warn("a real problem", UserWarning, stacklevel=1)
    texts = [(w.category, str(w.message)) for w in caught]
    assert (FutureWarning, LEAFSPEC) in texts  # from this module: still shown
    assert (UserWarning, "a real problem") in texts
    assert len([t for t in texts if t[1] == LEAFSPEC]) == 1  # Lightning's own is gone
