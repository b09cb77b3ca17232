"""Adversarial examples with advertorch, in [0, 1] pixel space (paper 1, Sec. 4.2, Fig. 6a).

Paper 1 attacks the trained CIFAR-10 models with FGSM, PGD, JSMA, CW, OnePixel and LocalSearch
"with the default parameter settings in AdverTorch" and builds modularity curves on 500
successful adversarial samples. Here:

* every attack runs on images in ``[0, 1]`` with ``clip_min=0, clip_max=1`` and the
  normalisation *inside* the model (:class:`dnn_modularity.models.Normalized`). The official
  code normalised first and then clipped the normalised tensor to ``[0, 1]``, which both
  changes the threat model and destroys part of every image — not repeated here;
* the defaults are advertorch 0.2.3's (``ATTACKS[name].defaults``); ``overrides`` change any of
  them and ``iteration_cap`` caps the iterative ones for tests and CPU runs (``AttackSpec.cap``);
* JSMA is targeted-only in advertorch; to get *untargeted* samples as the paper did, each image
  gets a seeded random target class different from its label;
* only images the model classifies correctly are attacked, and a sample counts as a success
  when the attacked image is classified differently from its true label. Success rate =
  successes / correctly classified images.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from dnn_modularity._advertorch_compat import import_advertorch
from dnn_modularity.progress import Progress

__all__ = [
    "ATTACKS",
    "AdversarialResult",
    "AttackSpec",
    "available_attacks",
    "build_attack",
    "generate_adversarial",
]


def _no_cap(iteration_cap: int, image_shape: tuple[int, ...]) -> dict[str, Any]:
    return {}


def _cap_pgd(iteration_cap: int, image_shape: tuple[int, ...]) -> dict[str, Any]:
    return {"nb_iter": iteration_cap}


def _cap_jsma(iteration_cap: int, image_shape: tuple[int, ...]) -> dict[str, Any]:
    # advertorch runs int(dim_x * gamma / 2) iterations (two pixels per step); gamma is the
    # only knob, so express the cap through it.
    dim_x = math.prod(image_shape)
    return {"gamma": min(1.0, 2.0 * iteration_cap / dim_x)}


def _cap_cw(iteration_cap: int, image_shape: tuple[int, ...]) -> dict[str, Any]:
    return {"max_iterations": iteration_cap}


def _cap_onepixel(iteration_cap: int, image_shape: tuple[int, ...]) -> dict[str, Any]:
    return {"max_pixels": iteration_cap}


def _cap_localsearch(iteration_cap: int, image_shape: tuple[int, ...]) -> dict[str, Any]:
    return {"round_ub": iteration_cap}


def _no_fix(kwargs: dict[str, Any], image_shape: tuple[int, ...]) -> dict[str, Any]:
    return kwargs


def _fix_onepixel(kwargs: dict[str, Any], image_shape: tuple[int, ...]) -> dict[str, Any]:
    # advertorch draws randperm(H * W)[:max_pixels] and then indexes it max_pixels times: an
    # IndexError whenever max_pixels > H * W (default 100 > 64 pixels of an 8x8 digit).
    pixels = math.prod(image_shape[1:])
    return {**kwargs, "max_pixels": min(int(kwargs.get("max_pixels", 100)), pixels)}


@dataclass(frozen=True)
class AttackSpec:
    """One registered attack: the advertorch class and how to call it.

    Attributes:
        name: Registry key (``fgsm``, ``pgd``, ...).
        paper_name: Name used in paper 1's Fig. 6a.
        class_name: Class in ``advertorch.attacks``.
        defaults: advertorch 0.2.3's defaults for that class (written out so that records show
            them; the constructor receives only the overrides, so the library's own defaults apply).
        needs_num_classes: The constructor takes ``num_classes`` (JSMA, CW).
        targeted_only: advertorch implements only the targeted variant (JSMA).
        gradient_free: No gradients needed (OnePixel, LocalSearch): run under ``no_grad``.
        cap: ``(iteration_cap, image_shape) -> kwargs`` that cap the cost.
        fix: ``(kwargs, image_shape) -> kwargs`` working around an advertorch limitation.
    """

    name: str
    paper_name: str
    class_name: str
    defaults: Mapping[str, Any]
    needs_num_classes: bool = False
    targeted_only: bool = False
    gradient_free: bool = False
    cap: Callable[[int, tuple[int, ...]], dict[str, Any]] = field(default=_no_cap)
    fix: Callable[[dict[str, Any], tuple[int, ...]], dict[str, Any]] = field(default=_no_fix)


ATTACKS: dict[str, AttackSpec] = {
    "fgsm": AttackSpec("fgsm", "FGSM", "GradientSignAttack", {"eps": 0.3, "targeted": False}),
    "pgd": AttackSpec(
        "pgd",
        "PGD",
        "LinfPGDAttack",
        {"eps": 0.3, "nb_iter": 40, "eps_iter": 0.01, "rand_init": True, "targeted": False},
        cap=_cap_pgd,
    ),
    "jsma": AttackSpec(
        "jsma",
        "JSMA",
        "JacobianSaliencyMapAttack",
        {"theta": 1.0, "gamma": 1.0, "comply_cleverhans": False},
        needs_num_classes=True,
        targeted_only=True,
        cap=_cap_jsma,
    ),
    "cw": AttackSpec(
        "cw",
        "CW",
        "CarliniWagnerL2Attack",
        {
            "confidence": 0,
            "targeted": False,
            "learning_rate": 0.01,
            "binary_search_steps": 9,
            "max_iterations": 10000,
            "abort_early": True,
            "initial_const": 1e-3,
        },
        needs_num_classes=True,
        cap=_cap_cw,
    ),
    "onepixel": AttackSpec(
        "onepixel",
        "OnePixel",
        "SinglePixelAttack",
        {"max_pixels": 100, "comply_with_foolbox": False, "targeted": False},
        gradient_free=True,
        cap=_cap_onepixel,
        fix=_fix_onepixel,
    ),
    "localsearch": AttackSpec(
        "localsearch",
        "LocalSearch",
        "LocalSearchAttack",
        {
            "p": 1.0,
            "r": 1.5,
            "d": 5,
            "t": 5,
            "k": 1,
            "round_ub": 10,
            "seed_ratio": 0.1,
            "max_nb_seeds": 128,
            "comply_with_foolbox": False,
            "targeted": False,
        },
        gradient_free=True,
        cap=_cap_localsearch,
    ),
}


def available_attacks() -> list[str]:
    """Names accepted by :func:`build_attack` / :func:`generate_adversarial`."""
    return list(ATTACKS)


def get_spec(name: str) -> AttackSpec:
    """Look up an attack by name.

    Raises:
        KeyError: Unknown name; the message lists the valid ones.
    """
    try:
        return ATTACKS[name]
    except KeyError:
        raise KeyError(f"unknown attack {name!r}; valid choices: {available_attacks()}") from None


def build_attack(
    model: nn.Module,
    attack: str,
    *,
    num_classes: int,
    image_shape: tuple[int, ...],
    iteration_cap: int | None = None,
    clip_min: float = 0.0,
    clip_max: float = 1.0,
    **overrides: Any,
) -> tuple[Any, dict[str, Any]]:
    """Instantiate an advertorch attack on ``model`` with advertorch's defaults.

    Args:
        model: Maps images ``(B, C, H, W)`` in ``[clip_min, clip_max]`` to logits ``(B, classes)``.
        attack: Registry name, one of :func:`available_attacks`.
        num_classes: Number of classes (JSMA and CW need it).
        image_shape: ``(C, H, W)``, used by the iteration cap of JSMA.
        iteration_cap: Optional cap on the attack's iterations (see ``AttackSpec.cap``); it
            never raises a default, only lowers it.
        clip_min: Lowest pixel value.
        clip_max: Highest pixel value.
        **overrides: Any constructor argument of the advertorch class (``targeted=False`` is
            accepted and ignored: only untargeted attacks are supported).

    Returns:
        ``(attack_object, params)`` where ``params`` are the effective settings (defaults
        updated by cap and overrides) for the record.

    Raises:
        KeyError: Unknown attack name.
        ValueError: ``iteration_cap < 1`` or an override the class does not accept.
    """
    spec = get_spec(attack)
    overrides = dict(overrides)
    if overrides.pop("targeted", False):
        # Paper 1 uses untargeted samples; a targeted run would need target labels instead.
        raise ValueError(
            f"attack {attack!r}: only untargeted attacks are supported (targeted=False)"
        )
    unknown = sorted(set(overrides) - set(spec.defaults))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {unknown} for attack {attack!r}; valid: {sorted(spec.defaults)}"
        )
    kwargs: dict[str, Any] = dict(overrides)
    if iteration_cap is not None:
        if iteration_cap < 1:
            raise ValueError(f"iteration_cap must be >= 1 or None, got {iteration_cap}")
        # A cap only ever lowers the effective value (override or library default).
        for key, value in spec.cap(int(iteration_cap), tuple(image_shape)).items():
            current = kwargs.get(key, spec.defaults.get(key))
            kwargs[key] = value if current is None else min(value, current)
    kwargs = spec.fix(kwargs, tuple(image_shape))
    module = import_advertorch()
    cls = getattr(module, spec.class_name)
    extra: dict[str, Any] = {"clip_min": clip_min, "clip_max": clip_max}
    if spec.needs_num_classes:
        extra["num_classes"] = num_classes
    obj = cls(model, **extra, **kwargs)
    params = {**spec.defaults, **kwargs, "clip_min": clip_min, "clip_max": clip_max}
    if spec.needs_num_classes:
        params["num_classes"] = num_classes
    return obj, params


@dataclass
class AdversarialResult:
    """Outcome of one attack on a set of images.

    Attributes:
        attack: Registry name.
        adv_images: ``(n, C, H, W)`` attacked images in ``[0, 1]`` (the clean image where the
            sample was not attacked because the model already misclassified it).
        labels: ``(n,)`` true labels.
        clean_pred: ``(n,)`` predictions on the clean images.
        adv_pred: ``(n,)`` predictions on ``adv_images``.
        success_mask: ``(n,)`` bool: clean prediction correct and adversarial prediction wrong.
        success_rate: successes / correctly classified clean images (NaN when none is correct).
        targets: ``(n,)`` target classes for targeted-only attacks (JSMA), else None.
        params: Effective attack settings.
        seconds: Wall-clock time of the attack.
    """

    attack: str
    adv_images: Tensor
    labels: Tensor
    clean_pred: Tensor
    adv_pred: Tensor
    success_mask: Tensor
    success_rate: float
    targets: Tensor | None
    params: dict[str, Any]
    seconds: float

    @property
    def num_success(self) -> int:
        """Number of successful adversarial samples."""
        return int(self.success_mask.sum())

    @property
    def num_clean_correct(self) -> int:
        """Number of clean images the model classifies correctly (the attacked ones)."""
        return int((self.clean_pred == self.labels).sum())

    def successful(self) -> tuple[Tensor, Tensor, Tensor]:
        """Only the successful adversarial samples.

        Returns:
            ``(images (s, C, H, W), true labels (s,), positions (s,))`` where ``positions``
            index the input images.
        """
        positions = torch.nonzero(self.success_mask, as_tuple=False).flatten()
        return self.adv_images[positions], self.labels[positions], positions

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (no tensors)."""
        return {
            "attack": self.attack,
            "n_images": len(self.labels),
            "n_clean_correct": self.num_clean_correct,
            "n_success": self.num_success,
            "success_rate": self.success_rate,
            "seconds": self.seconds,
            "params": self.params,
        }


@contextlib.contextmanager
def _frozen_eval(model: nn.Module) -> Iterator[None]:
    """Eval mode and parameters without grad (attacks differentiate w.r.t. inputs only)."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def _model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def _predict(model: nn.Module, images: Tensor, batch_size: int) -> Tensor:
    out = [model(chunk).argmax(dim=1) for chunk in images.split(batch_size)]
    return torch.cat(out) if out else images.new_zeros(0, dtype=torch.long)


def random_targets(labels: Tensor, num_classes: int, seed: int) -> Tensor:
    """A seeded target class different from each label (for targeted-only attacks).

    Args:
        labels: ``(n,)`` true labels in ``[0, num_classes)``.
        num_classes: Number of classes (>= 2).
        seed: Seed of the generator.

    Returns:
        ``(n,)`` long tensor with ``targets[i] != labels[i]``.
    """
    generator = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, num_classes, labels.shape, generator=generator)
    return (labels.cpu() + shift) % num_classes


def generate_adversarial(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    attack: str,
    *,
    num_classes: int | None = None,
    batch_size: int = 128,
    iteration_cap: int | None = None,
    seed: int = 0,
    progress: bool = True,
    **overrides: Any,
) -> AdversarialResult:
    """Attack ``images`` (untargeted) and report which samples became adversarial.

    Args:
        model: Takes ``(B, C, H, W)`` images in ``[0, 1]`` (normalisation inside) and returns
            logits ``(B, num_classes)``. Put in eval mode for the attack; its parameters are
            not touched.
        images: ``(n, C, H, W)`` float images in ``[0, 1]``.
        labels: ``(n,)`` integer labels in ``[0, num_classes)``.
        attack: One of :func:`available_attacks`.
        num_classes: Number of classes; inferred from one forward pass when None.
        batch_size: Images per attack call.
        iteration_cap: Cap on iterations for tests and CPU runs (None: advertorch defaults).
        seed: Seeds torch's RNG (PGD's random start, OnePixel/LocalSearch pixel order) and the
            JSMA targets.
        progress: Log the attack's start, progress (images done, ETA) and end
            (:class:`dnn_modularity.progress.Progress`; a log file sees it, unlike a bar).
        **overrides: Constructor arguments of the advertorch class.

    Returns:
        The :class:`AdversarialResult` (all images; use ``.successful()`` for the kept ones).

    Raises:
        ValueError: Bad shapes, pixel values outside ``[0, 1]`` or bad attack parameters.
        KeyError: Unknown attack name.
    """
    spec = get_spec(attack)
    if images.ndim != 4:
        raise ValueError(f"images must be (n, C, H, W), got shape {tuple(images.shape)}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(
            f"labels must be (n,) with n={len(images)}, got shape {tuple(labels.shape)}"
        )
    if len(images) and (float(images.min()) < 0.0 or float(images.max()) > 1.0):
        raise ValueError(
            f"images must be in [0, 1] (normalisation belongs inside the model), got "
            f"[{float(images.min()):.3g}, {float(images.max()):.3g}]"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = _model_device(model)
    images = images.detach().to(device, torch.float32)
    labels = labels.detach().to(device, torch.long)
    start = time.perf_counter()
    with _frozen_eval(model):
        clean_pred = _predict(model, images, batch_size)
        if num_classes is None:
            with torch.no_grad():
                num_classes = int(model(images[:1]).shape[1])
        obj, params = build_attack(
            model,
            attack,
            num_classes=num_classes,
            image_shape=tuple(images.shape[1:]),
            iteration_cap=iteration_cap,
            **overrides,
        )
        targets = (
            random_targets(labels, num_classes, seed).to(device) if spec.targeted_only else None
        )
        adv = images.clone()
        todo = torch.nonzero(clean_pred == labels, as_tuple=False).flatten()
        torch.manual_seed(seed)
        grad_ctx = torch.no_grad if spec.gradient_free else contextlib.nullcontext
        with Progress(
            f"{spec.paper_name} attack", len(todo), unit="images", enabled=progress
        ) as report:
            for chunk in todo.split(batch_size):
                y = targets[chunk] if targets is not None else labels[chunk]
                with grad_ctx():
                    out = obj.perturb(images[chunk], y)
                adv[chunk] = out.detach().clamp_(0.0, 1.0)
                report.advance(len(chunk))
        adv_pred = _predict(model, adv, batch_size)
    correct = clean_pred == labels
    success = correct & (adv_pred != labels)
    n_correct = int(correct.sum())
    rate = float(success.sum()) / n_correct if n_correct else float("nan")
    return AdversarialResult(
        attack=attack,
        adv_images=adv.cpu(),
        labels=labels.cpu(),
        clean_pred=clean_pred.cpu(),
        adv_pred=adv_pred.cpu(),
        success_mask=success.cpu(),
        success_rate=rate,
        targets=targets.cpu() if targets is not None else None,
        params=params,
        seconds=time.perf_counter() - start,
    )
