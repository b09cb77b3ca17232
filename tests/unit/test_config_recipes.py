"""Training recipes follow the dataset; every documented command line composes.

`conf/train.yaml` chooses `recipe: ${data}`: naming a model and a dataset gives the papers' recipe
(SGD lr 0.01, momentum 0.9, wd 5e-3, batch 256, 150 epochs, LR x 0.1 at 50/100), never the demo's
settings; the no-argument run stays the demo.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from dnn_modularity.runtime import CONF_DIR

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "docs" / "reproducing.md"]
COMMANDS = ("train", "analyze", "prune", "report")


def _compose(config: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config, overrides=overrides)


def _assert_paper_recipe(cfg: DictConfig) -> None:
    sched = OmegaConf.to_container(cfg.scheduler, resolve=True)
    assert cfg.recipe.name == "paper"
    assert cfg.optimizer._target_ == "torch.optim.SGD"
    assert (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.weight_decay) == (
        0.01,
        0.9,
        5.0e-3,
    )
    assert not cfg.optimizer.nesterov
    assert sched["_target_"].endswith("MultiStepLR") and sched["milestones"] == [50, 100]
    assert sched["gamma"] == 0.1
    assert cfg.data.batch_size == 256 and cfg.trainer.max_epochs == 150
    # nothing of the demo leaks in
    assert cfg.num_threads is None
    assert "demo" not in str(cfg.name) and not any("demo" in str(t) for t in cfg.tags)


def _doc_command_lines() -> list[tuple[str, str, list[str]]]:
    """(doc, command, overrides) of each `python -m dnn_modularity.<cmd>` line in bash blocks."""
    found = []
    for doc in DOCS:
        if not doc.exists():
            continue
        blocks = re.findall(r"```bash\n(.*?)```", doc.read_text(), flags=re.S)
        for block in blocks:
            for line in block.replace("\\\n", " ").splitlines():
                match = re.search(r"python -m dnn_modularity\.(\w+)(.*)", line)
                if not match or match.group(1) not in COMMANDS:
                    continue
                args = match.group(2).split(" #")[0]
                args = args.split("&&")[0]
                found.append((doc.name, match.group(1), _overrides(shlex.split(args))))
    return found


def _overrides(tokens: list[str]) -> list[str]:
    """Placeholders (`<run>`, `...`) become dummy values; a sweep keeps its first value."""
    out = []
    sweep = any(t in ("-m", "--multirun") for t in tokens)
    for token in tokens:
        if token in ("-m", "--multirun") or "=" not in token:
            continue
        key, value = token.split("=", 1)
        value = re.sub(r"<[^>]+>", "x", value).replace("...", "x.ckpt")
        if sweep and "," in value and not value.startswith("["):
            value = value.split(",")[0]
        out.append(f"{key}={value}")
    return out


DOC_LINES = _doc_command_lines()


def test_the_docs_have_command_lines():
    commands = {cmd for _, cmd, _ in DOC_LINES}
    assert {"train", "analyze", "prune", "report"} <= commands
    assert any(cmd == "train" and not ov for _, cmd, ov in DOC_LINES)  # the demo


@pytest.mark.parametrize(
    ("doc", "command", "overrides"),
    DOC_LINES,
    ids=[f"{d}:{c}:{' '.join(o)[:60]}" for d, c, o in DOC_LINES],
)
def test_every_documented_command_line_composes(doc, command, overrides):
    cfg = _compose(command, overrides)
    if command != "train":
        return
    keys = {o.split("=", 1)[0] for o in overrides}
    if (
        {"model", "data"} <= keys
        and "experiment" not in keys
        and cfg.data.get("_target_", "") != ("dnn_modularity.data.DigitsDataModule")
    ):
        _assert_paper_recipe(cfg)
    if not overrides:
        assert cfg.recipe.name == "demo" and cfg.data._target_.endswith("DigitsDataModule")


def test_model_and_dataset_give_the_papers_recipe():
    cfg = _compose("train", ["model=vgg16_bn", "data=cifar10", "trainer=ddp", "trainer.devices=4"])
    _assert_paper_recipe(cfg)
    assert cfg.name == "cifar10_vgg16_bn"
    assert list(cfg.tags) == ["paper-recipe", "cifar10", "vgg16_bn"]
    cfg = _compose("train", ["model=resnet18", "data=cifar100"])
    _assert_paper_recipe(cfg)
    assert cfg.probe.n == 1000


def test_the_no_argument_run_is_the_demo():
    cfg = _compose("train", [])
    assert cfg.recipe.name == "demo" and cfg.recipe.data == "cluttered_digits"
    assert cfg.model.name == "resnet20" and cfg.trainer.max_epochs == 15
    assert cfg.optimizer.lr == 0.1 and cfg.num_threads is None
    assert OmegaConf.to_container(cfg.scheduler, resolve=True)["milestones"] == [8, 12]
    assert cfg.name == "cluttered_digits_resnet20"
    # plain digits keeps the shorter demo recipe
    cfg = _compose("train", ["data=digits"])
    assert cfg.recipe.data == "digits" and cfg.optimizer.lr == 0.02 and cfg.num_threads == 1
    assert cfg.trainer.max_epochs == 20


def test_every_dataset_has_a_recipe():
    """A new data option needs its conf/recipe/<data>.yaml (one file including demo or paper)."""
    for path in sorted((CONF_DIR / "data").glob("*.yaml")):
        cfg = _compose("train", [f"data={path.stem}"])
        assert cfg.recipe.name in ("demo", "paper") and cfg.recipe.data == path.stem, path.stem


def test_presets_win_over_the_recipe_and_overrides_win_over_both():
    cfg = _compose("train", ["experiment=train_cifar10_dynamics_resnet18"])
    assert cfg.trainer.max_epochs == 30 and cfg.name == "cifar10_dynamics_resnet18"
    cfg = _compose("train", ["data=cifar10", "scheduler=cosine", "optimizer=adamw"])
    assert cfg.scheduler._target_.endswith("CosineAnnealingLR")
    assert "milestones" not in cfg.scheduler
    assert cfg.optimizer._target_ == "torch.optim.AdamW" and "momentum" not in cfg.optimizer
    cfg = _compose("train", ["data=digits", "trainer.max_epochs=3", "optimizer.lr=0.1"])
    assert cfg.trainer.max_epochs == 3 and cfg.optimizer.lr == 0.1
