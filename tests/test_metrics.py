"""torchmetrics wrappers: batched updates, DDP-style gathering, indices, max_samples."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from dnn_modularity.graph import class_separation, knn_modularity, top_edges_graph
from dnn_modularity.metrics import ClassSeparationModularity, KNNModularity


def probe(n: int = 120, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=gen) * 5 + 1
    noise = torch.randn(n, 2, 3, 3, generator=gen)
    feats = torch.randn(4, 2, 3, 3, generator=gen)[labels // 5] + noise
    return feats, labels


def test_batched_updates_equal_one_functional_call():
    feats, labels = probe()
    metric = KNNModularity(k=4, metric="pearson")
    for start in range(0, 120, 25):
        metric.update(feats[start : start + 25].half(), labels[start : start + 25])
    value = metric.compute()
    assert value.dtype == torch.float64 and value.dim() == 0
    expected = knn_modularity(feats.half().float(), labels, k=4, metric="pearson")
    assert float(value) == expected


def test_class_separation_metric_equals_functional():
    feats, labels = probe()
    metric = ClassSeparationModularity(num_edges=500)
    for start in range(0, 120, 50):
        metric.update(feats[start : start + 50], labels[start : start + 50])
    expected = class_separation(top_edges_graph(feats, 500), labels).m
    assert float(metric.compute()) == pytest.approx(expected, abs=1e-15)


def test_indices_restore_order_and_drop_ddp_padding_duplicates():
    feats, labels = probe()
    expected = knn_modularity(feats, labels, k=3)
    # Two "ranks" with a distributed-sampler-like split; rank 1 is padded with sample 0 and 2,
    # and the gathered state is rank-major, i.e. not in probe order.
    rank0 = torch.arange(0, 120, 2)
    rank1 = torch.cat([torch.arange(1, 120, 2), torch.tensor([0, 2])])
    metric = KNNModularity(k=3)
    for idx in (rank0[:30], rank0[30:], rank1[:40], rank1[40:]):
        metric.update(feats[idx], labels[idx], idx)
    assert float(metric.compute()) == pytest.approx(expected, abs=1e-15)
    # without indices, the rank-major order and the duplicates change the graph
    plain = KNNModularity(k=3)
    order = torch.cat([rank0, rank1])
    plain.update(feats[order], labels[order])
    assert float(plain.compute()) != pytest.approx(expected, abs=1e-12)


def test_max_samples_keeps_the_first_samples_by_index():
    feats, labels = probe()
    metric = KNNModularity(k=3, max_samples=70)
    perm = torch.randperm(120, generator=torch.Generator().manual_seed(3))
    metric.update(feats[perm], labels[perm], perm)
    expected = knn_modularity(feats[:70], labels[:70], k=3)
    assert float(metric.compute()) == pytest.approx(expected, abs=1e-15)
    no_index = KNNModularity(k=3, max_samples=70)
    no_index.update(feats[perm], labels[perm])
    expected = knn_modularity(feats[perm[:70]], labels[perm[:70]], k=3)
    assert float(no_index.compute()) == pytest.approx(expected, abs=1e-15)


def test_reset_clears_the_probe_set():
    feats, labels = probe()
    metric = KNNModularity(k=3)
    metric.update(feats[:60], labels[:60])
    first = float(metric.compute())
    metric.reset()
    metric.update(feats[60:], labels[60:])
    assert float(metric.compute()) == pytest.approx(knn_modularity(feats[60:], labels[60:], k=3))
    assert float(metric.compute()) != first


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_bad_inputs():
    feats, labels = probe()
    with pytest.raises(ValueError, match="unknown metric"):
        KNNModularity(metric="dot")
    with pytest.raises(ValueError, match="k must be"):
        KNNModularity(k=0)
    with pytest.raises(ValueError, match="num_edges must be"):
        ClassSeparationModularity(num_edges=0)
    with pytest.raises(ValueError, match="max_samples"):
        KNNModularity(max_samples=1)
    metric = KNNModularity()
    with pytest.raises(ValueError, match="before any update"):
        metric.compute()
    with pytest.raises(ValueError, match=r"labels must have shape \(10,\)"):
        metric.update(feats[:10], labels[:9])
    with pytest.raises(ValueError, match="at least 2 dims"):
        metric.update(feats[:10, 0, 0, 0], labels[:10])
    with pytest.raises(ValueError, match="labels must be integers"):
        metric.update(feats[:10], labels[:10].float())
    metric.update(feats[:10], labels[:10])
    with pytest.raises(ValueError, match="missing in earlier updates"):
        metric.update(feats[10:20], labels[10:20], torch.arange(10, 20))
    indexed = KNNModularity()
    indexed.update(feats[:10], labels[:10], torch.arange(10))
    with pytest.raises(ValueError, match="given in earlier updates"):
        indexed.update(feats[10:20], labels[10:20])
    with pytest.raises(ValueError, match=r"indices must have shape \(10,\)"):
        indexed.update(feats[10:20], labels[10:20], torch.arange(3))
    too_many = ClassSeparationModularity(num_edges=100)
    too_many.update(feats[:10], labels[:10])
    with pytest.raises(ValueError, match="exceeds the N"):
        too_many.compute()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        feats, labels = probe()
        idx = torch.arange(rank, 120, world)
        if rank == 1:
            idx = torch.cat([idx, torch.tensor([0])])  # sampler padding
        metric = KNNModularity(k=3)
        for part in idx.split(17):
            metric.update(feats[part], labels[part], part)
        queue.put((rank, float(metric.compute())))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.ddp
def test_gloo_ddp_gathers_every_rank():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.start_processes(_ddp_worker, args=(2, _free_port(), queue), nprocs=2, start_method="spawn")
    results = dict(queue.get(timeout=60) for _ in range(2))
    feats, labels = probe()
    expected = knn_modularity(feats, labels, k=3)
    assert results[0] == pytest.approx(expected, abs=1e-15)
    assert results[1] == pytest.approx(expected, abs=1e-15)


@pytest.mark.gpu
def test_metric_on_cuda():
    feats, labels = probe()
    metric = KNNModularity(k=3).cuda()
    metric.update(feats.cuda(), labels.cuda())
    value = metric.compute()
    assert value.device.type == "cuda"
    assert float(value) == pytest.approx(knn_modularity(feats, labels, k=3), abs=1e-9)
