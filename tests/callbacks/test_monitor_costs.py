"""What a monitor measurement copies and computes: no avoidable copies of the probe's features."""

from __future__ import annotations

import pytest
import torch

from dnn_modularity.metrics import KNNModularity


def test_probe_set_hands_over_in_order_features_without_copying():
    metric = KNNModularity(k=3)
    feats = torch.randn(40, 12)
    labels = torch.arange(40) % 4
    metric.update(feats, labels, torch.arange(40))
    got, got_labels = metric.probe_set()
    assert got.data_ptr() == feats.data_ptr()  # a single process's shard, in order: no copy
    assert torch.equal(got_labels, labels)
    # out of order (and DDP's duplicate padding): reordered and deduplicated, as before
    metric.reset()
    order = torch.tensor([3, 1, 2, 0, 3])
    metric.update(feats[order], labels[order], order)
    got, got_labels = metric.probe_set()
    assert torch.equal(got, feats[:4]) and torch.equal(got_labels, labels[:4])


def test_fake_test_labels_are_drawn_without_building_images(monkeypatch):
    from torchvision import datasets

    from dnn_modularity.data import FakeDataModule

    dm = FakeDataModule(test_size=300, seed=5)
    dm.setup()
    expected = [dm.probe_dataset()[i][1] for i in range(300)]

    def no_images(self, index):
        raise AssertionError("test_labels built an image")

    monkeypatch.setattr(datasets.FakeData, "__getitem__", no_images)
    assert dm.test_labels().tolist() == expected


@pytest.mark.parametrize("channels_last", [False, True])
def test_tapped_rows_are_one_private_copy(channels_last):
    from dnn_modularity.taps import _rows

    out = torch.randn(4, 3, 5, 6)
    if channels_last:
        out = out.to(memory_format=torch.channels_last)
    rows = _rows(out, "layer", None, False)
    assert rows.shape == (4, 90) and rows.is_contiguous()
    assert torch.equal(rows, out.contiguous().reshape(4, -1))
    out.add_(1.0)  # an in-place op of a later layer must not change the stored rows
    assert not torch.equal(rows, out.contiguous().reshape(4, -1))
