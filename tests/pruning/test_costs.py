"""Costs against published figures (±2%) and the counter's conventions."""

from __future__ import annotations

import pytest
import torch

from dnn_modularity.models import Normalized, build_model, resnet56
from dnn_modularity.pruning.costs import Costs, count_costs

CIFAR = (3, 32, 32)


def close(value: float, reference: float, rel: float = 0.02) -> bool:
    return abs(value - reference) <= rel * reference


@pytest.mark.parametrize(
    "name,params,macs",
    [
        ("resnet56", 0.85e6, 125e6),  # He et al. 2016; paper 1 Table 1 baseline
        ("resnet110", 1.7e6, 253e6),
        ("resnet20", 0.27e6, 40.8e6),
        ("resnet18", 11.17e6, 0.56e9),
        ("vgg16_bn", 15.25e6, 313e6),
    ],
)
def test_cifar_costs_match_published(name: str, params: float, macs: float) -> None:
    costs = count_costs(build_model(name), CIFAR)
    assert close(costs.params, params), costs
    assert close(costs.macs, macs), costs
    assert costs.flops == 2 * costs.macs


def test_resnet56_exact_and_pruned_reduction_of_paper1_table1() -> None:
    full = count_costs(resnet56(), CIFAR)
    assert full.params == 853_018
    assert close(full.macs, 125.49e6, rel=0.001)
    pruned = count_costs(resnet56(blocks=[2, 3, 6]), CIFAR)
    params_drop = 1 - pruned.params / full.params
    macs_drop = 1 - pruned.macs / full.macs
    assert close(params_drop, 0.4300), params_drop  # paper: 43.00%
    assert close(macs_drop, 0.6030), macs_drop  # paper: 60.30% ("FLOPs" = thop MACs)


def test_imagenet_costs_on_meta_device() -> None:
    with torch.device("meta"):
        r50 = build_model("imagenet_resnet50")
        vgg = build_model("imagenet_vgg16_bn")
    c = count_costs(r50, (3, 224, 224))
    assert close(c.params, 25.56e6) and close(c.macs, 4.09e9)
    c = count_costs(vgg, (3, 224, 224))
    assert close(c.params, 138.37e6) and close(c.macs, 15.47e9)


def test_batch_scaling_wrappers_and_modes() -> None:
    model = resnet56(num_classes=100, in_channels=1)
    model.train()
    one = count_costs(model, (1, 32, 32))
    assert model.training  # mode restored
    assert count_costs(model, (4, 1, 32, 32)).macs == 4 * one.macs
    wrapped = Normalized(model, [0.5], [0.25])
    assert count_costs(wrapped, (1, 32, 32)) == one  # normalisation costs no MACs
    assert isinstance(one, Costs) and "MACs" in str(one)
    with pytest.raises(ValueError, match="input_size"):
        count_costs(model, (32, 32))
    with pytest.raises(ValueError, match="input_size"):
        count_costs(model, (1, 0, 32, 32))
