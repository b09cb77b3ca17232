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
from dnn_modularity.graph.dense_select import _group_size, dense_knn_keys, matrix_buffer
from dnn_modularity.graph.edges import symmetrize, symmetrize_numpy
from dnn_modularity.graph.keys import decode_keys, decode_keys_numpy, sort_keys, sort_keys_numpy
from dnn_modularity.graph.knn import _graph_from_keys_numpy, _graph_from_keys_torch


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
    assert torch.equal(dense_knn_keys(s, k), heapq_keys(s, k))


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
    keys = dense_knn_keys(s, 4)
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
