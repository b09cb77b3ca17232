"""Shared test set-up: offline W&B, headless matplotlib, 1 torch thread, GPU skips."""

from __future__ import annotations

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")

import pytest
import torch

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
