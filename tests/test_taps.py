"""Layer taps: declared tap counts, LayerTaps, iter_layer_features, wrappers, errors."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from dnn_modularity.models import Normalized, build_model, resnet20, resnet56, vgg16_bn
from dnn_modularity.taps import (
    LayerTaps,
    TapPoint,
    feature_dims,
    iter_layer_features,
    resolve_taps,
    unwrap_model,
)

# Expected number of layers per model; both modes tap the same number of places.
TAP_COUNTS = {
    "resnet20": 10,
    "resnet32": 16,
    "resnet44": 22,
    "resnet56": 28,
    "resnet110": 55,
    "resnet18": 9,
    "resnet34": 17,
    "resnet50": 17,
    "resnet101": 34,
    "resnet152": 51,
    "vgg11_bn": 8,
    "vgg13_bn": 10,
    "vgg16_bn": 13,
    "vgg19_bn": 16,
    "mobilenet_v2": 18,
    "imagenet_resnet18": 9,
    "imagenet_resnet34": 17,
    "imagenet_resnet50": 17,
    "imagenet_resnet101": 34,
    "imagenet_resnet152": 51,
    "imagenet_vgg11_bn": 8,
    "imagenet_vgg13_bn": 10,
    "imagenet_vgg16_bn": 13,
    "imagenet_vgg19_bn": 16,
}


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.fixture(scope="module")
def r20() -> nn.Module:
    torch.manual_seed(0)
    return resnet20().eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(6, 3, 32, 32)


@pytest.mark.parametrize("name", sorted(TAP_COUNTS))
def test_tap_counts_per_model_and_mode(name: str) -> None:
    with torch.device("meta"):
        model = build_model(name)
    block = resolve_taps(model, "block")
    official = resolve_taps(model, "official")
    assert len(block) == len(official) == TAP_COUNTS[name]
    assert [p.index for p in block] == list(range(1, TAP_COUNTS[name] + 1))
    modules = dict(model.named_modules())
    for p in block + official:  # names are module paths
        assert modules[p.name] is p.module
    if "vgg" in name:  # official = conv outputs before BN
        assert all(isinstance(p.module, nn.Conv2d) for p in official)
        assert not any(isinstance(p.module, nn.Conv2d) for p in block)
    else:  # official = conv1 before BN, then the same blocks as block mode
        assert isinstance(official[0].module, nn.Conv2d)
        assert [p.name for p in official[1:]] == [p.name for p in block[1:]]


def test_declared_names_are_readable() -> None:
    names = [p.name for p in resolve_taps(resnet56(), "block")]
    assert names[:3] == ["stem", "layer1.0", "layer1.1"] and names[-1] == "layer3.8"
    assert resolve_taps(resnet56(), "official")[0].name == "stem.conv"
    vgg = [p.name for p in resolve_taps(vgg16_bn(), "official")]
    assert vgg[0] == "stage1.0.conv" and vgg[-1] == "stage5.2.conv"
    with pytest.raises(ValueError, match="valid modes"):
        resnet56().tap_points("blocks")


def test_layer_taps_features_equal_manual_forward(r20: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad(), LayerTaps(r20, "block") as taps:
        r20(x[:4])
        r20(x[4:])
    feats = taps.features
    assert list(feats) == [p.name for p in taps.points]
    with torch.no_grad():
        stem = r20.stem(x)
        l10 = r20.layer1[0](stem)
        conv = r20.stem.conv(x)
    torch.testing.assert_close(feats["stem"], stem.flatten(1))
    torch.testing.assert_close(feats["layer1.0"], l10.flatten(1))
    assert feats["layer3.2"].shape == (6, 64 * 8 * 8)
    assert taps.num_samples == 6
    # Official mode reads the stem conv before BN.
    with torch.no_grad(), LayerTaps(r20, "official", layers=[1]) as off:
        r20(x)
    torch.testing.assert_close(off.features["stem.conv"], conv.flatten(1))


def test_bn_tap_is_not_changed_by_later_in_place_ops() -> None:
    """torchvision's blocks add the residual in place into bn2's output; taps store a copy."""
    torch.manual_seed(0)
    model = build_model("imagenet_resnet18", num_classes=3).eval()
    xx = torch.rand(2, 3, 64, 64)
    with torch.no_grad(), LayerTaps(model, ["layer1.0.bn2"]) as taps:
        model(xx)
    block = model.layer1[0]
    with torch.no_grad():
        stem = model.maxpool(model.relu(model.bn1(model.conv1(xx))))
        expected = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(stem)))))
    torch.testing.assert_close(taps.features["layer1.0.bn2"], expected.flatten(1))


def test_hooks_removed_on_exit_and_on_error(r20: nn.Module, x: torch.Tensor) -> None:
    before = _hook_count(r20)
    with LayerTaps(r20) as taps:
        assert _hook_count(r20) == before + len(taps.points) + 2
        with torch.no_grad():
            r20(x[:2])
    assert _hook_count(r20) == before
    assert taps.features["layer2.0"].shape[0] == 2  # features survive the exit
    with pytest.raises(ZeroDivisionError), LayerTaps(r20, "official"):
        _ = 1 / 0
    assert _hook_count(r20) == before
    # An error inside a forward pass: the partial pass is dropped, hooks still removed.
    with pytest.raises(RuntimeError), LayerTaps(r20) as taps2, torch.no_grad():
        r20(x[:2])
        r20(torch.rand(2, 5, 32, 32))  # wrong channel count
    assert _hook_count(r20) == before
    assert taps2.num_samples == 2
    assert all(f.shape[0] == 2 for f in taps2.features.values())


class DDPLike(nn.Module):
    """Mimics DistributedDataParallel: the network is ``.module``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


class HolderLike(nn.Module):
    """Mimics the Lightning ImageClassifier: ``.model`` = Normalized(net), ``.net`` = net."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.model = Normalized(net, [0.5] * 3, [0.25] * 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def test_wrappers_are_looked_through(r20: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad(), LayerTaps(r20) as ref:
        r20(x)
    wrapped = DDPLike(r20)
    assert unwrap_model(wrapped) is r20
    assert [p.name for p in resolve_taps(wrapped)] == [p.name for p in ref.points]
    with torch.no_grad(), LayerTaps(wrapped) as taps:
        wrapped(x)
    for k, v in ref.features.items():
        torch.testing.assert_close(taps.features[k], v)

    compiled = torch.compile(r20, backend="eager")
    assert unwrap_model(compiled) is r20
    with torch.no_grad(), LayerTaps(compiled, layers=["stem", "layer3.2"]) as ctaps:
        compiled(x)
    torch.testing.assert_close(ctaps.features["layer3.2"], ref.features["layer3.2"])
    got = dict((p.name, f) for p, f in iter_layer_features(compiled, [x], layers=[2]))
    torch.testing.assert_close(got["layer1.0"], ref.features["layer1.0"])
    assert _hook_count(r20) == 0

    # Normalized and a classifier-like holder: names of the bare net, normalised inputs.
    holder = HolderLike(r20)
    assert unwrap_model(holder) is r20 and unwrap_model(holder.model) is r20
    with torch.no_grad(), LayerTaps(holder, layers=["layer2.1"]) as htaps:
        holder(x)
    with torch.no_grad():
        expected = r20.layer2[1](r20.layer2[0](r20.layer1(r20.stem((x - 0.5) / 0.25))))
    torch.testing.assert_close(htaps.features["layer2.1"], expected.flatten(1))


def test_iter_layer_features_equals_layer_taps_and_stops_early(
    r20: nn.Module, x: torch.Tensor
) -> None:
    model = Normalized(r20, [0.5] * 3, [0.25] * 3)
    with torch.no_grad(), LayerTaps(model) as ref:
        model(x[:4])
        model(x[4:])
    calls = {"layer3.0": 0, "fc": 0}
    handles = [
        r20.layer3[0].register_forward_pre_hook(
            lambda m, a: calls.__setitem__("layer3.0", calls["layer3.0"] + 1)
        ),
        r20.fc.register_forward_pre_hook(lambda m, a: calls.__setitem__("fc", calls["fc"] + 1)),
    ]
    try:
        batches = [x[:4], (x[4:], torch.zeros(2))]  # tensors or (x, y) tuples
        seen = []
        for point, feats in iter_layer_features(model, batches):
            assert isinstance(point, TapPoint)
            torch.testing.assert_close(feats, ref.features[point.name])
            seen.append(point.name)
    finally:
        for h in handles:
            h.remove()
    assert seen == list(ref.features)
    # layer3.0 runs only for the 3 taps at or after it, once per batch; fc never runs.
    assert calls == {"layer3.0": 3 * 2, "fc": 0}
    assert _hook_count(r20) == 0


def test_iter_layer_features_options(r20: nn.Module, x: torch.Tensor) -> None:
    r20.train()
    try:
        gen = (b for b in [x[:3], x[3:]])  # a one-shot iterator is materialised
        out = list(
            iter_layer_features(r20, gen, layers=["stem", 10], dtype=torch.float16, to_cpu=True)
        )
        assert r20.training  # mode restored after eval-mode extraction
    finally:
        r20.eval()
    assert [(p.index, p.name) for p, _ in out] == [(1, "stem"), (10, "layer3.2")]
    assert all(f.dtype == torch.float16 and f.shape[0] == 6 for _, f in out)
    dataset = torch.utils.data.TensorDataset(x)
    shuffled = torch.utils.data.DataLoader(dataset, batch_size=3, shuffle=True)
    with pytest.raises(ValueError, match="shuffle=False"):
        next(iter_layer_features(r20, shuffled))
    ordered = torch.utils.data.DataLoader(dataset, batch_size=4)
    ((_, stem),) = list(iter_layer_features(r20, ordered, layers=[1]))
    torch.testing.assert_close(stem.float(), out[0][1].float(), atol=2e-3, rtol=2e-3)
    # Closing the generator early removes its hook.
    it = iter_layer_features(r20, [x])
    next(it)
    it.close()
    assert _hook_count(r20) == 0


def test_name_regex_and_selector_taps(r20: nn.Module) -> None:
    assert [p.name for p in resolve_taps(r20, ["layer2.0", "stem"])] == ["layer2.0", "stem"]
    assert [p.name for p in resolve_taps(r20, "layer1.1.conv2")] == ["layer1.1.conv2"]
    blocks = [p.name for p in resolve_taps(r20, r"re:layer\d\.\d")]
    assert blocks == [p.name for p in resolve_taps(r20, "block")][1:]
    assert [p.name for p in resolve_taps(r20, "residual_blocks")] == blocks
    relus = resolve_taps(r20, "relu")
    assert len(relus) == 1 + 2 * 9 and relus[0].name == "stem.act"
    assert len(resolve_taps(r20, "conv")) == 19
    assert [p.name for p in resolve_taps(r20, "linear")] == ["fc"]
    # Any torch model works with names, regexes and selectors.
    seq = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    assert [p.name for p in resolve_taps(seq, "relu")] == ["2"]
    with torch.no_grad(), LayerTaps(seq, "re:[13]") as taps:
        seq(torch.rand(5, 3, 2, 2))
    assert [f.shape for f in taps.features.values()] == [(5, 8), (5, 3)]


def test_bad_taps_raise_listing_choices(r20: nn.Module) -> None:
    with pytest.raises(
        ValueError, match=r"unknown tap 'layer1\.9'.*available module names.*did you mean"
    ):
        resolve_taps(r20, ["stem", "layer1.9"])
    with pytest.raises(ValueError, match="selectors"):
        resolve_taps(r20, "blocks")
    with pytest.raises(ValueError, match="matches no module name"):
        resolve_taps(r20, "re:layer7.*")
    with pytest.raises(ValueError, match="declares no tap points"):
        resolve_taps(nn.Sequential(nn.Linear(2, 2)), "block")
    with pytest.raises(ValueError, match="matches no module"):
        resolve_taps(vgg16_bn(), "residual_blocks")
    with pytest.raises(ValueError, match="duplicate"):
        resolve_taps(r20, ["stem", "stem"])
    with pytest.raises(ValueError, match=r"1\.\.10"):
        resolve_taps(r20, "block", layers=[11])


class SharedReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 4)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(4, 4)
        self.unused = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc2(self.act(self.fc1(x))))


def test_reused_and_unused_modules() -> None:
    torch.manual_seed(0)
    model = SharedReLU()
    xx = torch.randn(3, 4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad(), LayerTaps(model, ["act"]) as taps:
            model(xx)
    assert any("more than once" in str(w.message) for w in caught)
    first = torch.relu(model.fc1(xx)).detach()
    torch.testing.assert_close(taps.features["act"], first)
    ((_, feats),) = list(iter_layer_features(model, [xx], ["act"]))
    torch.testing.assert_close(feats, first)
    with pytest.raises(RuntimeError, match="did not run"):
        list(iter_layer_features(model, [xx], ["unused"]))
    with (
        pytest.warns(UserWarning, match="more than once"),
        torch.no_grad(),
        LayerTaps(model, ["act", "unused"]) as taps2,
    ):
        model(xx)
    with pytest.raises(RuntimeError, match="different sample counts"):
        _ = taps2.features


def test_feature_dims_give_memory_needs() -> None:
    dims = feature_dims(resnet56(), (3, 32, 32))
    assert len(dims) == 28 and dims["stem"] == 16 * 32 * 32 and dims["layer3.8"] == 64 * 8 * 8
    assert sum(dims.values()) == 274_432  # the figure quoted in the taps module docstring
    assert list(feature_dims(vgg16_bn(), (3, 32, 32)).values())[-1] == 512 * 2 * 2  # before pool 5


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_real_ddp_wrapper_single_process(tmp_path, r20: nn.Module, x: torch.Tensor) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        ddp = nn.parallel.DistributedDataParallel(r20)
        assert unwrap_model(ddp) is r20
        with torch.no_grad(), LayerTaps(ddp, layers=["layer2.2"]) as taps:
            ddp(x)
        ((point, feats),) = list(iter_layer_features(ddp, [x], layers=["layer2.2"]))
        torch.testing.assert_close(feats, taps.features["layer2.2"])
        assert point.index == 7
    finally:
        dist.destroy_process_group()
    assert _hook_count(r20) == 0


@pytest.mark.gpu
def test_cuda_features_to_cpu_and_half(x: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = resnet20().eval()
    with torch.no_grad(), LayerTaps(model, layers=[4]) as ref:
        model(x)
    (name,) = ref.features  # the 4th tap point of ResNet-20: "layer1.2"
    assert name == "layer1.2"
    gpu = model.cuda()
    with torch.no_grad(), LayerTaps(gpu, layers=[4], to_cpu=True) as taps:
        gpu(x.cuda())
    feats = taps.features[name]
    assert feats.device.type == "cpu"
    torch.testing.assert_close(feats, ref.features[name], atol=1e-3, rtol=1e-3)
    # CPU batches are moved to the model's device; features stay there unless to_cpu.
    ((_, half),) = list(iter_layer_features(gpu, [x], layers=[4], dtype=torch.float16))
    assert half.device.type == "cuda" and half.dtype == torch.float16
    torch.testing.assert_close(half.float().cpu(), ref.features[name], atol=2e-2, rtol=2e-2)
