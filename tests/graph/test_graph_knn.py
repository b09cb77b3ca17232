"""knn_graph / knn_modularity against a plain re-implementation of paper 1's official code.

The reference below is the official algorithm step by step: dense similarity matrix, diagonal set
to 0, ``heapq.nlargest`` per row into a dense float64 matrix, (A + Aᵀ)/2, ``networkx``. It is fed
the same float32 similarities as the engine: the float32 path's strips assembled into a dense
matrix (``strip_sim``), or the screened path's per-pair float32 dot products (``pairwise_sim``).
How a BLAS library rounds the last bit differs between CPUs and matmul shapes, and is not what
these tests are about (ENGINE-NOTES); that the similarities themselves are float32-accurate is
checked separately against the derived rounding bound (``float32_dot_bound``).
"""

from __future__ import annotations

import heapq
import itertools

import numpy as np
import pytest
import torch
from graph_reference import (
    edge_dict,
    float32_dot_bound,
    official_modularity,
    pairwise_sim,
    strip_sim,
    to_networkx,
)

from dnn_modularity.graph import Graph, knn_graph, knn_modularity, normalize_features, similarity
from dnn_modularity.graph.keys import decode_keys, sort_keys
from dnn_modularity.graph.knn import _StripSweep, graph_from_knn_keys, knn_keys, top_edges_graph
from dnn_modularity.graph.screen import pair_similarities


@pytest.fixture(params=["dense", "strips"])
def engine_path(request, monkeypatch) -> str:
    """Run a test on both float32 routes: one dense product (small problems) and the strips."""
    if request.param == "strips":
        monkeypatch.setattr(similarity, "DENSE_MAX_N", -1)
    return request.param


def tie_heavy(kind: str, n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if kind == "integer":
        return torch.randint(0, 3, (n, 5), generator=gen).float()
    if kind == "duplicates":
        base = torch.randn(max(2, n // 6), 12, generator=gen)
        return base[torch.randint(0, base.shape[0], (n,), generator=gen)]
    if kind == "zeros":
        feats = torch.randn(n, 10, generator=gen)
        feats[torch.rand(n, generator=gen) < 0.3] = 0
        return feats
    if kind == "binary":
        feats = (torch.rand(n, 6, generator=gen) < 0.3).float()
        feats[::5] = feats[0]
        return feats
    raise AssertionError(kind)


def random_labels(n: int, seed: int, num_classes: int = 4) -> torch.Tensor:
    labels = torch.randint(0, num_classes, (n,), generator=torch.Generator().manual_seed(seed))
    labels[:2] = torch.tensor([0, 1])
    return labels * 10 + 3


@pytest.mark.parametrize("metric", ["cosine", "pearson"])
@pytest.mark.parametrize("kind", ["integer", "duplicates", "zeros", "binary"])
@pytest.mark.parametrize(("n", "k"), [(12, 1), (40, 3), (97, 10), (150, 75)])
def test_tie_heavy_inputs_equal_the_official_algorithm(kind, metric, n, k, engine_path):
    feats = tie_heavy(kind, n, seed=n + k)
    labels = random_labels(n, seed=n)
    for block_size in (None, 32, 48):
        q_ref, edges_ref = official_modularity(strip_sim(feats, metric, block_size), labels, k)
        graph = knn_graph(feats, k=k, metric=metric, block_size=block_size)
        assert edge_dict(graph) == edges_ref
        q = knn_modularity(feats, labels, k=k, metric=metric, block_size=block_size)
        assert q == pytest.approx(q_ref, abs=1e-9)


@pytest.mark.parametrize("metric", ["cosine", "pearson"])
@pytest.mark.parametrize("kind", ["integer", "duplicates", "zeros", "binary"])
def test_screened_path_is_exact_on_tie_heavy_inputs(kind, metric, monkeypatch):
    # The bf16-screened path recomputes candidates by float32 dot products: compare it with the
    # official algorithm fed those same dot products. (Never fall back to float32 blocks here.)
    monkeypatch.setattr(_StripSweep, "MAX_SCREENED_FRACTION", float("inf"))
    n, k = 130, 4
    feats = tie_heavy(kind, n, seed=7)
    _, edges_ref = official_modularity(pairwise_sim(feats, metric), random_labels(n, 1).numpy(), k)
    x = normalize_features(feats, metric)
    for block_size in (32, 64, 200):
        graph = graph_from_knn_keys(knn_keys(x, k, block_size, kernel="bfloat16"))
        assert edge_dict(graph) == edges_ref


@pytest.mark.parametrize(
    ("n", "dim", "k", "metric", "kernel"),
    [
        (300, 64, 3, "cosine", "float32"),
        (257, 33, 7, "pearson", "float32"),
        (600, 128, 5, "cosine", "bfloat16"),
        (512, 300, 2, "pearson", "bfloat16"),
        (512, 300, 2, "pearson", "float16"),
    ],
)
def test_random_features_equal_the_official_algorithm(
    n, dim, k, metric, kernel, monkeypatch, engine_path
):
    # Exact: the official algorithm fed the very similarities the path computes gives the same
    # graph, edge for edge and weight for weight. Across paths (the float32 strips' matmul vs the
    # screen's per-pair dot products, which may round the last bit differently): the same edges,
    # and weights within the derived float32 rounding bound.
    monkeypatch.setattr(_StripSweep, "MAX_SCREENED_FRACTION", float("inf"))
    gen = torch.Generator().manual_seed(n)
    labels = torch.randint(0, 5, (n,), generator=gen)
    feats = torch.randn(5, dim, generator=gen)[labels] + torch.randn(n, dim, generator=gen)
    x = normalize_features(feats, metric)
    graph = edge_dict(graph_from_knn_keys(knn_keys(x, k, 96, kernel=kernel)))
    same_values = (
        strip_sim(feats, metric, 96) if kernel == "float32" else pairwise_sim(feats, metric)
    )
    assert graph == official_modularity(same_values, labels.numpy(), k)[1]
    q_ref, edges_ref = official_modularity(strip_sim(feats, metric), labels.numpy(), k)
    assert graph.keys() == edges_ref.keys()
    got = np.array([graph[e] for e in edges_ref])
    bound = float32_dot_bound(dim)
    np.testing.assert_allclose(got, np.array(list(edges_ref.values())), rtol=0, atol=bound)
    q = knn_modularity(feats, labels, k=k, metric=metric, kernel=kernel)
    assert q == pytest.approx(q_ref, abs=1e-9 if kernel == "float32" else 2 * bound)


def test_official_reference_at_n_2000():
    n, k = 2000, 3
    gen = torch.Generator().manual_seed(2000)
    labels = torch.randint(0, 10, (n,), generator=gen)
    feats = torch.randn(10, 48, generator=gen)[labels] * 0.5 + torch.randn(n, 48, generator=gen)
    q_ref, edges_ref = official_modularity(strip_sim(feats, "cosine", 512), labels.numpy(), k)
    assert edge_dict(knn_graph(feats, k=k, block_size=512)) == edges_ref
    assert knn_modularity(feats, labels, k=k, block_size=512) == pytest.approx(q_ref, abs=1e-9)


def test_strip_similarities_are_float32_accurate():
    # The strips (triangular sub-blocks, mirrored lower part) against float64 similarities, at a
    # D where the strip kernel splits the diagonal blocks: within the derived rounding bound.
    gen = torch.Generator().manual_seed(21)
    dim = 2048
    feats = torch.randn(1100, dim, generator=gen) + 0.3 * torch.randn(1, dim, generator=gen)
    got = strip_sim(feats, "cosine", 1100)
    x64 = torch.nn.functional.normalize(feats.double(), dim=1)
    exact = (x64 @ x64.T).numpy()
    assert np.abs(got - exact).max() <= float32_dot_bound(dim) / 2
    assert np.array_equal(got, got.T)


def test_mutual_pairs_keep_s_and_one_way_pairs_get_half(engine_path):
    # 1-D cosine on 2-D points at angles: nearest neighbours are unambiguous.
    angles = torch.tensor([0.0, 0.1, 0.25, 1.5, 1.52, 3.0])
    feats = torch.stack([angles.cos(), angles.sin()], dim=1)
    graph = knn_graph(feats, k=1)
    sim = feats @ feats.T
    edges = edge_dict(graph)
    assert edges[(0, 1)] == pytest.approx(float(sim[0, 1]))  # mutual: 0<->1
    assert edges[(3, 4)] == pytest.approx(float(sim[3, 4]))  # mutual: 3<->4
    assert edges[(1, 2)] == pytest.approx(float(sim[1, 2]) / 2)  # 2 -> 1 only
    assert edges[(4, 5)] == pytest.approx(float(sim[4, 5]) / 2)  # 5 -> 4 only
    assert len(edges) == 4
    assert bool((graph.src < graph.dst).all())
    assert graph.weight.dtype == torch.float64


def test_row_with_no_positive_similarity_keeps_itself_and_loses_the_edge(engine_path):
    # Node 2 is orthogonal to everybody and node 3 opposite to node 0: with k=1 node 2's best
    # column is itself (similarity 0 on the zeroed diagonal, index order) -> no edge from it.
    feats = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]])
    graph = knn_graph(feats, k=1)
    edges = edge_dict(graph)
    assert not any(2 in e for e in edges)
    _, edges_ref = official_modularity(strip_sim(feats, "cosine"), np.array([0, 0, 1, 1]), 1)
    assert edges == edges_ref


def test_all_zero_features_give_an_empty_graph_and_a_clear_modularity_error():
    feats = torch.zeros(10, 4)
    assert knn_graph(feats, k=3).num_edges == 0
    with pytest.raises(ValueError, match="total edge weight is 0"):
        knn_modularity(feats, torch.arange(10) % 2, k=3)


@pytest.mark.parametrize("metric", ["cosine", "pearson"])
def test_block_size_does_not_change_the_graph(metric, engine_path):
    gen = torch.Generator().manual_seed(3)
    feats = torch.randn(777, 40, generator=gen)
    reference = edge_dict(knn_graph(feats, k=4, metric=metric, block_size=777))
    for block_size in (1, 32, 100, 256, None, 10_000):
        assert edge_dict(knn_graph(feats, k=4, metric=metric, block_size=block_size)) == reference


def test_features_of_any_shape_and_dtype(engine_path):
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(60, 3, 4, 5, generator=gen, dtype=torch.float64)
    flat = feats.reshape(60, -1).float()
    assert edge_dict(knn_graph(feats, k=3)) == edge_dict(knn_graph(flat, k=3))
    assert edge_dict(knn_graph(feats.numpy(), k=3)) == edge_dict(knn_graph(flat, k=3))
    ints = torch.randint(0, 4, (50, 6), generator=gen)
    assert edge_dict(knn_graph(ints, k=2)) == edge_dict(knn_graph(ints.float(), k=2))


def test_large_k_up_to_n_minus_one(engine_path):
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(40, 5, generator=gen)
    labels = torch.arange(40) % 3
    for k in (20, 39):
        q_ref, edges_ref = official_modularity(strip_sim(feats, "cosine"), labels.numpy(), k)
        assert edge_dict(knn_graph(feats, k=k)) == edges_ref
        assert knn_modularity(feats, labels, k=k) == pytest.approx(q_ref, abs=1e-9)


def test_sort_keys_order_is_heapq_order():
    values = torch.tensor([0.5, -0.0, 0.0, -1.0, 0.5, float("-inf"), 2.0, -1e-30, 1e-30])
    cols = torch.arange(values.numel())
    keys = sort_keys(values, cols)
    order = torch.argsort(keys, descending=True).tolist()
    expected = heapq.nlargest(values.numel(), range(values.numel()), values.numpy().take)
    assert order == expected
    decoded, decoded_cols = decode_keys(keys)
    assert torch.equal(decoded_cols, cols)
    assert torch.equal(decoded, values + 0.0)


def brute_force_top_edges(feats: torch.Tensor, num_edges: int, metric: str) -> dict:
    x = normalize_features(feats, metric)
    sim = (x @ x.T).numpy()
    n = sim.shape[0]
    pairs = [(float(sim[i, j]), i, j) for i in range(n) for j in range(i + 1, n)]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))  # value desc, then lower pair first
    return {(i, j): v for v, i, j in pairs[:num_edges]}


@pytest.mark.parametrize("metric", ["cosine", "pearson"])
@pytest.mark.parametrize("kind", ["random", "integer", "duplicates"])
@pytest.mark.parametrize("num_edges", [1, 37, 500, 1770])
def test_top_edges_graph_equals_brute_force(kind, metric, num_edges):
    n = 60
    gen = torch.Generator().manual_seed(num_edges)
    feats = torch.randn(n, 7, generator=gen) if kind == "random" else tie_heavy(kind, n, seed=3)
    expected = brute_force_top_edges(feats, num_edges, metric)
    for block_size in (None, 32, 45):
        graph = top_edges_graph(feats, num_edges=num_edges, metric=metric, block_size=block_size)
        assert graph.num_edges == num_edges
        assert edge_dict(graph) == expected
        assert bool((graph.src < graph.dst).all())


def test_top_edges_graph_larger_than_a_block():
    gen = torch.Generator().manual_seed(9)
    feats = torch.randn(300, 16, generator=gen)
    expected = brute_force_top_edges(feats, 4000, "cosine")
    assert edge_dict(top_edges_graph(feats, num_edges=4000, block_size=64)) == expected


def test_graph_to_networkx_and_degrees():
    graph = Graph(
        4, torch.tensor([0, 1]), torch.tensor([1, 3]), torch.tensor([0.5, 2.0], dtype=torch.float64)
    )
    g = to_networkx(graph)
    assert g.number_of_nodes() == 4 and g.number_of_edges() == 2
    assert g[1][3]["weight"] == 2.0
    assert graph.degrees().tolist() == [0.5, 2.5, 0.0, 2.0]
    with pytest.raises(ValueError, match="same length"):
        Graph(3, torch.tensor([0]), torch.tensor([1, 2]), torch.tensor([1.0]))


@pytest.fixture
def strip_sweeps(monkeypatch) -> list[_StripSweep]:
    """Every `_StripSweep` created during the test, in order (to inspect its screening state)."""
    sweeps: list[_StripSweep] = []
    original = _StripSweep.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        sweeps.append(self)

    monkeypatch.setattr(_StripSweep, "__init__", spy)
    return sweeps


def test_screened_path_matches_float32_path_at_n_5000(strip_sweeps):
    gen = torch.Generator().manual_seed(5)
    labels = torch.randint(0, 10, (5000,), generator=gen)
    noise = torch.randn(5000, 256, generator=gen)
    feats = torch.randn(10, 256, generator=gen)[labels] * 0.4 + noise
    x = normalize_features(feats)
    screened = knn_keys(x, 3, 1024, kernel="bfloat16")
    assert strip_sweeps[0].xs is not None  # screened to the end
    exact = knn_keys(x, 3, 1024, kernel="float32")
    v1, c1 = decode_keys(screened)
    v2, c2 = decode_keys(exact)
    # the screened values are the float32 dot products of the selected pairs, bit for bit
    rows = torch.arange(5000).repeat_interleave(3)
    assert torch.equal(v1.flatten(), pair_similarities(x, x, rows, c1.flatten()))
    # the same neighbours as the float32 path (a last-bit near-tie at most), values within the
    # derived bound between two float32 evaluations of a dot product
    assert (c1.sort(1).values != c2.sort(1).values).any(1).sum() <= 1
    bound = float32_dot_bound(256)
    np.testing.assert_allclose(v1.sort(1).values, v2.sort(1).values, rtol=0, atol=bound)


def test_screening_falls_back_to_float32_when_bf16_cannot_separate(strip_sweeps, monkeypatch):
    monkeypatch.setattr(similarity, "DENSE_MAX_N", -1)  # compare with the float32 strips
    # High-dimensional noise: similarities spread ~1/sqrt(D), less than the bf16 error, so nearly
    # every entry is a screening candidate; the sweep must switch to float32 blocks and give
    # exactly the float32 result.
    gen = torch.Generator().manual_seed(4)
    x = normalize_features(torch.randn(700, 8192, generator=gen))
    screened = knn_keys(x, 3, 128, kernel="bfloat16")
    assert strip_sweeps[0].xs is None  # screening was switched off
    assert strip_sweeps[0].fallback_row == 0
    assert torch.equal(screened, knn_keys(x, 3, 128, kernel="float32"))


def test_reduced_matmul_precision_setting_is_overridden_and_restored(monkeypatch, engine_path):
    monkeypatch.setattr(_StripSweep, "MAX_SCREENED_FRACTION", float("inf"))
    # Lightning scripts often call torch.set_float32_matmul_precision("medium"), which makes
    # float32 matmuls use bf16 on CPUs (TF32 on GPUs): the graph must not change.
    gen = torch.Generator().manual_seed(8)
    feats = torch.randn(400, 256, generator=gen)
    labels = torch.arange(400) % 4
    x = normalize_features(feats)
    expected = edge_dict(knn_graph(feats, k=3))
    expected_screened = edge_dict(graph_from_knn_keys(knn_keys(x, 3, 128, kernel="bfloat16")))
    hist = similarity_histogram_counts(feats)
    q_ref = official_modularity(strip_sim(feats, "cosine"), labels.numpy(), 3)[0]
    old = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("medium")
        assert edge_dict(knn_graph(feats, k=3)) == expected
        screened = graph_from_knn_keys(knn_keys(x, 3, 128, kernel="bfloat16"))
        assert edge_dict(screened) == expected_screened
        assert similarity_histogram_counts(feats) == hist
        assert knn_modularity(feats, labels) == pytest.approx(q_ref, abs=1e-9)
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(old)


def similarity_histogram_counts(feats: torch.Tensor) -> list[int]:
    from dnn_modularity.graph import similarity_histogram

    return similarity_histogram(feats, bins=50, range=(-0.2, 0.2), block_size=64).counts.tolist()


@pytest.mark.parametrize(("n", "block_size"), [(10, 32), (1000, 256), (1001, 256), (5, 1)])
def test_strips_are_near_equal_and_cover_all_rows(n, block_size):
    from dnn_modularity.graph.similarity import (
        block_bounds,
        default_block_size,
        iter_similarity_strips,
    )

    bounds = block_bounds(n, block_size)
    sizes = [b - a for a, b in itertools.pairwise(bounds)]
    assert bounds[0] == 0 and bounds[-1] == n
    assert max(sizes) <= block_size and max(sizes) - min(sizes) <= 1
    x = normalize_features(torch.randn(n, 3, generator=torch.Generator().manual_seed(n)))
    dense = x @ x.T
    for i0, i1, s in iter_similarity_strips(x, block_size):
        assert s.shape == (i1 - i0, n - i0)
        torch.testing.assert_close(s, dense[i0:i1, i0:], rtol=0, atol=1e-6)
    assert 1 <= default_block_size(n) <= max(n, 1)
    assert default_block_size(10**6, "cuda") > default_block_size(10**6, "cpu")


def test_thin_strips_on_many_rows():
    # 35 strips of 31-32 rows: the later, one-row-thicker strips must still fit the buffer.
    gen = torch.Generator().manual_seed(11)
    feats = torch.randn(1100, 8, generator=gen)
    assert edge_dict(knn_graph(feats, k=2, block_size=32)) == edge_dict(knn_graph(feats, k=2))
    hist = similarity_histogram_counts(feats)
    from dnn_modularity.graph import similarity_histogram

    thin = similarity_histogram(feats, bins=50, range=(-0.2, 0.2), block_size=32)
    assert thin.counts.tolist() == hist


def test_separation_probe():
    from dnn_modularity.graph.knn import _screen_separates

    gen = torch.Generator().manual_seed(12)
    labels = torch.arange(2000) % 10
    structured = torch.randn(10, 256, generator=gen)[labels] + torch.randn(2000, 256, generator=gen)
    for dtype in (torch.bfloat16, torch.float16):
        assert _screen_separates(normalize_features(structured), 3, dtype)
    # similarities of high-dimensional noise spread ~1/sqrt(D), below the bf16 error
    noise = torch.randn(300, 65536, generator=gen)
    assert not _screen_separates(normalize_features(noise), 3, torch.bfloat16)
