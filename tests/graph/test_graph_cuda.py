"""The engine on CUDA: each kernel gives the official graph, and the CPU graph up to float32 ties.

Each test runs on the CPU too (the ``cpu`` parameter), so the checks themselves are exercised on
every machine; the ``cuda`` parameter is marked ``gpu`` and skipped without CUDA.

Exact ties and exactly representable similarities: rows with four entries ±1 (norm 2, so the
normalised entries are ±0.5) have similarities m/4 for integers m, exact in bf16, fp16 and float32
whatever the summation order, so every device and kernel must give the official algorithm's graph
bit for bit, ties broken by the lower index. Random features: two float32 evaluations of a dot
product may differ in the last bits (another summation order), so the CUDA graph must equal the
CPU graph except in rows whose k-th and (k+1)-th similarities are that close.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from graph_reference import edge_dict, float32_dot_bound, official_modularity

from dnn_modularity.graph import (
    kernels,
    knn_graph,
    knn_modularity,
    modularity,
    normalize_features,
    similarity,
)
from dnn_modularity.graph.keys import decode_keys
from dnn_modularity.graph.knn import choose_kernel, knn_keys

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
KERNELS = ["float32", "bfloat16", "float16"]


@pytest.fixture(autouse=True)
def fresh_cache():
    kernels.clear_speed_cache()
    yield
    kernels.clear_speed_cache()


def signed_four_hot(n: int, dim: int, seed: int) -> torch.Tensor:
    """(n, dim) rows with exactly four entries ±1: similarities m/4, exact in every dtype."""
    gen = torch.Generator().manual_seed(seed)
    feats = torch.zeros(n, dim)
    cols = torch.rand(n, dim, generator=gen).argsort(1)[:, :4]
    signs = torch.randint(0, 2, (n, 4), generator=gen).float() * 2 - 1
    feats.scatter_(1, cols, signs)
    return feats


def planted(n: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 8, (n,), generator=gen)
    feats = torch.randn(8, dim, generator=gen)[labels] * 0.5 + torch.randn(n, dim, generator=gen)
    return feats.relu(), labels


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(("n", "route"), [(400, "dense"), (1100, "strips")])
def test_exact_ties_give_the_official_graph_on_every_kernel(device, kernel, n, route, monkeypatch):
    if route == "strips":
        monkeypatch.setattr(similarity, "DENSE_MAX_N", -1)
    feats = signed_four_hot(n, 12, seed=n)
    labels = torch.arange(n) % 5
    sim = (normalize_features(feats) @ normalize_features(feats).T).numpy()
    q_ref, edges_ref = official_modularity(sim, labels.numpy(), 4)
    graph = knn_graph(feats.to(device), k=4, block_size=128, kernel=kernel)
    assert graph.src.device.type == device
    assert edge_dict(graph) == edges_ref  # the same pairs (lower index first on ties), weights
    assert modularity(graph, labels.to(device)) == pytest.approx(q_ref, abs=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize(("n", "dim"), [(1500, 96), (5000, 300)])
def test_random_features_give_the_cpu_graph_up_to_float32_ties(device, kernel, n, dim):
    feats, labels = planted(n, dim, seed=dim)
    x = normalize_features(feats)
    k = 5
    got = knn_keys(x.to(device), k, 640, kernel=kernel).cpu()
    ref = knn_keys(x, k, 640, kernel="float32")
    v_got, c_got = decode_keys(got)
    _, c_ref = decode_keys(ref)
    bound = float32_dot_bound(dim)
    # every selected similarity is its pair's float32 dot product, within the bound of the CPU's
    exact = (x.double() @ x.double().T).numpy()
    rows = np.arange(n)[:, None]
    np.testing.assert_allclose(v_got.numpy(), exact[rows, c_got.numpy()], rtol=0, atol=bound)
    # rows whose neighbours differ: only where the CPU's k-th and (k+1)-th are within the bound
    differ = (c_got.sort(1).values != c_ref.sort(1).values).any(1).nonzero().flatten().tolist()
    np.fill_diagonal(exact, 0.0)
    for row in differ:
        ordered = np.sort(exact[row])[::-1]
        assert ordered[k - 1] - ordered[k] <= 2 * bound, (row, ordered[k - 1 : k + 1])
    assert len(differ) <= max(1, n // 1000)
    q_got = knn_modularity(feats.to(device), labels.to(device), k=k, kernel=kernel)
    q_ref = knn_modularity(feats, labels, k=k, kernel="float32")
    assert q_got == pytest.approx(q_ref, abs=1e-5 if differ else 1e-9)


@pytest.mark.parametrize("device", DEVICES)
def test_auto_kernel_choice_of_the_device_is_exact(device, monkeypatch):
    if device == "cpu":  # let a small call afford the probe (on CUDA: no timing, by capability)
        monkeypatch.setattr(kernels, "MIN_PROBE_CALL", 0)
        monkeypatch.setattr(kernels, "PROBE_SHARE", 1.0)
    n, dim = (20000, 2048) if device == "cuda" else (1500, 256)
    feats, labels = planted(n, dim, seed=1)
    x = normalize_features(feats.to(device))
    choice = choose_kernel(x, 3)
    assert choice.name in {"float32", *kernels.candidate_dtypes(x.device)}
    if device == "cuda":  # 4.1e11 multiply-adds: the screen where the GPU has tensor cores
        expected = (kernels.candidate_dtypes(x.device) or ("float32",))[0]
        assert choice.name == expected, choice.reason
        assert kernels.speed_table() == {}
    q_auto = knn_modularity(feats.to(device), labels.to(device), k=3)
    q_fp32 = knn_modularity(feats.to(device), labels.to(device), k=3, kernel="float32")
    assert q_auto == pytest.approx(q_fp32, abs=1e-9)
