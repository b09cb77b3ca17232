"""Building pruned networks: physical removal, weight inheritance, costs (paper 1, Table 1)."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from dnn_modularity.models import Normalized, build_model
from dnn_modularity.pruning import (
    build_pruned,
    decide_for_model,
    inherit_state_dict,
    model_stages,
    pruning_costs,
    removable_layers,
)
from dnn_modularity.runtime import CONF_DIR

# ResNet56 [9, 9, 9] -> [2, 3, 6]: remove blocks from the back of each stage.
R56_REMOVED = (
    [f"layer1.{i}" for i in range(2, 9)]
    + [f"layer2.{i}" for i in range(3, 9)]
    + [f"layer3.{i}" for i in range(6, 9)]
)


def _randomise_bn(net: nn.Module) -> None:
    """Give BN running stats non-default values so that copying them is observable."""
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def test_resnet56_to_2_3_6_matches_paper1_table1():
    parent = build_model("resnet56", num_classes=10)
    child = build_pruned(parent, R56_REMOVED)
    assert child.arch_config()["blocks"] == [2, 3, 6]
    assert len(list(child.modules())) < len(list(parent.modules()))  # physically smaller
    costs = pruning_costs(parent, child, (3, 32, 32))
    # paper 1, Table 1: 43.00 % fewer params, 60.30 % fewer FLOPs
    assert costs.params_reduction == pytest.approx(43.00, abs=1.0)
    assert costs.flops_reduction == pytest.approx(60.30, abs=1.0)
    assert costs.flops == 2 * costs.macs and costs.pruned_flops == 2 * costs.pruned_macs
    assert costs.params == sum(p.numel() for p in parent.parameters())
    assert costs.pruned_params == sum(p.numel() for p in child.parameters())


@pytest.mark.parametrize(
    ("name", "removed"),
    [("resnet20", ["layer1.1", "layer3.2"]), ("vgg11_bn", ["stage3.1", "stage5.1"])],
)
def test_kept_weights_equal_parent_by_mapping(name, removed, assert_inherited):
    torch.manual_seed(0)
    parent = build_model(name, num_classes=10, in_channels=1)
    _randomise_bn(parent)
    child = build_pruned(Normalized(parent, [0.5], [0.25]), removed)  # wrappers are unwrapped
    mapping = parent.layer_mapping(removed)
    psd, csd = parent.state_dict(), child.state_dict()
    copied = assert_inherited(psd, csd, mapping, removed)
    assert copied == len(csd)  # every entry of the pruned network came from the parent
    assert copied < len(psd)  # and the removed layers' tensors are gone
    x = torch.rand(2, 1, 8, 8)
    assert child.eval()(x).shape == (2, 10)


def test_kept_blocks_shift_down_within_their_stage():
    parent = build_model("resnet20", num_classes=10)
    mapping = parent.layer_mapping(["layer1.1", "layer3.2"])
    assert mapping["layer1.2"] == "layer1.1" and mapping["layer3.1"] == "layer3.1"
    assert build_pruned(parent, ["layer1.1", "layer3.2"]).arch_config()["blocks"] == [2, 3, 2]


def test_removing_nothing_reproduces_the_parent_exactly():
    parent = build_model("resnet20", num_classes=10, in_channels=1).eval()
    _randomise_bn(parent)
    child = build_pruned(parent, []).eval()
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(child(x), parent(x), rtol=0, atol=0)


def test_decision_for_model_and_bad_names():
    net = build_model("resnet20", num_classes=10)
    assert model_stages(net)["layer2"] == ["layer2.0", "layer2.1", "layer2.2"]
    assert "layer2.0" not in removable_layers(net) and "layer2.1" in removable_layers(net)
    with pytest.raises(ValueError, match=r"layer 'layer2\.0' is not removable.*layer2\.1"):
        decide_for_model(net, "explicit", remove=["layer2.0"])
    with pytest.raises(ValueError, match=r"layer 'layer4\.1' is unknown.*valid choices"):
        decide_for_model(net, "explicit", remove=["layer4.1"])
    with pytest.raises(ValueError):
        build_pruned(net, ["nope"])
    # torchvision's flat VGG has no stages: refused, with the reason
    with pytest.raises(ValueError, match=r"cannot be layer-pruned: torchvision's VGG.*flat"):
        removable_layers(Normalized(build_model("imagenet_vgg11_bn", num_classes=10), [0.5], [1]))


def test_mobilenet_v2_inverted_residuals_are_prunable():
    net = build_model("mobilenet_v2", num_classes=10)
    cands = removable_layers(net)
    assert cands[-2:] == ["stage6.1", "stage6.2"]
    child = build_pruned(net, cands[-2:])
    assert child.arch_config()["blocks"] == [1, 2, 3, 4, 3, 1, 1]
    assert child.eval()(torch.rand(1, 3, 32, 32)).shape == (1, 10)


def test_inheritance_refuses_mismatched_architectures():
    parent = build_model("resnet20", num_classes=10)
    wrong = build_model("resnet20", num_classes=5, blocks=[2, 3, 3])
    with pytest.raises(RuntimeError, match=r"fc\.weight"):
        inherit_state_dict(parent, wrong, ["layer1.1"])


@pytest.mark.parametrize(
    ("name", "removed", "convs_removed"),
    [
        ("vgg11_bn", ["stage5.1", "stage4.1", "stage3.1"], 3),  # paper 1's VGG11_3
        ("vgg19_bn", ["stage5.3", "stage5.2", "stage5.1", "stage4.3"], 4),  # VGG19_4
    ],
)
def test_vgg_back_to_front_removal_equals_the_papers_variants(name, removed, convs_removed):
    parent = build_model(name, num_classes=10)
    child = build_pruned(parent, removed)
    variant = build_model(name, num_classes=10, convs_removed=convs_removed)
    assert child.cfg == variant.cfg
    assert sum(p.numel() for p in child.parameters()) == sum(
        p.numel() for p in variant.parameters()
    )
    # the first unit of stage 5 (512 -> 512) keeps its shape and is a candidate; the first of
    # stage 4 (256 -> 512) does not
    assert "stage5.0" in removable_layers(parent) and "stage5.1" in removable_layers(parent)
    assert "stage4.0" not in removable_layers(parent)


def test_candidates_come_from_shapes_not_positions():
    net = build_model("resnet20", num_classes=10)  # stem width 16 == stage 1: layer1.0 keeps shape
    cands = removable_layers(net)
    assert "layer1.0" in cands  # same input and output shape: removable
    assert "layer2.0" not in cands and "layer3.0" not in cands  # stride 2 and wider: not
    with pytest.raises(ValueError, match=r"layer 'layer2\.0' is not removable: its input"):
        decide_for_model(net, "explicit", remove=["layer2.0"])
    d = decide_for_model(net, "explicit", remove=["layer1.0", "layer1.1"])
    assert build_pruned(net, d.removed).arch_config()["blocks"] == [1, 3, 3]
    # no stage is emptied: refused for an explicit list, resolved by the curve rules' configs
    with pytest.raises(ValueError, match=r"every block of stage 'layer1'.*layer1\.0"):
        decide_for_model(net, "explicit", remove=["layer1.0", "layer1.1", "layer1.2"])


# ----------------------------------------------------------------------- ImageNet ResNets
def test_imagenet_resnet_kept_weights_equal_parent_by_mapping(assert_inherited):
    """torchvision ResNet-50 (7x7 stem + max-pool) loses blocks, keeps every other weight."""
    torch.manual_seed(0)
    parent = build_model("imagenet_resnet50", num_classes=7)
    _randomise_bn(parent)
    assert removable_layers(parent) == [
        "layer1.1",
        "layer1.2",
        "layer2.1",
        "layer2.2",
        "layer2.3",
        "layer3.1",
        "layer3.2",
        "layer3.3",
        "layer3.4",
        "layer3.5",
        "layer4.1",
        "layer4.2",
    ]
    removed = ["layer3.3", "layer3.4", "layer3.5", "layer2.1"]
    child = build_pruned(Normalized(parent, [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]), removed)
    assert child.arch_config() == {
        "name": "imagenet_resnet50",
        "num_classes": 7,
        "weights": None,
        "in_channels": 3,
        "blocks": [3, 3, 3, 3],
    }
    mapping = parent.layer_mapping(removed)
    assert mapping["layer2.2"] == "layer2.1" and mapping["layer2.3"] == "layer2.2"
    assert mapping["maxpool"] == "maxpool" and mapping["fc"] == "fc"
    psd, csd = parent.state_dict(), child.state_dict()
    copied = assert_inherited(psd, csd, mapping, removed)
    assert copied == len(csd) < len(psd)
    assert [n for n, _ in child.tap_points("block")][:5] == [
        "relu",
        "layer1.0",
        "layer1.1",
        "layer1.2",
        "layer2.0",
    ]
    with torch.no_grad():
        assert child.eval()(torch.rand(1, 3, 64, 64)).shape == (1, 7)
    costs = pruning_costs(parent, child, (3, 224, 224))
    assert costs.pruned_params == sum(p.numel() for p in child.parameters())
    assert 0 < costs.params_reduction < 100 and 0 < costs.flops_reduction < 100


def test_imagenet_resnet152_stage3_cut_is_torchvisions_smaller_resnet():
    with torch.device("meta"):
        parent = build_model("imagenet_resnet152", num_classes=50)
        removed = [f"layer3.{i}" for i in range(6, 36)]  # paper 1's Res152_30
        cfg = parent.without_layers(removed)
        assert cfg["blocks"] == [3, 8, 6, 3]
        child = build_model(**cfg)
        reference = ResNet(Bottleneck, [3, 8, 6, 3], num_classes=50)
    assert {k: v.shape for k, v in child.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    mapping = parent.layer_mapping(removed)
    assert [mapping[f"layer3.{i}"] for i in range(6)] == [f"layer3.{i}" for i in range(6)]
    assert not any(f"layer3.{i}" in mapping for i in range(6, 36))
    # the first (downsampling) block of a stage cannot go, so no stage can be emptied
    with pytest.raises(ValueError, match=r"layer3\.0.*cannot be removed"):
        parent.without_layers([f"layer3.{i}" for i in range(36)])


@pytest.mark.parametrize("k", [30, 26, 21, 16, 11, 5])
def test_imagenet50_resnet152_presets_compose(k):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("prune", overrides=[f"experiment=prune_imagenet50_resnet152_{k}"])
    assert cfg.name == f"prune_imagenet50_resnet152_{k}"
    assert cfg.data._target_.endswith("ImageNet50DataModule")
    assert (cfg.data.num_classes, cfg.data.image_size) == (50, 224)
    assert cfg.pruning.rule == "explicit"
    assert list(cfg.pruning.remove) == [f"layer3.{i}" for i in range(36 - k, 36)]
    assert cfg.trainer.max_epochs == 150 and cfg.optimizer.lr == 0.01
    with torch.device("meta"):
        parent = build_model("imagenet_resnet152", num_classes=50)
        decision = decide_for_model(parent, "explicit", remove=list(cfg.pruning.remove))
        assert parent.without_layers(decision.removed)["blocks"] == [3, 8, 36 - k, 3]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        variant = compose("train", overrides=[f"model=imagenet_resnet152_{k}", "data=imagenet50"])
    assert list(variant.model.blocks) == [3, 8, 36 - k, 3]
