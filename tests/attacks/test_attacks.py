"""advertorch compatibility fix and the six attacks of paper 1, Fig. 6a (tiny models, capped)."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

from dnn_modularity.attacks import ATTACKS, available_attacks, build_attack, generate_adversarial
from dnn_modularity.attacks import compat as advertorch_compat
from dnn_modularity.attacks.generate import random_targets

# Caps that keep every attack well under a second on 12 8x8 images.
CAPS = {"fgsm": None, "pgd": 5, "jsma": 6, "cw": 10, "onepixel": 6, "localsearch": 2}


@pytest.fixture(scope="module")
def digits_model() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small CNN trained for a few steps on sklearn digits (8x8, values scaled to [0, 1])."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)
    )
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[:1400]), y[:1400]).backward()
        opt.step()
    net.eval()
    return net, x[1400:], y[1400:]


def test_patch_installs_working_zero_gradients() -> None:
    advertorch_compat.patch_torch()
    gradcheck_module = importlib.import_module("torch.autograd.gradcheck")
    assert gradcheck_module.zero_gradients is advertorch_compat.zero_gradients
    assert advertorch_compat.patch_torch() is False  # idempotent, never replaces
    a = torch.ones(3, requires_grad=True)
    b = torch.ones(2, requires_grad=True)
    (a.sum() * 2 + b.sum()).backward()
    gradcheck_module.zero_gradients([a, (b,)])
    assert torch.equal(a.grad, torch.zeros(3)) and torch.equal(b.grad, torch.zeros(2))


def test_import_advertorch_exposes_all_six_classes() -> None:
    module = advertorch_compat.import_advertorch()
    for spec in ATTACKS.values():
        assert hasattr(module, spec.class_name), spec.class_name
    assert set(available_attacks()) == {"fgsm", "pgd", "jsma", "cw", "onepixel", "localsearch"}


@pytest.mark.parametrize("name", list(CAPS))
def test_every_attack_runs_and_reports_consistent_success(name, digits_model) -> None:
    net, x, y = digits_model
    images, labels = x[:12], y[:12]
    result = generate_adversarial(
        net, images, labels, name, iteration_cap=CAPS[name], progress=False
    )
    assert result.adv_images.shape == images.shape
    assert float(result.adv_images.min()) >= 0.0 and float(result.adv_images.max()) <= 1.0
    with torch.no_grad():
        adv_pred = net(result.adv_images).argmax(1)
        clean_pred = net(images).argmax(1)
    assert torch.equal(adv_pred, result.adv_pred)
    expected = (clean_pred == labels) & (adv_pred != labels)
    assert torch.equal(result.success_mask, expected)
    assert result.success_rate == pytest.approx(
        int(expected.sum()) / int((clean_pred == labels).sum())
    )
    kept, kept_labels, positions = result.successful()
    assert len(kept) == result.num_success == len(kept_labels)
    assert torch.equal(kept_labels, labels[positions])
    # Images the model already got wrong are left untouched (not attacked).
    wrong = clean_pred != labels
    assert torch.equal(result.adv_images[wrong], images[wrong])
    summary = result.summary()
    assert summary["attack"] == name and summary["n_images"] == 12


def test_defaults_are_advertorchs_and_cap_only_lowers(digits_model) -> None:
    net, _, _ = digits_model
    _, params = build_attack(net, "pgd", num_classes=10, image_shape=(1, 8, 8))
    assert params["eps"] == 0.3 and params["nb_iter"] == 40 and params["eps_iter"] == 0.01
    _, params = build_attack(net, "pgd", num_classes=10, image_shape=(1, 8, 8), iteration_cap=1000)
    assert params["nb_iter"] == 40  # a cap never raises a default
    obj, params = build_attack(net, "jsma", num_classes=10, image_shape=(1, 8, 8), iteration_cap=8)
    assert params["gamma"] == pytest.approx(16 / 64) and obj.targeted
    obj, params = build_attack(net, "cw", num_classes=10, image_shape=(1, 8, 8))
    assert obj.max_iterations == 10000 and obj.binary_search_steps == 9


def test_fgsm_on_trained_model_succeeds_and_respects_eps(digits_model) -> None:
    net, x, y = digits_model
    strong = generate_adversarial(net, x[:100], y[:100], "fgsm", progress=False)
    assert strong.num_clean_correct > 80  # the model learned digits
    assert strong.success_rate > 0.5
    linf = (strong.adv_images - x[:100]).abs().amax(dim=(1, 2, 3))
    assert float(linf.max()) <= 0.3 + 1e-6
    none = generate_adversarial(net, x[:100], y[:100], "fgsm", eps=0.0, progress=False)
    assert none.success_rate == 0.0 and none.num_success == 0


def test_model_state_is_restored(digits_model) -> None:
    net, x, y = digits_model
    net.zero_grad(set_to_none=True)
    net.train()
    generate_adversarial(net, x[:4], y[:4], "pgd", iteration_cap=2, progress=False)
    assert net.training
    assert all(p.requires_grad for p in net.parameters())
    assert all(p.grad is None for p in net.parameters())  # no gradient w.r.t. weights
    net.eval()


def test_jsma_targets_differ_from_labels() -> None:
    labels = torch.arange(10).repeat(20)
    targets = random_targets(labels, 10, seed=3)
    assert (targets != labels).all() and targets.min() >= 0 and targets.max() <= 9
    assert torch.equal(targets, random_targets(labels, 10, seed=3))


def test_bad_inputs_raise_clear_errors(digits_model) -> None:
    net, x, y = digits_model
    with pytest.raises(KeyError, match="fgsm"):
        generate_adversarial(net, x[:2], y[:2], "deepfool", progress=False)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        generate_adversarial(net, x[:2] * 5 - 1, y[:2], "fgsm", progress=False)
    with pytest.raises(ValueError, match="nb_iter"):
        generate_adversarial(net, x[:2], y[:2], "pgd", nb_iters=3, progress=False)
    with pytest.raises(ValueError, match="untargeted"):
        generate_adversarial(net, x[:2], y[:2], "fgsm", targeted=True, progress=False)
    with pytest.raises(ValueError, match="labels"):
        generate_adversarial(net, x[:2], y[:3], "fgsm", progress=False)
    with pytest.raises(ValueError, match="iteration_cap"):
        generate_adversarial(net, x[:2], y[:2], "pgd", iteration_cap=0, progress=False)


def test_cw_own_max_iterations_is_an_attack_parameter(digits_model) -> None:
    # CW's advertorch argument `max_iterations` must not clash with the iteration cap.
    net, x, y = digits_model
    result = generate_adversarial(
        net, x[:4], y[:4], "cw", max_iterations=7, binary_search_steps=1, progress=False
    )
    assert result.params["max_iterations"] == 7 and result.params["binary_search_steps"] == 1
    capped = generate_adversarial(
        net, x[:4], y[:4], "cw", max_iterations=7, iteration_cap=3, progress=False
    )
    assert capped.params["max_iterations"] == 3


def test_onepixel_default_on_images_with_fewer_than_100_pixels(digits_model) -> None:
    # advertorch's default max_pixels=100 would index past the 64 pixels of a digit.
    net, x, y = digits_model
    result = generate_adversarial(net, x[:3], y[:3], "onepixel", progress=False)
    assert result.params["max_pixels"] == 64
