"""Model zoo: construction, forward passes, pruned variants, arch_config, removal API, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn
from torchvision.models import resnet as tv_resnet

from dnn_modularity.models import (
    Normalized,
    available_models,
    build_model,
    imagenet_resnet18,
    imagenet_resnet152,
    mobilenet_v2,
    resnet18,
    resnet56,
    resnet152,
    vgg11_bn,
    vgg19_bn,
)
from dnn_modularity.models.vgg import VGG_CFGS, remove_convs

CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "model"

CIFAR_MODELS = [n for n in available_models() if not n.startswith("imagenet_")]
HEAVY = {"resnet101", "resnet152"}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_lists_every_family() -> None:
    names = available_models()
    for expected in (
        "vgg11_bn",
        "vgg19_bn",
        "resnet18",
        "resnet152",
        "resnet20",
        "resnet56",
        "resnet110",
        "mobilenet_v2",
        "imagenet_resnet50",
        "imagenet_vgg16_bn",
    ):
        assert expected in names
    assert names == sorted(names)


@pytest.mark.parametrize("name", CIFAR_MODELS)
def test_cifar_model_forward_rgb32_and_gray_small(name: str) -> None:
    torch.manual_seed(0)
    model = build_model(name, num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    # Digits: 1 channel, 8x8 images; also 16x16 (VGG's five pools must not collapse to 0x0).
    gray = build_model(name, num_classes=10, in_channels=1).eval()
    with torch.no_grad():
        for size in (8, 16):
            out = gray(torch.rand(2, 1, size, size))
            assert out.shape == (2, 10)
            assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["imagenet_resnet18", "imagenet_vgg11_bn"])
def test_imagenet_model_forward_224(name: str) -> None:
    model = build_model(name, num_classes=50).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 224, 224))
    assert out.shape == (1, 50)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        n
        for n in available_models()
        if n.startswith("imagenet_") and n not in {"imagenet_resnet18", "imagenet_vgg11_bn"}
    ],
)
def test_imagenet_model_forward_224_heavy(name: str) -> None:
    model = build_model(name).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 224, 224)).shape == (1, 1000)


def test_imagenet_gray_input_and_torchvision_names() -> None:
    model = imagenet_resnet18(num_classes=5, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 1, 64, 64)).shape == (1, 5)
    keys = set(model.state_dict())
    # torchvision's names, so torchvision weights load unchanged.
    assert {"conv1.weight", "bn1.running_mean", "layer4.1.conv2.weight", "fc.weight"} <= keys


def test_imagenet_weights_are_validated_without_download() -> None:
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        build_model("imagenet_resnet18", weights="NOT_A_WEIGHT")
    # A valid name with 1 input channel is refused before anything is downloaded.
    with pytest.raises(ValueError, match="3 input channels"):
        build_model("imagenet_resnet18", weights="IMAGENET1K_V1", in_channels=1)
    with torch.device("meta"):
        assert build_model("imagenet_vgg16_bn").arch_config()["weights"] is None


@pytest.mark.parametrize("k", [0, 30, 26, 21, 16, 11, 5])
def test_imagenet_res152_variants_equal_torchvision(k: int) -> None:
    """Paper 1's ImageNet50 Res152_k is torchvision's ResNet(Bottleneck, [3, 8, 36 - k, 3])."""
    blocks = [3, 8, 36 - k, 3]
    with torch.device("meta"):
        model = imagenet_resnet152(num_classes=50, blocks=blocks)
        reference = tv_resnet.ResNet(tv_resnet.Bottleneck, blocks, num_classes=50)
    assert n_params(model) == n_params(reference)
    # the same module tree, so torchvision state_dicts of that depth load unchanged
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in reference.state_dict().items()
    }
    # stage-3 identity bottleneck (1x1 1024->256, 3x3 256->256, 1x1 256->1024, three BNs)
    block = 1024 * 256 + 256 * 256 * 9 + 256 * 1024 + 2 * (256 + 256 + 1024)
    assert n_params(model) == 58_246_258 - k * block
    names = [n for n, _ in model.tap_points("block")]
    assert len(names) == 51 - k and names[0] == "relu" and names[-1] == "layer4.2"
    assert f"layer3.{35 - k}" in names and f"layer3.{36 - k}" not in names
    assert model.arch_config()["blocks"] == blocks


def test_imagenet_resnet_removal_api_round_trip() -> None:
    with torch.device("meta"):
        model = imagenet_resnet18(num_classes=10)
        # BasicBlock: layer1.0 keeps the stem's 64 channels, so it is removable like the rest
        # of the identity blocks; the first block of stages 2-4 downsamples.
        removable = ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]
        assert model.removable_layers() == removable
        assert [[n for n, _ in st] for st in model.stage_blocks()][1] == ["layer2.0", "layer2.1"]
        cfg = model.without_layers(["layer2.1", "layer4.1"])
        assert cfg == {
            "name": "imagenet_resnet18",
            "num_classes": 10,
            "weights": None,
            "in_channels": 3,
            "blocks": [2, 1, 2, 1],
        }
        child = build_model(**cfg)
        mapping = model.layer_mapping(["layer1.0"])
    assert mapping["layer1.1"] == "layer1.0" and "layer1.0" not in mapping  # removed
    assert {mapping[k] for k in ("conv1", "bn1", "maxpool", "fc")} == {
        "conv1",
        "bn1",
        "maxpool",
        "fc",
    }
    assert [n for n, _ in child.tap_points("official")] == [
        "conv1",
        "layer1.0",
        "layer1.1",
        "layer2.0",
        "layer3.0",
        "layer3.1",
        "layer4.0",
    ]
    with pytest.raises(ValueError, match=r"layer2\.0.*cannot be removed.*removable layers"):
        model.without_layers(["layer2.0"])
    with pytest.raises(ValueError, match=r"unknown layers \['layer5\.0'\]"):
        model.layer_mapping(["layer5.0"])


def test_imagenet_resnet_blocks_are_validated_and_weights_need_the_default_depth() -> None:
    with pytest.raises(ValueError, match="4 entries"):
        imagenet_resnet152(blocks=[3, 8, 6])
    with pytest.raises(ValueError, match="positive integers"):
        imagenet_resnet152(blocks=[3, 8, 0, 3])
    # refused before anything is downloaded
    with pytest.raises(ValueError, match=r"default blocks \[3, 8, 36, 3\].*blocks=\[3, 8, 6, 3\]"):
        imagenet_resnet152(weights="DEFAULT", blocks=[3, 8, 6, 3])


# ----------------------------------------------------------------------------- pruned variants
# The official code's cvgg19_18 .. cvgg19_13 (paper 1 Table B4: VGG19_1 .. VGG19_6).
OFFICIAL_VGG19 = {
    1: [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        "M",
    ],
    2: [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        "M",
    ],
    3: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, "M"],
    4: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, "M", 512, "M"],
    5: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, "M", 512, "M"],
    6: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, "M", 512, "M"],
}
# One removed conv3-512 unit (512 -> 512): conv weight + bias, BN weight + bias.
UNIT_512 = 512 * 512 * 9 + 512 + 2 * 512


@pytest.mark.parametrize("k", range(1, 7))
def test_vgg19_variants_match_official_layouts(k: int) -> None:
    assert remove_convs(VGG_CFGS["vgg19_bn"], k) == OFFICIAL_VGG19[k]
    model = vgg19_bn(convs_removed=k)
    assert model.cfg == OFFICIAL_VGG19[k]
    assert len(model.tap_points("block")) == 16 - k
    # Every removed unit is a conv3-512 (stages 4 and 5 hold only 512-wide units).
    assert n_params(model) == n_params(vgg19_bn()) - k * UNIT_512


def test_vgg11_variants_remove_from_the_deep_end_keeping_one_per_stage() -> None:
    assert vgg11_bn(convs_removed=1).cfg == [
        64,
        "M",
        128,
        "M",
        256,
        256,
        "M",
        512,
        512,
        "M",
        512,
        "M",
    ]
    assert vgg11_bn(convs_removed=2).cfg == [64, "M", 128, "M", 256, 256, "M", 512, "M", 512, "M"]
    assert vgg11_bn(convs_removed=3).cfg == [64, "M", 128, "M", 256, "M", 512, "M", 512, "M"]
    full = n_params(vgg11_bn())
    assert n_params(vgg11_bn(convs_removed=2)) == full - 2 * UNIT_512
    unit_256 = 256 * 256 * 9 + 256 + 2 * 256
    assert n_params(vgg11_bn(convs_removed=3)) == full - 2 * UNIT_512 - unit_256
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        vgg11_bn(convs_removed=4)


@pytest.mark.parametrize("k", [30, 26, 21, 16, 11, 5])
def test_res152_variants_cut_stage3(k: int) -> None:
    model = resnet152(blocks=[3, 8, 36 - k, 3])
    assert [len(model.layer1), len(model.layer2), len(model.layer3), len(model.layer4)] == [
        3,
        8,
        36 - k,
        3,
    ]
    # An identity bottleneck of stage 3: 1x1 1024->256, 3x3 256->256, 1x1 256->1024, three BNs.
    block = 1024 * 256 + 256 * 256 * 9 + 256 * 1024 + 2 * (256 + 256 + 1024)
    assert n_params(model) == 58_156_618 - k * block
    assert len(model.tap_points("official")) == 51 - k


def test_resnet56_pruned_structure() -> None:
    model = resnet56(blocks=[2, 3, 6])
    names = [n for n, _ in model.tap_points("block")]
    assert names == ["stem", "layer1.0", "layer1.1"] + [f"layer2.{i}" for i in range(3)] + [
        f"layer3.{i}" for i in range(6)
    ]
    with torch.no_grad():
        assert model.eval()(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_yaml_configs_build_through_build_model() -> None:
    files = sorted(CONF_DIR.glob("*.yaml"))
    expected = set(available_models()) | {f"vgg19_bn_{k}" for k in range(1, 7)}
    expected |= {f"vgg11_bn_{k}" for k in range(1, 4)}
    expected |= {f"resnet152_{k}" for k in (30, 26, 21, 16, 11, 5)} | {"resnet56_pruned"}
    expected |= {f"imagenet_resnet152_{k}" for k in (30, 26, 21, 16, 11, 5)}
    assert {f.stem for f in files} == expected
    for f in files:
        cfg = OmegaConf.create(
            {"data": {"num_classes": 4, "in_channels": 1}, "model": OmegaConf.load(f)}
        )
        with torch.device("meta"):  # structure only: no memory, no init cost
            model = build_model(**cfg.model)
        arch = model.arch_config()
        assert arch["name"] == cfg.model.name
        assert arch["num_classes"] == 4
        assert arch["in_channels"] == 1
        if f.stem == "resnet152_30":
            assert arch["blocks"] == [3, 8, 6, 3]
        if f.stem.startswith("imagenet_resnet152_"):
            assert arch["blocks"] == [3, 8, 36 - int(f.stem.rsplit("_", 1)[1]), 3]
        if f.stem == "resnet56_pruned":
            assert arch["blocks"] == [2, 3, 6]
        if f.stem == "vgg19_bn_6":
            assert model.cfg == OFFICIAL_VGG19[6]


# ----------------------------------------------------------------------------- arch_config
@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("resnet20", {}),
        ("resnet56", {"blocks": [2, 3, 6], "num_classes": 100}),
        ("resnet18", {"in_channels": 1}),
        ("resnet50", {"blocks": [1, 1, 2, 1]}),
        ("vgg16_bn", {}),
        ("vgg19_bn", {"convs_removed": 3}),
        ("vgg11_bn", {"cfg": [32, "M", 64, 64, "M"]}),
        ("mobilenet_v2", {"width_mult": 0.5}),
        ("mobilenet_v2", {"blocks": [1, 1, 1, 1, 1, 1, 1]}),
        ("imagenet_resnet34", {"num_classes": 50}),
        ("imagenet_resnet50", {"num_classes": 50, "blocks": [1, 2, 3, 1]}),
        ("imagenet_resnet18", {"blocks": [1, 1, 1, 2], "in_channels": 1}),
        ("imagenet_vgg13_bn", {"in_channels": 1}),
    ],
)
def test_arch_config_round_trip(name: str, kwargs: dict) -> None:
    with torch.device("meta"):
        model = build_model(name, **kwargs)
        arch = model.arch_config()
        assert arch["name"] == name
        for key, value in kwargs.items():
            assert arch[key] == value
        rebuilt = build_model(**arch)
    assert rebuilt.arch_config() == arch
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }


def test_bad_names_and_arguments_list_valid_choices() -> None:
    with pytest.raises(KeyError) as err:
        build_model("resnet57")
    assert "resnet56" in str(err.value) and "'resnet57'" in str(err.value)
    with pytest.raises(ValueError, match="available models"):  # also a ValueError
        build_model("vgg19")
    with pytest.raises(ValueError, match=r"unknown arguments \['depth'\].*blocks"):
        build_model("resnet56", depth=20)
    with pytest.raises(ValueError, match="3 entries"):
        resnet56(blocks=[9, 9])
    with pytest.raises(ValueError, match="positive integers"):
        resnet56(blocks=[9, 0, 9])
    with pytest.raises(ValueError, match="'M'"):
        vgg11_bn(cfg=[64, "X", 128])
    with pytest.raises(ValueError, match="without convs"):
        vgg11_bn(cfg=[64, "M", "M", 128])
    with pytest.raises(ValueError, match="width_mult"):
        mobilenet_v2(width_mult=0)


# ----------------------------------------------------------------------------- layer removal
def test_removable_layers() -> None:
    r56 = resnet56()
    removable = r56.removable_layers()
    # Every block but the downsampling first blocks of stages 2 and 3 (layer1.0 is 16 -> 16).
    assert len(removable) == 25
    assert "layer1.0" in removable and "layer2.0" not in removable and "layer3.0" not in removable
    # Bottleneck stage 1 expands 64 -> 256, so layer1.0 is not removable there.
    assert "layer1.0" not in build_model("resnet50").removable_layers()
    vgg = vgg19_bn()
    # Units with in == out channels: 1 + 1 + 3 + 3 + 4 (stage 5's first unit is 512 -> 512).
    assert len(vgg.removable_layers()) == 12
    assert "stage5.0" in vgg.removable_layers() and "stage4.0" not in vgg.removable_layers()
    mb = mobilenet_v2()
    assert mb.removable_layers() == [
        "stage2.1", "stage3.1", "stage3.2", "stage4.1", "stage4.2", "stage4.3",
        "stage5.1", "stage5.2", "stage6.1", "stage6.2",
    ]  # fmt: skip


def test_without_layers_configs_and_errors() -> None:
    r56 = resnet56()
    assert r56.without_layers(["layer3.8"])["blocks"] == [9, 9, 8]
    assert r56.without_layers("layer1.3")["blocks"] == [8, 9, 9]
    kw = resnet56(blocks=[2, 3, 6]).without_layers([f"layer3.{i}" for i in range(1, 6)])
    assert kw == {"name": "resnet56", "num_classes": 10, "in_channels": 3, "blocks": [2, 3, 1]}
    with pytest.raises(ValueError, match=r"removable layers: .*layer1\.0"):
        r56.without_layers(["layer2.0"])
    with pytest.raises(ValueError, match=r"layer9\.9"):
        r56.without_layers(["layer9.9"])
    with pytest.raises(ValueError, match="without blocks"):
        resnet56(blocks=[2, 3, 6]).without_layers(["layer1.0", "layer1.1"])
    # VGG: explicit cfg of the smaller network; removing all of stage 5 is refused.
    kw = vgg19_bn().without_layers(["stage5.3", "stage5.2", "stage5.1"])
    assert kw["cfg"] == OFFICIAL_VGG19[3] and kw["convs_removed"] == 0
    with pytest.raises(ValueError, match="stage5"):
        vgg19_bn(convs_removed=3).without_layers(["stage5.0"])
    assert mobilenet_v2().without_layers(["stage4.3"])["blocks"] == [1, 2, 3, 3, 3, 3, 1]


def _prune_copy(model: nn.Module, removed: list[str]) -> nn.Module:
    """Build the smaller network and copy the kept weights through layer_mapping."""
    new = build_model(**model.without_layers(removed))
    mapping = model.layer_mapping(removed)
    new_state = {}
    for key, value in model.state_dict().items():
        prefixes = [p for p in mapping if key.startswith(p + ".")]
        if any(key.startswith(r + ".") for r in removed):
            assert not prefixes
            continue
        assert len(prefixes) == 1, key
        new_state[mapping[prefixes[0]] + key[len(prefixes[0]) :]] = value
    target = new.state_dict()
    assert set(new_state) == set(target)
    assert all(new_state[k].shape == target[k].shape for k in target)
    new.load_state_dict(new_state)
    return new


@pytest.mark.parametrize(
    "name,removed,zero_bn",
    [
        ("resnet56", ["layer1.0", "layer2.4", "layer3.8"], "bn2"),
        ("resnet18", ["layer1.0", "layer3.1"], "bn2"),
        ("mobilenet_v2", ["stage3.1", "stage6.2"], "project_bn"),
    ],
)
def test_layer_mapping_copies_weights_exactly(name: str, removed: list[str], zero_bn: str) -> None:
    """With the removed blocks' residual branches zeroed, the pruned copy computes the same."""
    torch.manual_seed(0)
    model = build_model(name).eval()
    modules = dict(model.named_modules())
    for r in removed:
        bn = getattr(modules[r], zero_bn)
        nn.init.zeros_(bn.weight)
        nn.init.zeros_(bn.bias)
    new = _prune_copy(model, removed).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(new(x), model(x))
    mapping = model.layer_mapping(removed)
    assert "fc" in mapping or "classifier" in mapping


def test_layer_mapping_vgg_renumbers_within_stage() -> None:
    model = vgg19_bn()
    mapping = model.layer_mapping(["stage4.1"])
    assert mapping["stage4.0"] == "stage4.0"
    assert mapping["stage4.2"] == "stage4.1" and mapping["stage4.3"] == "stage4.2"
    assert "stage4.1" not in mapping
    assert mapping["stage4.pool"] == "stage4.pool" and mapping["classifier"] == "classifier"
    new = _prune_copy(model, ["stage4.1"])
    assert new.cfg.count(512) == 7


# ----------------------------------------------------------------------------- Normalized
def test_normalized_wraps_and_delegates() -> None:
    torch.manual_seed(0)
    net = resnet18(num_classes=3).eval()
    mean, std = [0.4914, 0.4822, 0.4465], [0.247, 0.243, 0.261]
    model = Normalized(net, mean, std).eval()
    x = torch.rand(2, 3, 32, 32)
    expected = net((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)
    assert model.arch_config() == net.arch_config()
    assert [n for n, _ in model.tap_points("official")] == [
        n for n, _ in net.tap_points("official")
    ]
    assert all(k.startswith("net.") for k in model.state_dict())
    with pytest.raises(ValueError, match="std must be > 0"):
        Normalized(net, mean, [0.2, 0.0, 0.2])
    with pytest.raises(ValueError, match="network takes 3"):
        Normalized(net, [0.5, 0.5], [0.2, 0.2])
    gray = Normalized(resnet56(in_channels=1), 0.5, 0.25)
    assert gray(torch.rand(1, 1, 8, 8)).shape == (1, 10)


def test_vgg_last_map_is_1x1_at_32() -> None:
    """The classifier's 512 inputs are the 512 x 1 x 1 map at 32x32, as in the paper."""
    model = vgg11_bn().eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        for stage in model.stage_names:
            x = getattr(model, stage)(x)
    assert x.shape == (1, 512, 1, 1)
