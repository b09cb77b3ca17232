"""Models this package did not define: torchvision and timm models by name, plain nn.Modules.

Nothing is downloaded: torchvision ``weights=None``, timm ``pretrained=False``.
"""

from __future__ import annotations

import copy
import importlib.util
import pickle
import warnings

import pytest
import torch
import torchvision
from omegaconf import OmegaConf
from torch import nn

from dnn_modularity.analysis.measure import random_init_like
from dnn_modularity.models import (
    ExternalModel,
    Normalized,
    UnknownModelError,
    build_model,
    check_model_name,
    default_block_taps,
)
from dnn_modularity.models.classifier import ImageClassifier
from dnn_modularity.models.unwrap import bare_model
from dnn_modularity.taps import LayerTaps, feature_dims, iter_layer_features, resolve_taps
from dnn_modularity.train import check_config

# Default block taps of torchvision models: (count, first tap, last tap).
TORCHVISION_TAPS = {
    "resnet18": (8, "layer1.0", "layer4.1"),
    "resnext50_32x4d": (16, "layer1.0", "layer4.2"),
    "convnext_tiny": (18, "features.1.0", "features.7.2"),
    "vit_b_16": (12, "encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_11"),
    "swin_t": (12, "features.1.0", "features.7.1"),
    "efficientnet_b0": (16, "features.1.0", "features.7.0"),
    "mobilenet_v3_small": (11, "features.1", "features.11"),
    "densenet121": (7, "features.denseblock1", "features.denseblock4"),
    "squeezenet1_1": (8, "features.3", "features.12"),
    "googlenet": (9, "inception3a", "inception5b"),  # aux heads excluded
    "inception_v3": (11, "Mixed_5b", "Mixed_7c"),
    "shufflenet_v2_x0_5": (16, "stage2.0", "stage4.3"),
    "vgg11": (10, "features.1", "classifier.4"),  # no blocks: the activations
    "alexnet": (7, "features.1", "classifier.5"),
}


def _quiet_build(name: str, **kwargs) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # googlenet/inception init notices
        return build_model(name, **kwargs)


@pytest.mark.parametrize("name", sorted(TORCHVISION_TAPS))
def test_torchvision_models_by_name_get_block_taps(name: str) -> None:
    count, first, last = TORCHVISION_TAPS[name]
    with torch.device("meta"):
        model = _quiet_build(f"torchvision:{name}", num_classes=7)
    assert isinstance(model, ExternalModel)
    points = resolve_taps(model, "block")
    assert len(points) == count and points[0].name == first and points[-1].name == last
    modules = dict(model.named_modules())
    assert all(modules[p.name] is p.module for p in points)
    assert all("Aux" not in type(p.module).__name__ for p in points)
    assert model.arch_config() == {
        "name": f"torchvision:{name}",
        "num_classes": 7,
        "in_channels": 3,
        "weights": None,
    }
    with pytest.raises(ValueError, match="no 'official' taps"):
        resolve_taps(model, "official")


def test_torchvision_model_is_the_library_class_with_its_names_and_it_rebuilds() -> None:
    torch.manual_seed(0)
    model = build_model("torchvision:resnet18", num_classes=10, in_channels=1).eval()
    assert isinstance(model, torchvision.models.ResNet)
    assert type(model).__name__ == "ResNet"
    assert model.conv1.in_channels == 1 and model.fc.out_features == 10
    reference = torchvision.models.resnet18(num_classes=10)
    keys = {k: v.shape for k, v in model.state_dict().items()}
    ref_keys = {k: v.shape for k, v in reference.state_dict().items()}
    assert keys.keys() == ref_keys.keys()
    assert {k: s for k, s in keys.items() if k != "conv1.weight"} == {
        k: s for k, s in ref_keys.items() if k != "conv1.weight"
    }
    rebuilt = build_model(**model.arch_config())
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), model(x))
    # deep copies and pickles stay adopted, with their own modules
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert type(clone) is type(model)
        assert clone.tap_points()[0][1] is clone.layer1[0]
        assert clone.arch_config() == model.arch_config()
        with torch.no_grad():
            assert torch.equal(clone(x), model(x))
    # the analyses' random re-initialisation rebuilds it from arch_config
    fresh = random_init_like(Normalized(model, [0.5], [0.25]), seed=1)
    assert fresh.arch_config() == model.arch_config()
    with pytest.raises(ValueError, match="no layer-removal API"):
        bare_model(model)


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("resnet18", 32),
        ("mobilenet_v3_small", 32),
        ("convnext_tiny", 32),
        ("googlenet", 64),
        ("alexnet", 64),
        ("regnet_x_400mf", 32),
    ],
)
def test_every_default_tap_runs_once_per_forward(name: str, size: int) -> None:
    torch.manual_seed(0)
    model = _quiet_build(f"torchvision:{name}", num_classes=5).eval()
    x = torch.rand(2, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a tap running twice per pass would warn
        with torch.no_grad(), LayerTaps(model, "block") as taps:
            model(x)
            model(x[:1])
    feats = taps.features
    assert list(feats) == default_block_taps(model)
    assert all(f.shape[0] == 3 and f.dim() == 2 for f in feats.values())


def test_torchvision_taps_by_name_and_regex_and_layer_by_layer() -> None:
    torch.manual_seed(0)
    model = Normalized(build_model("torchvision:resnet18", num_classes=4), [0.5] * 3, [0.2] * 3)
    names = ["layer2.1", "layer1.0.conv1", "avgpool"]
    assert [p.name for p in resolve_taps(model, names)] == names
    regex = [p.name for p in resolve_taps(model, r"re:layer[34]\.\d")]
    assert regex == ["layer3.0", "layer3.1", "layer4.0", "layer4.1"]
    assert [p.name for p in resolve_taps(model, "residual_blocks")] == default_block_taps(model.net)
    batches = [torch.rand(3, 3, 32, 32), torch.rand(2, 3, 32, 32)]
    by_layer = dict((p.name, f) for p, f in iter_layer_features(model, batches, names))
    model.eval()
    with torch.no_grad(), LayerTaps(model, names) as taps:
        for b in batches:
            model(b)
    for name in names:
        assert torch.allclose(by_layer[name], taps.features[name])
    assert feature_dims(model, (3, 32, 32), names) == {
        "layer2.1": 128 * 4 * 4,
        "layer1.0.conv1": 64 * 8 * 8,
        "avgpool": 512,
    }


def test_classifier_and_config_accept_external_names() -> None:
    module = ImageClassifier(
        net_config=OmegaConf.create(
            {"name": "torchvision:mobilenet_v3_small", "num_classes": 3, "in_channels": 1}
        ),
        mean=[0.5],
        std=[0.25],
    )
    with torch.no_grad():
        assert module.eval()(torch.rand(2, 1, 32, 32)).shape == (2, 3)
    assert [p.name for p in resolve_taps(module, "block")] == default_block_taps(module.net)
    assert check_model_name("torchvision:anything") == "torchvision:anything"
    assert check_model_name("resnet56") == "resnet56"
    with pytest.raises(UnknownModelError, match="torchvision:<name>"):
        check_model_name("convnext_tiny")
    check_config(OmegaConf.create({"model": {"name": "torchvision:convnext_tiny"}}))
    with pytest.raises(UnknownModelError, match=r"unknown model 'convnext'.*\(model\.name\)"):
        check_config(OmegaConf.create({"model": {"name": "convnext"}}))


def test_external_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match=r"unknown torchvision.*'convnext_tin'.*convnext_tiny"):
        build_model("torchvision:convnext_tin")
    with pytest.raises(ValueError, match="does not accept"):
        build_model("torchvision:resnet18", depth=3)
    with pytest.raises(ValueError, match="pretrained weights expect 3 input channels"):
        build_model("torchvision:resnet18", weights="DEFAULT", in_channels=1)  # no download
    with pytest.raises(ValueError, match="num_classes"):
        build_model("torchvision:resnet18", num_classes=0)
    with pytest.raises(UnknownModelError, match="timm:<name>"):
        build_model("keras:resnet18")


def test_timm_without_timm_names_the_extra(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "timm" else real(n, *a)
    )
    with pytest.raises(ImportError, match=r"dnn-modularity\[timm\]"):
        build_model("timm:resnet18", num_classes=10)


def test_timm_models_use_feature_info_as_block_taps() -> None:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = build_model("timm:resnet18", num_classes=10, in_channels=1).eval()
    assert isinstance(model, timm.models.ResNet)
    expected = [d["module"] for d in model.feature_info]
    assert expected == ["act1", "layer1", "layer2", "layer3", "layer4"]
    assert [p.name for p in resolve_taps(model, "block")] == expected
    assert model.arch_config() == {
        "name": "timm:resnet18",
        "num_classes": 10,
        "in_channels": 1,
        "pretrained": False,
    }
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad(), LayerTaps(model) as taps:
        model(x)
    assert [f.shape[1] for f in taps.features.values()] == [
        64 * 16 * 16,
        64 * 8 * 8,
        128 * 4 * 4,
        256 * 2 * 2,
        512,
    ]
    assert [p.name for p in resolve_taps(model, r"re:layer4\.\d")] == ["layer4.0", "layer4.1"]
    rebuilt = build_model(**model.arch_config())
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(x), model(x))
    with pytest.raises(ValueError, match="unknown timm model"):
        build_model("timm:resnet_18")


class UserNet(nn.Module):
    """A user's own network: no tap_points, no arch_config."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.encoder(x)).flatten(1))


def test_plain_user_module_with_named_and_regex_taps() -> None:
    torch.manual_seed(0)
    net = UserNet().eval()
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad(), LayerTaps(net, ["encoder.1", "head"]) as taps:
        net(x)
    assert {k: tuple(v.shape) for k, v in taps.features.items()} == {
        "encoder.1": (5, 8 * 8 * 8),
        "head": (5, 3),
    }
    regex = [p.name for p, _ in iter_layer_features(net, [x], r"re:encoder\.\d")]
    assert regex == ["encoder.0", "encoder.1", "encoder.2", "encoder.3"]
    assert default_block_taps(net) == ["encoder.1", "encoder.3"]  # no blocks: activations
    assert default_block_taps(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2))) == ["0", "1"]
    with pytest.raises(ValueError, match=r"declares no tap points.*default_block_taps"):
        resolve_taps(net, "block")
    wrapped = Normalized(net, [0.5], [0.25])
    assert [p.name for p in resolve_taps(wrapped, default_block_taps(net))] == [
        "encoder.1",
        "encoder.3",
    ]
