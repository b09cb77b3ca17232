"""Shared test set-up: offline W&B, headless matplotlib, 1 thread, GPU skips, digits fixtures."""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")

import pytest
import torch
from torch import nn

# Parallel test processes compete for 2 cores; one thread each avoids oversubscription
# (measured: 2-thread torch can be 10x slower than 1 thread when another process competes).
torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu`-marked tests when CUDA is not available."""
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def assert_inherited():
    """Checker: every parent tensor outside the removed layers equals the child's, by the mapping.

    ``check(parent_sd, child_sd, mapping, removed) -> int`` maps each parent key through the
    longest module-name prefix in ``mapping`` (old layer name -> new), asserts the tensors are
    equal, and returns how many were compared (callers assert that count).
    """

    def check(
        parent_sd: dict[str, torch.Tensor],
        child_sd: dict[str, torch.Tensor],
        mapping: dict[str, str],
        removed: list[str],
    ) -> int:
        gone = tuple(f"{r}." for r in removed)
        compared = 0
        for key, value in parent_sd.items():
            if key.startswith(gone):
                continue
            prefix = max((p for p in mapping if key.startswith(p + ".")), key=len)
            assert torch.equal(child_sd[mapping[prefix] + key[len(prefix) :]], value), key
            compared += 1
        return compared

    return check


class _RunsCode:
    """A pickle payload: unpickling it creates a marker file (any code could run instead)."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (self.marker,))


@pytest.fixture
def crafted_checkpoint(tmp_path):
    """``(path, marker)``: a checkpoint holding every key this package reads, plus a payload.

    Unpickling the file with ``weights_only=False`` creates ``marker``: a loader that runs it
    would run any code a shared checkpoint carries.
    """
    from dnn_modularity.models.classifier import ImageClassifier

    module = ImageClassifier(
        {"name": "resnet20", "num_classes": 10, "in_channels": 1}, mean=[0.5], std=[0.25]
    )
    path, marker = tmp_path / "crafted" / "last.ckpt", tmp_path / "code_ran"
    path.parent.mkdir()
    torch.save(
        {
            "epoch": 1,
            "global_step": 6,
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            "callbacks": {"payload": _RunsCode(marker)},
        },
        path,
    )
    return path, marker


@pytest.fixture(scope="session")
def compose_config():
    """``compose(config_name, *overrides) -> DictConfig`` from the package's config folder.

    Each override is a ``key=value`` string or a list of them; Hydra's global state is set up
    and torn down around each call, as the commands' own ``hydra.compose`` would.
    """
    from hydra import compose, initialize_config_dir

    from dnn_modularity import config_dir

    def compose_config_(config_name: str, *overrides: str | list[str]):
        flat = [o for item in overrides for o in ([item] if isinstance(item, str) else item)]
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose(config_name, overrides=flat)

    return compose_config_


@pytest.fixture(scope="module")
def digits() -> Any:
    """The digits data module, set up (default batch size); one per test module."""
    # Imported here, not at the top: the package pulls in Lightning, which turns off its log
    # records' propagation when imported before pytest's log capture is in place.
    from dnn_modularity.data import DigitsDataModule

    dm = DigitsDataModule()
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def digits_resnet20(digits: Any) -> nn.Module:
    """ResNet-20 (1 channel) trained 4 epochs with Adam on the digits train split (~2 s), eval."""
    from dnn_modularity.models import Normalized, build_model  # why local: see `digits`

    items = [digits.train_set[i] for i in range(len(digits.train_set))]
    x = torch.stack([item[0] for item in items])
    y = torch.tensor([int(item[1]) for item in items])
    torch.manual_seed(0)
    model = Normalized(
        build_model("resnet20", num_classes=10, in_channels=1), digits.mean, digits.std
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(4):
        model.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()
