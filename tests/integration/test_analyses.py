"""Every analysis end to end on digits with a ResNet-20 trained for a few seconds (plain loop).

Checks the papers' qualitative findings where a tiny model can show them: the trained curve
rises (last third above first third) and rises more than the random-init one (Fig. B12), the
shuffled-label null is ≈ 0, adversarial curves peak lower than clean ones (Fig. 6a).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from dnn_modularity.analysis.adversarial import adversarial_analysis
from dnn_modularity.analysis.curve import curve_analysis, rise
from dnn_modularity.analysis.difference import difference_analysis
from dnn_modularity.analysis.dynamics import (
    accuracy_by_epoch,
    checkpoint_epoch,
    dynamics_from_checkpoints,
    dynamics_from_history,
)
from dnn_modularity.analysis.histograms import histogram_analysis
from dnn_modularity.analysis.measure import (
    interval95,
    random_init_like,
    save_output,
    summarize_rows,
)
from dnn_modularity.analysis.ring import ring_analysis
from dnn_modularity.analysis.settings import AnalysisSettings
from dnn_modularity.data.probe import ProbeSet
from dnn_modularity.models import Normalized
from dnn_modularity.plots.curves import DPI
from dnn_modularity.plots.ring import INTER_CLASS_COLOR, class_palette
from dnn_modularity.records import ROW_COLUMNS, metric_key, read_csv_rows, write_csv_rows

NUM_LAYERS = 10  # resnet20 block taps: stem + 9 residual blocks


def _assert_png(path, figsize) -> None:
    """PNG written, non-empty, of the figure's size (tight bbox trims a few pixels)."""
    width, height = Image.open(path).size
    assert abs(width - figsize[0] * DPI) <= 0.06 * figsize[0] * DPI, (width, figsize)
    assert abs(height - figsize[1] * DPI) <= 0.06 * figsize[1] * DPI, (height, figsize)
    pixels = np.asarray(Image.open(path).convert("L"))
    assert pixels.std() > 5  # not a blank canvas


@pytest.fixture(scope="module")
def probes(digits):
    return [ProbeSet.from_datamodule(digits, 100, seed=0, repeat=r) for r in range(3)]


def test_curve_rises_after_training_and_nulls_behave(digits_resnet20, probes, tmp_path) -> None:
    out = curve_analysis(digits_resnet20, probes, AnalysisSettings(k=3))
    by_variant = {
        v: [r["mean"] for r in out.summary if r["variant"] == v]
        for v in ("trained", "random_init", "shuffled")
    }
    assert all(len(values) == NUM_LAYERS for values in by_variant.values())
    trained_curve = np.array(by_variant["trained"])
    third = NUM_LAYERS // 3
    assert trained_curve[-third:].mean() > trained_curve[:third].mean()
    assert rise(by_variant["trained"]) > rise(by_variant["random_init"]) + 0.05
    assert max(abs(v) for v in by_variant["shuffled"]) < 0.05  # null ≈ 0
    assert out.meta["rise_last_minus_first_third"]["trained"] == pytest.approx(
        rise(by_variant["trained"])
    )
    # 3 repeats x 3 variants x 10 layers, with the record's columns.
    assert len(out.rows) == 3 * 3 * NUM_LAYERS
    assert set(ROW_COLUMNS) <= set(out.rows[0])
    for row in out.summary:
        assert row["n"] == 3 and row["ci95_low"] <= row["mean"] <= row["ci95_high"]
    assert out.metrics[metric_key("modularity", 7)] == pytest.approx(trained_curve[6])
    assert "random_init/modularity/layer_07" in out.metrics
    written = save_output(out, tmp_path)
    header = read_csv_rows(tmp_path / "curve.csv")[0]
    assert list(header)[: len(ROW_COLUMNS)] == list(ROW_COLUMNS)
    assert len(read_csv_rows(tmp_path / "curve_summary.csv")) == 3 * NUM_LAYERS
    meta = json.loads((tmp_path / "curve.json").read_text())
    assert meta["analysis"] == "curve" and meta["settings"]["repeats"] == 3
    png, pdf = written["figures"]["curve"]
    _assert_png(png, (6.4, 4.0))
    assert pdf.stat().st_size > 1000


def test_random_init_is_a_fresh_network_of_the_same_architecture(digits_resnet20) -> None:
    fresh = random_init_like(digits_resnet20, seed=1)
    assert isinstance(fresh, Normalized)
    assert fresh.arch_config() == digits_resnet20.arch_config()
    assert torch.equal(fresh.mean, digits_resnet20.mean)
    same = random_init_like(digits_resnet20, seed=1)
    first = next(fresh.parameters())
    assert torch.equal(first, next(same.parameters()))  # seeded
    assert not torch.equal(first, next(digits_resnet20.parameters()))


def test_adversarial_curves_peak_lower_and_failures_are_recorded(digits_resnet20, digits, tmp_path):
    pool = ProbeSet.from_datamodule(digits, 120, seed=0)
    attacks = {"fgsm": {}, "pgd": {"iteration_cap": 10}, "cw": {"params": {"bogus": 1}}}
    out = adversarial_analysis(
        digits_resnet20, pool.images, pool.labels, attacks, n_samples=100, progress=False
    )
    status = {r["attack"]: r for r in out.summary}
    assert status["fgsm"]["status"] == "ok" and status["fgsm"]["success_rate"] > 0.8
    assert status["pgd"]["status"] == "ok" and status["pgd"]["n_used"] <= 100
    assert status["cw"]["status"] == "failed" and "bogus" in status["cw"]["reason"]
    assert math.isnan(status["cw"]["success_rate"])
    clean = [out.metrics[metric_key("modularity", i)] for i in range(1, NUM_LAYERS + 1)]
    for name in ("fgsm", "pgd"):
        adv = [
            out.metrics[f"adv_{name}/modularity/{k}"]
            for k in (f"layer_{i:02d}" for i in range(1, NUM_LAYERS + 1))
        ]
        assert max(adv) < max(clean) - 0.1  # Fig. 6a: adversarial samples peak lower
        assert f"adv_{name}/success_rate" in out.metrics
    variants = {r["variant"] for r in out.rows}
    assert variants == {"clean", "adversarial", "clean_paired"}
    written = save_output(out, tmp_path)
    _assert_png(written["figures"]["adversarial"][0], (10.0, 4.0))
    assert len(read_csv_rows(tmp_path / "adversarial_summary.csv")) == 3


def test_adversarial_clean_curve_has_the_same_n_and_pick_first_takes_the_first(
    digits_resnet20, digits
):
    """Fig. 6a: clean and adversarial curves on the same N; the official code's first successes."""
    pool = ProbeSet.from_datamodule(digits, 150, strategy="sequential")
    kw = {"n_samples": 60, "progress": False}
    first = adversarial_analysis(
        digits_resnet20, pool.images, pool.labels, {"fgsm": {}}, pick="first", **kw
    )
    n_of = {r["variant"]: r["N"] for r in first.rows}
    assert n_of["clean"] == 60 == n_of["adversarial"]  # not the pool's 150
    assert first.meta["settings"]["n_clean"] == 60 and first.meta["settings"]["pick"] == "first"
    rnd = adversarial_analysis(digits_resnet20, pool.images, pool.labels, {"fgsm": {}}, **kw)
    # "first" = the first 60 successes in pool order: their clean images are a prefix of the
    # pool's successes, so their paired clean curve differs from a random draw's
    paired = {
        name: [r["value"] for r in out.rows if r["variant"] == "clean_paired"]
        for name, out in (("first", first), ("random", rnd))
    }
    assert paired["first"] != pytest.approx(paired["random"])
    # the clean reference is the first 60 images of the pool unless given
    clean = [r["value"] for r in first.rows if r["variant"] == "clean"]
    from dnn_modularity.analysis.measure import layer_modularity

    expected = layer_modularity(
        digits_resnet20, pool.images[:60], {"c": pool.labels[:60]}, AnalysisSettings(k=3)
    )
    assert clean == pytest.approx(expected.values["c"])
    with pytest.raises(ValueError, match=r"unknown pick 'all'.*first"):
        adversarial_analysis(
            digits_resnet20, pool.images, pool.labels, {"fgsm": {}}, pick="all", **kw
        )


def test_difference_matches_cka_structure(digits_resnet20, probes, tmp_path) -> None:
    out = difference_analysis(
        digits_resnet20, probes[0].images, probes[0].labels, AnalysisSettings(k=3)
    )
    diff = np.zeros((NUM_LAYERS, NUM_LAYERS))
    cka = np.zeros((NUM_LAYERS, NUM_LAYERS))
    for row in out.rows:
        if row["measure"] == "abs_delta_modularity":
            diff[row["layer_index"] - 1, row["layer_j_index"] - 1] = row["value"]
        elif row["measure"] == "linear_cka":
            cka[row["layer_index"] - 1, row["layer_j_index"] - 1] = row["value"]
    curve = np.array(out.meta["curve"])
    np.testing.assert_allclose(diff, np.abs(curve[:, None] - curve[None, :]), atol=1e-9)
    np.testing.assert_allclose(np.diag(cka), 1.0, atol=1e-4)
    np.testing.assert_allclose(cka, cka.T, atol=1e-6)
    # Fig. 8: layers far apart differ in both views; the two views agree on trained nets.
    assert out.meta["agreement_abs_delta_m_vs_1_minus_cka"]["pearson"] > 0.3
    written = save_output(out, tmp_path)
    _assert_png(written["figures"]["difference"][0], (11.0, 4.8))


def test_histograms_count_every_pair(digits_resnet20, digits, tmp_path) -> None:
    n = 150
    (probe,) = [ProbeSet.from_datamodule(digits, n, seed=0)]
    out = histogram_analysis(digits_resnet20, probe.images, bins=10)
    per_layer: dict[int, list[dict]] = {}
    for row in out.rows:
        per_layer.setdefault(row["layer_index"], []).append(row)
    assert len(per_layer) == NUM_LAYERS
    for rows in per_layer.values():
        assert len(rows) == 12  # 10 bins + underflow + overflow
        assert sum(r["count"] for r in rows) == n * (n - 1) // 2
        assert sum(r["value"] for r in rows) == pytest.approx(1.0)
        assert [r["bin_low"] for r in rows[:10]] == pytest.approx(np.linspace(0, 0.9, 10))
    assert all(0.0 <= v <= 1.0 for k, v in out.metrics.items() if "low_share" in k)
    written = save_output(out, tmp_path)
    _assert_png(written["figures"]["histograms"][0], (12.0, 7.2))  # 4 x 3 panels of 3 x 2.4 in
    # Every record has the common columns (k and repeat empty: histograms use neither).
    header = read_csv_rows(tmp_path / "histograms.csv")[0]
    assert list(header)[: len(ROW_COLUMNS)] == list(ROW_COLUMNS)
    assert header["k"] == "" and header["N"] == str(n)


def test_ring_graphs_and_m_vs_q(digits_resnet20, probes, tmp_path) -> None:
    num_edges = 300
    out = ring_analysis(
        digits_resnet20,
        probes[0].images,
        probes[0].labels,
        AnalysisSettings(k=3),
        num_edges=num_edges,
        gif_frame_seconds=0.2,
    )
    values: dict[str, list[float]] = {}
    for row in out.rows:
        values.setdefault(row["measure"], []).append(row["value"])
    assert all(len(v) == NUM_LAYERS for v in values.values())
    for intra, inter, r in zip(
        values["intra_edges"], values["inter_edges"], values["r"], strict=True
    ):
        assert intra + inter == num_edges
        assert r == pytest.approx(intra / num_edges)
    # Paper 2 Figs. 6-9: wrong (red) edges give way to intra-class ones with depth.
    assert values["r"][-1] > values["r"][0]
    assert values["M"][-1] > values["M"][0]
    assert values["modularity"] == pytest.approx(out.meta["curves"]["modularity"])
    written = save_output(out, tmp_path)
    _assert_png(written["figures"]["ring_grid"][0], (12.0, 9.5))
    _assert_png(written["figures"]["m_vs_q"][0], (6.4, 4.0))
    gif = Image.open(tmp_path / "figures" / "ring.gif")
    assert gif.n_frames == NUM_LAYERS and gif.size == (500, 540)


def test_dynamics_from_checkpoints_tracks_accuracy(
    digits_resnet20, probes, digits, tmp_path
) -> None:
    test = ProbeSet.from_datamodule(digits, len(digits.test_labels()), strategy="sequential")
    untrained = random_init_like(digits_resnet20, seed=0)
    out = dynamics_from_checkpoints(
        [(4, digits_resnet20), (0, untrained)],
        probes[0].images,
        probes[0].labels,
        AnalysisSettings(k=3),
        test_images=test.images,
        test_labels=test.labels,
    )
    acc = {r["epoch"]: r["value"] for r in out.rows if r["measure"] == "accuracy"}
    assert acc[4] > 0.8 > acc[0]
    curves = {
        e: [r["value"] for r in out.rows if r["measure"] == "modularity" and r["epoch"] == e]
        for e in (0, 4)
    }
    assert curves[4][-1] > curves[0][-1]  # deep layers follow the accuracy (Fig. 6b)
    assert out.meta["epochs"] == [0, 4]
    written = save_output(out, tmp_path)
    _assert_png(written["figures"]["dynamics"][0], (7.2, 4.2))


def test_dynamics_from_history_reads_the_training_records(tmp_path) -> None:
    rows = [
        {
            "epoch": e,
            "layer_index": i,
            "layer": f"l{i}",
            "tap": "block",
            "N": 100,
            "k": 3,
            "metric": "cosine",
            "modularity": 0.1 * i + 0.01 * e,
            "M": "",
            "seed": 0,
            "repeat": r,
        }
        for e in range(3)
        for i in range(1, 5)
        for r in range(2)
    ]
    write_csv_rows(tmp_path / "modularity.csv", rows)
    metrics = [
        {"epoch": e, "step": 10 * e, "val/acc": 0.5 + 0.1 * e, "train/loss": ""} for e in range(3)
    ]
    metrics.append({"epoch": 2, "step": 31, "val/acc": "", "train/loss": 0.3})
    write_csv_rows(tmp_path / "metrics.csv", metrics)
    key, acc = accuracy_by_epoch(tmp_path / "metrics.csv")
    # Lightning's epoch column is the 0-based epoch a val metric ran in; the record uses epochs
    # completed (modularity.csv's convention: 0 = initialisation), so val/acc of epoch 0 is at 1.
    assert key == "val/acc" and acc == pytest.approx({1: 0.5, 2: 0.6, 3: 0.7})
    # A training run's metrics.csv logs test/acc once, after the last epoch: the per-epoch
    # curve must come from val/acc, not from that single point.
    with_test = [{**row, "test/acc": ""} for row in metrics]
    with_test.append({"epoch": 2, "step": 32, "val/acc": "", "train/loss": "", "test/acc": 0.9})
    write_csv_rows(tmp_path / "metrics_with_test.csv", with_test)
    key, acc = accuracy_by_epoch(tmp_path / "metrics_with_test.csv")
    assert key == "val/acc" and len(acc) == 3
    explicit = accuracy_by_epoch(tmp_path / "metrics_with_test.csv", "test/acc")
    assert explicit == ("test/acc", {2: 0.9})  # test/* is logged at epochs-done already
    out = dynamics_from_history(tmp_path / "modularity.csv", tmp_path / "metrics.csv")
    assert out.metrics["modularity/layer_04"] == pytest.approx(0.42)
    modularity_rows = [r for r in out.rows if r["measure"] == "modularity"]
    assert len(modularity_rows) == 24  # 3 epochs x 4 layers x 2 repeats, told apart by repeat
    assert {(r["epoch"], r["layer_index"], r["repeat"]) for r in modularity_rows} == {
        (e, i, str(r)) for e in range(3) for i in range(1, 5) for r in range(2)
    }
    with pytest.raises(ValueError, match="'M'"):
        dynamics_from_history(tmp_path / "modularity.csv", measure="M")
    with pytest.raises(ValueError, match="test/acc"):
        accuracy_by_epoch(tmp_path / "modularity.csv")
    save_output(out, tmp_path / "out")
    assert (tmp_path / "out" / "figures" / "dynamics.png").stat().st_size > 0


def test_checkpoint_epoch_from_name(tmp_path) -> None:
    # Epochs completed, modularity.csv's convention (0 = initialisation). EpochCheckpoint's
    # epoch_007 already counts completed epochs; Lightning's own `epoch=12` (name) and `epoch`
    # entry (file) are the 0-based index of the epoch that just finished: 13 completed.
    assert checkpoint_epoch("run/checkpoints/epochs/epoch_007.ckpt") == 7
    assert checkpoint_epoch("epoch=12-step=3.ckpt") == 13
    path = tmp_path / "last.ckpt"
    torch.save({"epoch": 5}, path)
    assert checkpoint_epoch(path) == 6
    progress = {"current": {"processed": 6, "completed": 5}}
    torch.save({"epoch": 5, "loops": {"fit_loop": {"epoch_progress": progress}}}, path)
    assert checkpoint_epoch(path) == 6


def test_statistics_helpers() -> None:
    mean, std, low, high = interval95([1.0, 2.0, 3.0])
    assert mean - low == pytest.approx(high - mean)
    assert (mean, std) == pytest.approx((2.0, 1.0))
    assert high - mean == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)  # t(0.975, 2)
    assert interval95([0.5]) == (0.5, 0.0, 0.5, 0.5)
    rows = [
        {
            "variant": "a",
            "measure": "m",
            "layer_index": 1,
            "layer": "x",
            "repeat": r,
            "seed": r,
            "value": float(r),
        }
        for r in range(4)
    ]
    (summary,) = summarize_rows(rows)
    assert summary["mean"] == 1.5 and summary["n"] == 4 and "repeat" not in summary


def test_class_palette_never_uses_the_inter_class_red() -> None:
    from matplotlib.colors import to_rgb

    red = np.array(to_rgb(INTER_CLASS_COLOR))
    for n in (2, 10, 18, 40):
        colors = class_palette(n)
        assert len(colors) == n and len(set(colors)) == n
        assert min(np.abs(np.array(c[:3]) - red).sum() for c in colors) > 0.2
