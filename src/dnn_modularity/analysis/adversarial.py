"""Modularity curves of adversarial samples beside the clean curve (paper 1 Sec. 4.2, Fig. 6a).

Paper 1 attacks a trained CIFAR-10 VGG16 / ResNet18 with FGSM, PGD, JSMA, CW, OnePixel and
LocalSearch (advertorch defaults, untargeted), takes 500 successful adversarial samples per
attack and draws their modularity curve (k-NN graph, true labels as communities): adversarial
curves peak lower than the clean one. Here, per attack:

1. :func:`dnn_modularity.attacks.generate_adversarial` on a class-balanced pool of test images
   (pixel space [0, 1], normalisation inside the model); the success rate is recorded;
2. up to ``n_samples`` successful samples are drawn (seeded) and their curve is computed with
   their *true* labels; the curve of the same images before the attack (``clean_paired``) goes
   into the record too, so the drop is measured on identical samples;
3. an attack that raises is recorded with ``status=failed`` and the reason, and the others go on.

The reference line of the figure is the clean curve on the same number of images as the
adversarial curves: ``clean`` (``run`` draws a probe set of ``n_samples`` images with the probe
strategy, so the sequential strategy gives the first N test images, like the official code), else
the first ``n_samples`` images of the pool. Which successful samples are used: ``pick="random"``
(paper 1's text: "we randomly choose 500 adversarial samples") or ``"first"`` (the official code:
the first successes in pool order).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from dnn_modularity.analysis.common import AnalysisOutput, layer_modularity, metric_key
from dnn_modularity.attacks import generate_adversarial, get_spec
from dnn_modularity.plots_analysis import CurveSeries, plot_adversarial

__all__ = ["PICKS", "adversarial_analysis", "run"]

#: How the successful adversarial samples of an attack are chosen.
PICKS = ("random", "first")

_COLORS = ["#d62728", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def _curve_rows(
    curve: Any, *, variant: str, attack: str, key_prefix: str | None, base: Mapping[str, Any]
) -> list[dict[str, Any]]:
    (values,) = curve.values.values()
    return [
        {
            "analysis": "adversarial",
            "variant": variant,
            "attack": attack,
            "layer_index": index,
            "layer": name,
            **base,
            "measure": "modularity",
            "key": metric_key("modularity", index, key_prefix),
            "value": value,
        }
        for index, name, value in zip(curve.indices, curve.names, values, strict=True)
    ]


def adversarial_analysis(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    attacks: Mapping[str, Mapping[str, Any]],
    *,
    n_samples: int = 500,
    k: int = 3,
    metric: str = "cosine",
    taps: Any = "block",
    seed: int = 0,
    batch_size: int = 256,
    block_size: int | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = True,
    title: str = "",
    pick: str = "random",
    clean: tuple[Tensor, Tensor] | None = None,
) -> AnalysisOutput:
    """Attack a pool of images with each attack and compare adversarial and clean curves.

    Args:
        model: Takes images in [0, 1] and returns logits.
        images: ``(n, C, H, W)`` pool of clean test images in [0, 1].
        labels: ``(n,)`` true labels.
        attacks: Attack name -> settings: optional ``iteration_cap`` (cap), ``batch_size``
            (images per attack call) and ``params`` (advertorch constructor overrides).
        n_samples: Successful samples used per attack curve (paper 1: 500).
        k: Neighbours per node.
        metric: ``cosine`` or ``pearson``.
        taps: Tap selection.
        seed: Seed of the attacks and of the sample draw.
        batch_size: Images per forward pass of the curves.
        block_size: Engine block size.
        dtype: Optional feature dtype.
        progress: Progress bars for the attacks.
        title: Figure title.
        pick: ``random`` (a seeded draw of ``n_samples`` successes, paper 1's text) or ``first``
            (the first ``n_samples`` successes in pool order, the official code).
        clean: ``(images (N, C, H, W), labels (N,))`` of the clean reference curve; default:
            the first ``n_samples`` images of the pool (the same N as the adversarial curves).

    Returns:
        :class:`AnalysisOutput` named ``adversarial``: tidy curve rows (variants ``clean``,
        ``adversarial``, ``clean_paired``), one summary row per attack (status, success rate,
        counts, time, parameters), figure ``adversarial`` and metric keys
        ``modularity/layer_07`` (clean), ``adv_pgd/modularity/layer_07``,
        ``adv_pgd/success_rate``.

    Raises:
        KeyError: An unknown attack name (before anything runs).
    """
    for name in attacks:
        get_spec(name)  # fail fast on typos, before minutes of attacking
    if pick not in PICKS:
        raise ValueError(f"unknown pick {pick!r}; valid choices: {list(PICKS)}")
    common = {
        "k": k,
        "metric": metric,
        "taps": taps,
        "batch_size": batch_size,
        "block_size": block_size,
        "dtype": dtype,
    }
    tap_name = taps if isinstance(taps, str) else "custom"
    base = {"tap": tap_name, "k": k, "metric": metric, "seed": seed}
    labels = labels.long().cpu()
    if clean is None:
        clean = (images[:n_samples], labels[:n_samples])
    clean_images, clean_labels = clean[0], torch.as_tensor(clean[1]).long().cpu()
    clean_curve = layer_modularity(model, clean_images, {"clean": clean_labels}, **common)
    rows = _curve_rows(
        clean_curve,
        variant="clean",
        attack="",
        key_prefix=None,
        base={**base, "N": len(clean_labels)},
    )
    series = [
        CurveSeries(
            f"clean (N={len(clean_labels)})",
            clean_curve.values["clean"],
            style={"color": "black", "linewidth": 2.2},
        )
    ]
    summary: list[dict[str, Any]] = []
    rates: dict[str, float] = {}
    metrics: dict[str, float] = {r["key"]: r["value"] for r in rows}
    for i, (name, settings) in enumerate(attacks.items()):
        settings = dict(settings or {})
        record: dict[str, Any] = {
            "analysis": "adversarial",
            "attack": name,
            "status": "ok",
            "reason": "",
            "n_images": len(labels),
        }
        try:
            result = generate_adversarial(
                model,
                images,
                labels,
                name,
                iteration_cap=settings.get("iteration_cap"),
                batch_size=int(settings.get("batch_size") or batch_size),
                seed=seed,
                progress=progress,
                **dict(settings.get("params") or {}),
            )
        except Exception as error:  # an attack that cannot run must not sink the others
            record.update(
                status="failed",
                reason=f"{type(error).__name__}: {error}",
                success_rate=float("nan"),
            )
            rates[name] = float("nan")
            summary.append(record)
            continue
        rates[name] = result.success_rate
        metrics[f"adv_{name}/success_rate"] = result.success_rate
        adv, adv_labels, positions = result.successful()
        if len(adv) > n_samples:
            if pick == "first":
                chosen = torch.sort(positions).indices[:n_samples]
            else:
                generator = torch.Generator().manual_seed(seed)
                chosen = torch.randperm(len(adv), generator=generator)[:n_samples]
            chosen = torch.sort(chosen).values
            adv, adv_labels, positions = adv[chosen], adv_labels[chosen], positions[chosen]
        record.update(
            success_rate=result.success_rate,
            n_clean_correct=result.num_clean_correct,
            n_success=result.num_success,
            n_used=len(adv),
            seconds=result.seconds,
            params=result.params,
        )
        if len(adv) <= k or len(torch.unique(adv_labels)) < 2:
            record.update(
                status="too_few_samples",
                reason=f"{len(adv)} successful samples in "
                f"{len(torch.unique(adv_labels))} classes; a k-NN graph with "
                f"k={k} needs more than k samples from at least 2 classes",
            )
            summary.append(record)
            continue
        adv_curve = layer_modularity(model, adv, {"adv": adv_labels}, **common)
        paired = layer_modularity(model, images[positions], {"clean": adv_labels}, **common)
        extra = {**base, "N": len(adv_labels)}
        new_rows = _curve_rows(
            adv_curve, variant="adversarial", attack=name, key_prefix=f"adv_{name}", base=extra
        )
        new_rows += _curve_rows(
            paired, variant="clean_paired", attack=name, key_prefix=f"clean_{name}", base=extra
        )
        rows += new_rows
        metrics.update({r["key"]: r["value"] for r in new_rows})
        series.append(
            CurveSeries(
                f"{get_spec(name).paper_name} ({result.success_rate * 100:.0f}%)",
                adv_curve.values["adv"],
                style={"color": _COLORS[i % len(_COLORS)]},
            )
        )
        summary.append(record)
    fig = plot_adversarial(
        series,
        {get_spec(n).paper_name: r for n, r in rates.items()},
        title=title,
        layer_names=clean_curve.names,
    )
    meta = {
        "settings": {
            "n_pool": len(labels),
            "n_samples": n_samples,
            "n_clean": len(clean_labels),
            "pick": pick,
            **common,
            "dtype": str(dtype),
            "attacks": {n: dict(s or {}) for n, s in attacks.items()},
        },
        "attacks": summary,
        "layers": clean_curve.names,
        "failed": {r["attack"]: r["reason"] for r in summary if r["status"] != "ok"},
    }
    return AnalysisOutput(
        "adversarial",
        rows=rows,
        summary=summary,
        meta=meta,
        figures={"adversarial": fig},
        metrics=metrics,
    )


def run(cfg: Any) -> dict[str, Any]:
    """Hydra-facing entry: ``python -m dnn_modularity.analyze analysis=adversarial``."""
    from omegaconf import OmegaConf

    from dnn_modularity.analysis.context import finish, load_context, probe_sets

    ctx = load_context(cfg)
    a = cfg.analysis
    (pool,) = probe_sets(ctx, repeats=1, n=int(a.pool_size))
    chosen = list(a.attacks)
    settings = OmegaConf.to_container(cfg.attacks, resolve=True) if "attacks" in cfg else {}
    missing = [n for n in chosen if n not in settings]
    if missing:
        raise KeyError(f"no config for attack(s) {missing}; configured: {sorted(settings)}")
    attacks = {n: settings[n] for n in chosen}
    # The clean reference on the same N as the adversarial curves, drawn like any probe set.
    (reference,) = probe_sets(ctx, repeats=1, n=min(int(a.n_samples), int(a.pool_size)))
    output = adversarial_analysis(
        ctx.model,
        pool.images,
        pool.labels,
        attacks,
        n_samples=int(a.n_samples),
        k=int(cfg.graph.k),
        metric=str(cfg.graph.metric),
        taps=ctx.taps,
        seed=int(cfg.seed),
        batch_size=int(cfg.batch_size),
        block_size=ctx.block_size,
        dtype=ctx.feature_dtype,
        progress=bool(a.progress),
        title=ctx.title("adversarial samples"),
        pick=str(a.get("pick", "random")),
        clean=(reference.images, reference.labels),
    )
    return finish(ctx, output)
