"""Kernel choice by measured speed: right on fast-bf16 and slow-bf16 machines, exact either way.

The machine running the tests has one kind of bf16 unit (fast AMX, slow emulation, or none at
all); the other kind is simulated by injecting the micro-benchmark's timings, so both decisions
are tested everywhere, and each is checked to give the exact graph.
"""

from __future__ import annotations

import gc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from graph_reference import (
    edge_dict,
    float32_dot_bound,
    official_modularity,
    pairwise_sim,
    strip_sim,
)

from dnn_modularity.graph import kernels, knn_graph, knn_modularity, normalize_features
from dnn_modularity.graph.knn import _StripSweep, choose_kernel, knn_keys

SLOW_BF16 = {torch.float32: 1.0, torch.bfloat16: 8.0}  # AVX2 EPYC: bf16 matmul ~8x slower
FAST_BF16 = {torch.float32: 1.0, torch.bfloat16: 0.25}  # AMX Xeon: bf16 ~4x faster


@pytest.fixture(autouse=True)
def fresh_cache():
    kernels.clear_speed_cache()
    yield
    kernels.clear_speed_cache()


@pytest.fixture
def timings(monkeypatch):
    """Inject matmul timings (seconds per multiply-add by dtype); returns the log of timed dtypes.

    Also lets small test problems afford a probe (PROBE_SHARE = 1, no smallest call).
    """
    log: list[torch.dtype] = []
    table: dict[torch.dtype, float] = {}

    def fake_time(a, b, runs, stop_above):
        log.append(a.dtype)
        return table[a.dtype] * a.shape[0] * b.shape[0] * a.shape[1]

    monkeypatch.setattr(kernels, "_time_matmul", fake_time)
    monkeypatch.setattr(kernels, "PROBE_SHARE", 1.0)
    monkeypatch.setattr(kernels, "MIN_PROBE_CALL", 0)
    monkeypatch.delenv(kernels.KERNEL_ENV, raising=False)

    def set_table(new: dict[torch.dtype, float]) -> list[torch.dtype]:
        table.clear()
        table.update(new)
        return log

    return set_table


def structured(n: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 6, (n,), generator=gen)
    feats = torch.randn(6, dim, generator=gen)[labels] * 0.5 + torch.randn(n, dim, generator=gen)
    return feats, labels


def test_slow_bf16_is_not_chosen_and_the_graph_is_exact(timings):
    timings(SLOW_BF16)
    feats, labels = structured(700, 256, 0)
    choice = choose_kernel(normalize_features(feats), 3)
    assert choice.dtype is None and "0.12x" in choice.reason
    q_ref, edges_ref = official_modularity(strip_sim(feats, "cosine"), labels.numpy(), 3)
    assert edge_dict(knn_graph(feats, k=3)) == edges_ref
    assert knn_modularity(feats, labels, k=3) == pytest.approx(q_ref, abs=1e-9)


def test_fast_bf16_is_chosen_and_the_graph_is_exact(timings, monkeypatch):
    timings(FAST_BF16)
    monkeypatch.setattr(_StripSweep, "MAX_SCREENED_FRACTION", float("inf"))  # screen to the end
    feats, labels = structured(700, 256, 1)
    choice = choose_kernel(normalize_features(feats), 3)
    assert choice.dtype == torch.bfloat16 and choice.name == "bfloat16"
    # exact with respect to the float32 dot products the screen recomputes ...
    q_ref, edges_ref = official_modularity(pairwise_sim(feats, "cosine"), labels.numpy(), 3)
    graph = edge_dict(knn_graph(feats, k=3))
    assert graph == edges_ref
    assert knn_modularity(feats, labels, k=3) == pytest.approx(q_ref, abs=1e-9)
    # ... and the same graph as the float32 path up to the last bit of a weight
    fp32 = edge_dict(knn_graph(feats, k=3, kernel="float32"))
    assert fp32.keys() == graph.keys()
    np.testing.assert_allclose(
        list(graph.values()), list(fp32.values()), rtol=0, atol=float32_dot_bound(256)
    )


def test_fast_bf16_that_cannot_separate_falls_back_to_float32(timings):
    timings(FAST_BF16)
    gen = torch.Generator().manual_seed(2)
    noise = normalize_features(torch.randn(400, 32768, generator=gen))
    choice = choose_kernel(noise, 3)
    assert choice.dtype is None and "cannot separate" in choice.reason


def test_speeds_are_measured_once_per_device_dtype_and_shape_class(timings):
    log = timings(FAST_BF16)
    x = normalize_features(structured(600, 256, 3)[0])
    choose_kernel(x, 3)
    assert log == [torch.float32, torch.bfloat16]
    choose_kernel(x, 3)
    choose_kernel(normalize_features(structured(900, 300, 4)[0]), 3)  # same class: 256
    assert len(log) == 2
    choose_kernel(normalize_features(structured(600, 1024, 5)[0]), 3)  # a new class
    assert len(log) == 4
    assert {key[2] for key in kernels.speed_table()} == {256, 1024}


def test_small_calls_use_float32_without_a_probe(monkeypatch):
    def never(*args):
        raise AssertionError("a probe was timed")

    monkeypatch.setattr(kernels, "_time_matmul", never)
    monkeypatch.delenv(kernels.KERNEL_ENV, raising=False)
    for n, dim in ((2000, 512), (2000, 8192), (10000, 512)):
        call = n * n * dim / 2
        assert call < kernels.MIN_PROBE_CALL and kernels.probe_dim(n, dim) is None
    choice = choose_kernel(normalize_features(structured(2000, 512, 6)[0]), 3)
    assert choice.dtype is None and "too small" in choice.reason
    assert kernels.probe_dim(10000, 8192) == kernels.MAX_PROBE_DIM == 2048


def test_the_probe_is_a_small_share_of_the_call(monkeypatch):
    # Multiply-adds timed (warm-up runs included) against the call's N²·D/2: at most 3/4000 per
    # dtype, so even a bf16 matmul 10x slower than float32 keeps the probe under 1 % of the call.
    macs: list[int] = []
    real = kernels._time_matmul

    def counting(a, b, runs, stop_above):
        macs.append((runs + 1) * a.shape[0] * b.shape[0] * a.shape[1])
        return real(a, b, runs, stop_above)

    monkeypatch.setattr(kernels, "_time_matmul", counting)
    monkeypatch.setattr(kernels, "MIN_PROBE_CALL", 0)  # the accounting, on a small call
    monkeypatch.delenv(kernels.KERNEL_ENV, raising=False)
    n, dim = 4200, 512
    x = normalize_features(torch.randn(n, dim, generator=torch.Generator().manual_seed(7)))
    kernels.choose_by_speed(x, "auto")
    call = n * n * dim / 2
    assert len(macs) == 2
    assert max(macs) <= 3 * call * kernels.PROBE_SHARE
    assert (macs[0] + 10 * macs[1]) / call <= 0.01


def pretend_nvidia_gpu(monkeypatch, capability: tuple[int, int]) -> None:
    """Make torch report an NVIDIA (not ROCm) GPU of this compute capability."""
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)


@pytest.mark.parametrize(
    ("capability", "expected"),
    [
        ((9, 0), ("float16", "bfloat16")),  # H100/H200
        ((8, 0), ("float16", "bfloat16")),  # A100
        ((7, 5), ("float16",)),  # T4: bf16 emulated, fp16 tensor cores
        ((7, 0), ("float16",)),  # V100
        ((6, 1), ()),  # P40: no tensor cores
    ],
)
def test_gpu_candidates_follow_the_compute_capability(capability, expected, monkeypatch):
    pretend_nvidia_gpu(monkeypatch, capability)
    assert kernels.candidate_dtypes(torch.device("cuda")) == expected


@pytest.mark.parametrize(
    ("capability", "n", "dim", "expected"),
    [
        ((9, 0), 50000, 2048, torch.float16),  # fp16: the tighter bound at the same speed
        ((9, 0), 10000, 8192, torch.float16),  # 4.1e11 multiply-adds
        ((9, 0), 2000, 8192, None),  # 1.6e10: too small for the screen to pay
        ((7, 5), 50000, 2048, torch.float16),
        ((6, 1), 50000, 2048, None),  # no tensor cores
    ],
)
def test_gpus_decide_by_capability_and_call_size_without_timing(
    capability, n, dim, expected, monkeypatch
):
    pretend_nvidia_gpu(monkeypatch, capability)
    monkeypatch.setattr(kernels, "measure_speeds", None)  # any timing would fail
    rows = SimpleNamespace(device=torch.device("cuda"), shape=(n, dim))
    choice = kernels.choose_by_speed(rows, "auto")
    assert choice.dtype == expected, choice.reason
    assert (n * n * dim / 2 >= kernels.CUDA_MIN_SCREEN_CALL) or expected is None
    assert kernels.speed_table() == {}


def test_environment_variable_and_argument_override(timings, monkeypatch):
    log = timings(SLOW_BF16)
    x = normalize_features(structured(600, 256, 8)[0])
    monkeypatch.setenv(kernels.KERNEL_ENV, "bfloat16")
    assert choose_kernel(x, 3).dtype == torch.bfloat16  # forced, though measured slow
    assert choose_kernel(x, 3, "float32").dtype is None  # the argument wins
    assert log == []  # forced choices time nothing
    monkeypatch.setenv(kernels.KERNEL_ENV, "BFloat16 ")
    assert choose_kernel(x, 3).dtype == torch.bfloat16
    monkeypatch.setenv(kernels.KERNEL_ENV, "tf32")
    with pytest.raises(ValueError, match=r"DNN_MODULARITY_KERNEL.*'tf32'.*auto, float32, bfloat16"):
        knn_graph(torch.randn(10, 4), k=2)
    monkeypatch.delenv(kernels.KERNEL_ENV)
    with pytest.raises(ValueError, match="unknown kernel 'fast'; valid kernels are auto"):
        knn_modularity(torch.randn(10, 4), torch.arange(10) % 2, kernel="fast")


@pytest.mark.parametrize("kernel", ["float32", "bfloat16", "float16"])
def test_every_forced_kernel_gives_the_same_graph(kernel):
    feats, _ = structured(500, 200, 9)
    reference = edge_dict(knn_graph(feats, k=4, kernel="float32"))
    graph = edge_dict(knn_graph(feats, k=4, kernel=kernel))
    assert graph.keys() == reference.keys()
    np.testing.assert_allclose(
        list(graph.values()), list(reference.values()), rtol=0, atol=float32_dot_bound(200)
    )


# --- the symmetric float32 products (numpy's BLAS syrk, or torch's triangular sub-strips) ------


def test_symmetric_product_writes_an_exactly_symmetric_block_in_place(monkeypatch):
    monkeypatch.delenv(kernels.SYMMETRIC_ENV, raising=False)
    x = normalize_features(torch.randn(300, 70, generator=torch.Generator().manual_seed(20)))
    out = torch.full((200, 290), float("nan"))
    assert kernels.symmetric_product(x[10:210], out[:, :200])  # a column block of a strip
    block = out[:, :200]
    assert torch.equal(block, block.T)
    assert out[:, 200:].isnan().all()  # nothing written outside the block
    expected = x[10:210] @ x[10:210].T
    torch.testing.assert_close(block, expected, rtol=0, atol=float32_dot_bound(70))
    # where the route does not apply, nothing is written and the caller uses torch
    fresh = torch.full((200, 200), float("nan"))
    assert not kernels.symmetric_product(x[10:210].to(torch.bfloat16), fresh)
    assert not kernels.symmetric_product(x[10:210, :50], fresh)  # rows not contiguous
    monkeypatch.setenv(kernels.SYMMETRIC_ENV, "torch")
    assert not kernels.symmetric_product(x[10:210], fresh)
    assert fresh.isnan().all()


def test_whole_matrix_takes_scipy_syrk_and_the_blocked_mirror(monkeypatch):
    monkeypatch.delenv(kernels.SYMMETRIC_ENV, raising=False)
    calls: list[int] = []
    real = kernels.mirror_lower
    monkeypatch.setattr(kernels, "mirror_lower", lambda c: calls.append(c.shape[0]) or real(c))
    for n in (1, 2, 127, 128, 129, 300):
        x = normalize_features(torch.randn(n, 40, generator=torch.Generator().manual_seed(n)))
        out = torch.full((n, n), float("nan"))
        assert kernels.symmetric_product(x, out)
        assert torch.equal(out, out.T)
        torch.testing.assert_close(out, x @ x.T, rtol=0, atol=float32_dot_bound(40))
    assert calls == [1, 2, 127, 128, 129, 300]


@pytest.mark.parametrize("n", [1, 5, 128, 129, 257, 300])
def test_mirror_lower_copies_the_lower_triangle_exactly(n):
    gen = np.random.default_rng(n)
    lower = np.tril(gen.standard_normal((n, n)).astype(np.float32))
    c = lower + np.triu(np.full((n, n), np.nan, np.float32), 1)  # the upper part is garbage
    kernels.mirror_lower(c)
    assert np.array_equal(c, lower + np.tril(lower, -1).T)


def test_syrk_lower_writes_back_where_scipy_had_to_copy():
    # a float64 output forces f2py to work on a converted copy: the result is copied back
    a = np.random.default_rng(0).standard_normal((30, 7)).astype(np.float32)
    c = np.zeros((30, 30), np.float64)
    kernels._syrk_lower(a, c)
    np.testing.assert_allclose(np.tril(c), np.tril(a @ a.T), rtol=1e-5, atol=1e-5)


def test_numpy_syrk_by_default_on_one_thread_only(monkeypatch):
    # Several threads: numpy's BLAS pool and torch's would spin on the same cores.
    monkeypatch.delenv(kernels.SYMMETRIC_ENV, raising=False)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert kernels.symmetric_route() == "numpy"
        torch.set_num_threads(2)
        assert kernels.symmetric_route() == "torch"
        x = normalize_features(torch.randn(50, 8))
        assert not kernels.symmetric_product(x, torch.empty(50, 50))
        monkeypatch.setenv(kernels.SYMMETRIC_ENV, "numpy")  # forced, whatever the threads
        assert kernels.symmetric_product(x, torch.empty(50, 50))
    finally:
        torch.set_num_threads(threads)


def test_unknown_symmetric_route_is_refused_with_the_choices(monkeypatch):
    monkeypatch.setenv(kernels.SYMMETRIC_ENV, "blas")
    with pytest.raises(ValueError, match=r"DNN_MODULARITY_SYMMETRIC value 'blas'; valid .*numpy"):
        knn_graph(torch.randn(20, 4), k=2)


@pytest.mark.parametrize("route", ["numpy", "torch"])
@pytest.mark.parametrize("dense", [True, False], ids=["dense", "strips"])
def test_both_symmetric_routes_give_the_official_graph(route, dense, monkeypatch):
    from dnn_modularity.graph import similarity

    monkeypatch.setenv(kernels.SYMMETRIC_ENV, route)
    if not dense:
        monkeypatch.setattr(similarity, "DENSE_MAX_N", -1)
    calls: list[bool] = []
    real = similarity.symmetric_product

    def spy(rows, out):
        calls.append(real(rows, out))
        return calls[-1]

    monkeypatch.setattr(similarity, "symmetric_product", spy)
    feats, labels = structured(450, 96, 10)
    feats[::9] = feats[4]  # duplicate rows: exact ties, broken by the lower index
    for block_size in (None, 64, 200):
        sim = strip_sim(feats, "cosine", block_size)
        q_ref, edges_ref = official_modularity(sim, labels.numpy(), 3)
        assert edge_dict(knn_graph(feats, k=3, block_size=block_size)) == edges_ref
        q = knn_modularity(feats, labels, k=3, block_size=block_size)
        assert q == pytest.approx(q_ref, abs=1e-9)
    assert calls and all(calls) == (route == "numpy")


def test_the_routes_differ_at_most_in_the_last_bits(monkeypatch):
    feats, _ = structured(700, 300, 11)
    graphs = {}
    for route in kernels.SYMMETRIC_ROUTES:
        monkeypatch.setenv(kernels.SYMMETRIC_ENV, route)
        graphs[route] = edge_dict(knn_graph(feats, k=4))
    assert graphs["numpy"].keys() == graphs["torch"].keys()
    np.testing.assert_allclose(
        list(graphs["numpy"].values()),
        list(graphs["torch"].values()),
        rtol=0,
        atol=float32_dot_bound(300),
    )


# --- the screen's conversion: the probe's rows are reused by the sweep --------------------------


def test_low_precision_rows_convert_by_prefix_as_a_whole():
    from dnn_modularity.graph.screen import LowPrecisionRows, to_low_precision

    x = normalize_features(torch.randn(900, 130, generator=torch.Generator().manual_seed(21)))
    whole, r_max = to_low_precision(x)
    rows = LowPrecisionRows(x)
    prefix = rows.convert(77)
    assert prefix.shape == (77, 130) and rows.done == 77
    assert rows.r_max == float((x[:77] - whole[:77].float()).norm(dim=1).max())
    assert torch.equal(rows.convert(900), whole) and rows.r_max == r_max
    assert torch.equal(whole, x.to(torch.bfloat16))


def test_a_chosen_screen_converts_every_row_once(timings, monkeypatch):
    from dnn_modularity.graph.screen import LowPrecisionRows

    timings(FAST_BF16)
    monkeypatch.setattr(_StripSweep, "MAX_SCREENED_FRACTION", float("inf"))
    converted: list[int] = []
    real = LowPrecisionRows.convert

    def counting(self, rows):
        converted.append(max(0, rows - self.done))
        return real(self, rows)

    monkeypatch.setattr(LowPrecisionRows, "convert", counting)
    feats, _ = structured(3000, 64, 12)
    x = normalize_features(feats)
    choice = choose_kernel(x, 3)
    assert choice.dtype == torch.bfloat16 and 0 < choice.rows.done < 3000  # the probe's prefix
    converted.clear()
    keys = knn_keys(x, 3, 512)
    assert sum(converted) == 3000  # the probe's rows once, then the rest: no row twice
    assert torch.equal(keys, knn_keys(x, 3, 512, kernel="bfloat16"))


# --- normalisation: two passes for ordinary float32 rows, bit for bit the full steps ------------


def test_ordinary_rows_are_normalised_without_scaling_and_bit_for_bit(monkeypatch):
    from dnn_modularity.graph import similarity

    feats = torch.randn(300, 50, generator=torch.Generator().manual_seed(22)) * 3.0
    feats[5] = 0.0  # an all-zero row stays zero
    full = similarity._scale_rows

    def never(x):
        raise AssertionError("ordinary rows were scaled")

    monkeypatch.setattr(similarity, "_scale_rows", never)
    fast = normalize_features(feats)
    monkeypatch.setattr(similarity, "_scale_rows", full)
    monkeypatch.setattr(similarity, "_moderate_norms", lambda norms, dim: False)
    assert torch.equal(fast, normalize_features(feats))  # the full steps, bit for bit
    assert fast[5].eq(0).all()
    for bad in (float("nan"), float("inf")):
        broken = feats.clone()
        broken[7, 3] = bad
        with pytest.raises(ValueError, match=r"1 NaN/inf values .*first row 7"):
            normalize_features(broken)


def _mapping_of(address: int) -> dict[str, int] | None:
    """The /proc/self/smaps entry (start, end, AnonHugePages kB) of the mapping holding address."""
    current = None
    with open("/proc/self/smaps") as handle:
        for line in handle:
            head = line.split(maxsplit=1)[0]
            if "-" in head and not head.endswith(":"):
                start, end = (int(v, 16) for v in head.split("-"))
                current = {"start": start, "end": end} if start <= address < end else None
            elif current is not None and line.startswith("AnonHugePages:"):
                current["huge_kb"] = int(line.split()[1])
                return current
    return None


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
def test_large_normalised_copies_get_their_own_huge_page_mapping(monkeypatch):
    from dnn_modularity.graph import similarity

    feats = torch.randn(64, 32768, generator=torch.Generator().manual_seed(23))  # 8 MiB
    plain = normalize_features(feats)  # 8 MiB: below the shipped threshold, torch's allocator
    monkeypatch.setattr(similarity, "HUGE_PAGE_BYTES", 4 * 2**20)
    rows = normalize_features(feats)
    assert torch.equal(rows, plain)  # the same division, into other memory
    mapping = _mapping_of(rows.data_ptr())
    assert mapping is not None and mapping["end"] - mapping["start"] == rows.numel() * 4
    mode = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if mode.exists() and ("[always]" in mode.read_text() or "[madvise]" in mode.read_text()):
        assert mapping["huge_kb"] > 0
    address = rows.data_ptr()
    del rows
    gc.collect()
    gone = _mapping_of(address)
    assert gone is None or gone["end"] - gone["start"] != 8 * 2**20  # unmapped with the tensor
    small = normalize_features(feats[:8])  # 1 MiB, below the threshold
    assert torch.equal(small, plain[:8])
    held = _mapping_of(small.data_ptr())
    assert held is not None and held["end"] - held["start"] != 2**20
