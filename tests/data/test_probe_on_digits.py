"""Linear probe and class diagnostics on real features: a ResNet-20 trained briefly on digits.

Digits are almost linearly separable from their raw pixels, so a *randomly initialised* ResNet's
block features are still far above chance (random layers lose information gradually: about 97 %
at the stem, 83 % after the last block). Chance level is reached with shuffled labels, and the
random network's 10 logits (a random 10-d projection) stay far below the trained ones.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dnn_modularity.analysis.measure import random_init_like
from dnn_modularity.data.probe import ProbeSet
from dnn_modularity.graph import knn_modularity
from dnn_modularity.graph.classes import class_diagnostics
from dnn_modularity.linear_probe import linear_probe
from dnn_modularity.taps import iter_layer_features

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def probe(digits):
    return ProbeSet.from_datamodule(digits, 500, seed=0)


def _last_layer(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    *_, (_, feats) = iter_layer_features(model, [images], "block")
    return feats


def test_probe_on_the_last_layer_trained_vs_random_init_vs_shuffled(digits_resnet20, probe):
    feats = _last_layer(digits_resnet20, probe.images)
    res = linear_probe(feats, probe.labels, test_fraction=0.5, seed=0)
    assert res.split == "stratified" and res.num_test == 250
    assert res.accuracy >= 0.95
    random_net = random_init_like(digits_resnet20, seed=1).eval()
    rand = linear_probe(_last_layer(random_net, probe.images), probe.labels, seed=0)
    assert rand.accuracy <= res.accuracy - 0.05
    with torch.no_grad():
        logits_trained = linear_probe(digits_resnet20(probe.images), probe.labels, seed=0)
        logits_random = linear_probe(random_net(probe.images), probe.labels, seed=0)
    assert logits_trained.accuracy >= 0.95 and logits_random.accuracy <= 0.7
    shuffled = probe.labels[torch.randperm(500, generator=torch.Generator().manual_seed(0))]
    null = linear_probe(feats, shuffled, seed=0)
    assert null.accuracy <= 0.2 and null.chance_accuracy == pytest.approx(0.1, abs=0.02)


def test_class_diagnostics_on_the_last_layer(digits_resnet20, probe):
    feats = _last_layer(digits_resnet20, probe.images)
    diag = class_diagnostics(feats, probe.labels, k=3)
    assert diag.modularity == knn_modularity(feats, probe.labels, k=3)
    assert diag.knn_accuracy >= 0.95
    assert float(diag.purity.min()) > 0.8
    assert diag.counts.tolist() == [50] * 10
    pairs = diag.most_entangled_pairs(3)
    assert len(pairs) == 3 and all(0 <= v < 0.5 for *_, v in pairs)
