"""Paper presets carry the settings of the code that made each figure; the text one override away.

Paper 1's figures came from its official code: the first N test images, VGG conv outputs before BN
and ResNet conv1 before BN (probe=official), CW with 200 iterations, clean and adversarial curves
on the same N, Fig. 10b's variants removed cumulatively from the back. Paper 2 has no public code:
its presets follow its text. Every preset is tabulated in docs/reproducing.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dnn_modularity.runtime import CONF_DIR

GUIDE = CONF_DIR.parent / "docs" / "reproducing.md"
PRESETS = sorted(
    p.stem
    for p in (CONF_DIR / "experiment").glob("*.yaml")
    if p.stem.startswith(("fig", "p2_", "prune_"))
)


def _command(preset: str) -> str:
    """The command a preset belongs to (prune_* presets: prune; the others: analyze)."""
    return "prune" if preset.startswith("prune_") else "analyze"


@pytest.mark.parametrize("preset", [p for p in PRESETS if p.startswith("fig")])
def test_paper1_figures_use_the_official_probe_and_taps(compose_config, preset):
    cfg = compose_config(_command(preset), f"experiment={preset}")
    assert cfg.probe.taps == "official"
    if preset != "fig5_imagenet_curves":  # the official code shuffles ImageNet for its graphs
        assert cfg.probe.strategy == "sequential"
    # the paper's text is one override away
    override = "probe.taps=block" if preset == "fig5_imagenet_curves" else "probe=balanced"
    text = compose_config(_command(preset), f"experiment={preset}", override)
    assert (text.probe.taps, text.probe.strategy) == ("block", "balanced")
    assert text.probe.n == cfg.probe.n


def test_fig6a_is_the_official_attack_setup(compose_config):
    cfg = compose_config(_command("fig6a_adversarial"), "experiment=fig6a_adversarial")
    assert cfg.attacks.cw.params.max_iterations == 200
    assert cfg.analysis.pick == "first" and cfg.analysis.n_samples == 500
    assert cfg.analysis.pool_size >= cfg.analysis.n_samples


@pytest.mark.parametrize("preset", [p for p in PRESETS if p.startswith("prune_")])
def test_pruning_presets(compose_config, preset):
    cfg = compose_config(_command(preset), f"experiment={preset}")
    if preset == "prune_paper2_criterion1":  # paper 2: its text (no public code)
        assert (cfg.probe.taps, cfg.probe.strategy, cfg.probe.n) == ("block", "balanced", 4000)
        assert cfg.measure == "M" and cfg.graph.num_edges is None  # 40000 at N = 4000
        return
    assert cfg.probe.taps == "official"
    expected = "balanced" if "imagenet50" in preset else "sequential"
    assert cfg.probe.strategy == expected
    assert cfg.optimizer.lr == 0.01 and cfg.trainer.max_epochs == 150


def test_table1_and_fig10b_presets(compose_config):
    cfg = compose_config(_command("prune_resnet56_table1"), "experiment=prune_resnet56_table1")
    assert (cfg.pruning.rule, cfg.pruning.tau, cfg.curve) == ("delta", 0.03, "authors:cifar10")
    sweep = compose_config(_command("prune_vgg11_sweep"), "experiment=prune_vgg11_sweep")
    assert sweep.pruning.mode == "cumulative"
    assert list(sweep.pruning.layers) == ["stage5.1", "stage4.1", "stage3.1"]


@pytest.mark.parametrize("preset", ["p2_fig6_ring", "p2_fig10_m_vs_q"])
def test_paper2_ring_keeps_the_edge_density(compose_config, preset):
    cfg = compose_config(_command(preset), f"experiment={preset}")
    assert cfg.analysis.n == 4000 and cfg.graph.num_edges is None  # 40000 at N = 4000


def test_every_paper_preset_is_in_the_reproduction_guide():
    text = Path(GUIDE).read_text()
    missing = [p for p in PRESETS if p not in text]
    assert not missing, missing
