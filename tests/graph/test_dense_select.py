"""The CPU dense route's numpy pieces: the top-k filter, the key and graph twins, the buffer.

Each numpy piece has a torch counterpart (used on GPUs) or a plain reference (heapq); they must
agree exactly, ties included.
"""

from __future__ import annotations

import heapq
import threading

import numpy as np
import pytest
import torch

from dnn_modularity.graph import knn_graph
from dnn_modularity.graph.dense_select import (
    MAX_DENSE_SELECT,
    _group_size,
    dense_neighbours,
    matrix_buffer,
)
from dnn_modularity.graph.edges import symmetrize, symmetrize_numpy
from dnn_modularity.graph.keys import decode_keys, decode_keys_numpy, sort_keys, sort_keys_numpy
from dnn_modularity.graph.knn import (
    _graph_from_keys_numpy,
    _graph_from_keys_torch,
    graph_from_neighbours,
    knn_graph_of_rows,
    knn_keys,
)


def symmetric_matrix(n: int, kind: str, seed: int) -> torch.Tensor:
    """An exactly symmetric float32 (N, N) matrix with a zero diagonal."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "random":
        a = torch.randn(n, n, generator=gen)
    elif kind == "ties":  # few distinct values: many ties at every row's k-th
        a = torch.randint(-2, 3, (n, n), generator=gen).float() / 2
    elif kind == "zero rows":
        a = torch.randn(n, n, generator=gen)
        zero = torch.rand(n, generator=gen) < 0.3
        a[zero] = 0.0
        a[:, zero] = 0.0
    elif kind == "signed zeros":  # -0.0 and 0.0 (equal for heapq) and a few positive entries
        a = (torch.rand(n, n, generator=gen) < 0.05).float() / 4
    else:
        raise AssertionError(kind)
    a = torch.triu(a, 1)
    a = a + a.T
    if kind == "signed zeros":
        negative = torch.triu(torch.rand(n, n, generator=gen) < 0.5, 1)
        negative = (negative | negative.T) & (a == 0)
        a[negative] = -0.0
    a.fill_diagonal_(0.0)
    return a.contiguous()


def dense_keys(s: torch.Tensor, k: int) -> torch.Tensor:
    """The dense filter's neighbours of each row as sort keys (as knn_keys returns them)."""
    return torch.from_numpy(sort_keys_numpy(*dense_neighbours(s.numpy(), k)))


def heapq_keys(s: torch.Tensor, k: int) -> torch.Tensor:
    """The official selection (heapq.nlargest per row) as sort keys, largest first."""
    rows = []
    for row in s.numpy():
        cols = heapq.nlargest(k, range(row.size), row.take)
        rows.append(sort_keys(torch.from_numpy(row[cols]), torch.tensor(cols)))
    return torch.stack(rows)


@pytest.mark.parametrize("kind", ["random", "ties", "zero rows", "signed zeros"])
@pytest.mark.parametrize(
    ("n", "k"),
    [(2, 1), (9, 8), (64, 3), (130, 1), (130, 10), (257, 5), (517, 3), (517, 129), (1031, 3)],
)
def test_dense_filter_equals_heapq(kind, n, k):
    s = symmetric_matrix(n, kind, seed=n * 31 + k)
    assert torch.equal(dense_keys(s, k), heapq_keys(s, k))


def test_dense_neighbours_are_heapqs_values_and_columns_in_order():
    s = symmetric_matrix(517, "ties", seed=7)  # a tail (517 = 129 groups of 4 + 1) and many ties
    values, cols = dense_neighbours(s.numpy(), 5)
    assert values.dtype == np.float32 and cols.dtype == np.int64 and values.shape == (517, 5)
    for i in (0, 1, 200, 516):
        row = s[i].numpy()
        expected = heapq.nlargest(5, range(517), row.take)
        assert cols[i].tolist() == expected
        assert np.array_equal(values[i], row[expected])


def test_dense_neighbours_refuses_an_n_its_keys_cannot_hold():
    too_big = np.broadcast_to(np.float32(0.0), (MAX_DENSE_SELECT + 1,) * 2)  # no memory behind it
    limit = MAX_DENSE_SELECT
    with pytest.raises(ValueError, match=f"N <= {limit}, got N = {limit + 1}"):
        dense_neighbours(too_big, 3)


def test_graph_from_neighbours_equals_the_graph_from_keys():
    # self entries and zero similarities are not edges, wherever they sit in a row's list
    values = np.array([[0.5, 0.0, 0.25], [0.5, 0.5, -0.125], [0.75, 0.0, 0.0]], np.float32)
    cols = np.array([[1, 0, 2], [0, 2, 1], [1, 2, 0]], np.int64)
    graph = graph_from_neighbours(values, cols)
    assert graph.src.tolist() == [0, 0, 1] and graph.dst.tolist() == [1, 2, 2]
    assert graph.weight.tolist() == [0.5, 0.125, 0.625]  # (0.5 + 0.5)/2, 0.25/2, (0.5 + 0.75)/2
    keys = torch.from_numpy(sort_keys_numpy(values, cols))
    for a in (_graph_from_keys_numpy(keys), _graph_from_keys_torch(keys)):
        for name in ("src", "dst", "weight"):
            assert torch.equal(getattr(a, name), getattr(graph, name)), name


def test_dense_cpu_graph_equals_the_graph_of_its_keys():
    # knn_graph_of_rows skips the keys on the CPU dense route: the same graph as through them
    gen = torch.Generator().manual_seed(2)
    x = torch.nn.functional.normalize(torch.randn(300, 24, generator=gen))
    direct = knn_graph_of_rows(x, 4, 64)
    through_keys = _graph_from_keys_torch(knn_keys(x, 4, 64))
    for name in ("src", "dst", "weight"):
        assert torch.equal(getattr(direct, name), getattr(through_keys, name)), name


def test_group_size_leaves_enough_groups_for_every_k():
    assert _group_size(500, 3) == 4
    assert _group_size(1000, 3) == 8
    assert _group_size(2048, 3) == 16
    for n, k in [(2, 1), (50, 49), (517, 129), (2048, 300)]:
        group = _group_size(n, k)
        assert group >= 1
        assert n // group >= min(n, 4 * k)  # enough groups for the 4k set maxima of τ


def test_numpy_key_twins_equal_the_torch_keys():
    gen = torch.Generator().manual_seed(0)
    values = torch.cat(
        [
            torch.randn(1000, generator=gen),
            torch.tensor([0.0, -0.0, 1.0, -1.0, float("inf"), float("-inf"), 1e-45, -1e-45]),
        ]
    )
    cols = torch.randint(0, 2**31 - 1, values.shape, generator=gen)
    keys = sort_keys(values, cols)
    assert np.array_equal(sort_keys_numpy(values.numpy(), cols.numpy()), keys.numpy())
    for numpy_part, torch_part in zip(
        decode_keys_numpy(keys.numpy()), decode_keys(keys), strict=True
    ):
        assert np.array_equal(numpy_part, torch_part.numpy())


def test_numpy_graph_equals_the_torch_graph():
    s = symmetric_matrix(300, "ties", seed=3)
    keys = dense_keys(s, 4)
    a, b = _graph_from_keys_numpy(keys), _graph_from_keys_torch(keys)
    for name in ("src", "dst", "weight"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    gen = torch.Generator().manual_seed(1)
    src = torch.randint(0, 50, (400,), generator=gen)
    dst = (src + torch.randint(1, 50, (400,), generator=gen)) % 50
    pairs = torch.unique(src * 50 + dst)  # each directed entry once
    src, dst = pairs // 50, pairs % 50
    weight = torch.rand(src.shape, generator=gen)
    a = symmetrize_numpy(50, src.numpy(), dst.numpy(), weight.numpy())
    b = symmetrize(50, src, dst, weight)
    for name in ("src", "dst", "weight"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_matrix_buffer_is_reused_per_thread_and_grows():
    big = matrix_buffer(300)
    assert big.shape == (300, 300) and big.is_contiguous()
    small = matrix_buffer(100)
    assert small.shape == (100, 100) and small.data_ptr() == big.data_ptr()
    bigger = matrix_buffer(400)
    assert bigger.shape == (400, 400)
    assert matrix_buffer(400).data_ptr() == bigger.data_ptr()
    other: list[int] = []
    thread = threading.Thread(target=lambda: other.append(matrix_buffer(400).data_ptr()))
    thread.start()
    thread.join()
    assert other[0] != bigger.data_ptr()  # another thread never shares this thread's matrix


def test_knn_graph_inside_and_outside_inference_mode_share_the_buffer():
    feats = torch.randn(200, 16, generator=torch.Generator().manual_seed(5))
    threading_result: list[bool] = []

    def run() -> None:  # a fresh thread: its first buffer is made under inference_mode
        with torch.inference_mode():
            inside = knn_graph(feats, k=3)
        outside = knn_graph(feats, k=3)
        threading_result.append(torch.equal(inside.weight, outside.weight))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert threading_result == [True]
