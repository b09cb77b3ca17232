"""Probe-set sampling: class balance, sequential blocks, disjoint/independent repeats, seeds."""

from __future__ import annotations

import warnings

import pytest
import torch

from dnn_modularity.data.probe import (
    ProbeSet,
    ProbeSizeError,
    check_probe_labels,
    check_probe_size,
    class_quotas,
    sample_probe_indices,
)


@pytest.fixture
def labels() -> torch.Tensor:
    # 3 classes of unequal size, interleaved: 40 x "7", 30 x "2", 20 x "5".
    g = torch.Generator().manual_seed(1)
    values = torch.tensor([7] * 40 + [2] * 30 + [5] * 20)
    return values[torch.randperm(values.numel(), generator=g)]


def test_balanced_is_class_balanced_sorted_and_seeded(labels: torch.Tensor) -> None:
    idx = sample_probe_indices(labels, 30, seed=3)
    assert idx.shape == (30,) and idx.dtype == torch.long
    assert torch.equal(idx, torch.sort(idx).values) and idx.unique().numel() == 30
    counts = {c: int((labels[idx] == c).sum()) for c in (2, 5, 7)}
    assert counts == {2: 10, 5: 10, 7: 10}
    assert torch.equal(idx, sample_probe_indices(labels, 30, seed=3))
    assert not torch.equal(idx, sample_probe_indices(labels, 30, seed=4))


def test_balanced_fills_up_from_larger_classes(labels: torch.Tensor) -> None:
    idx = sample_probe_indices(labels, 75, seed=0)
    counts = {c: int((labels[idx] == c).sum()) for c in (2, 5, 7)}
    assert counts[5] == 20  # all of the small class
    assert sum(counts.values()) == 75 and abs(counts[2] - counts[7]) <= 1


def test_class_quotas_leftovers_go_to_distinct_classes() -> None:
    quotas = class_quotas(torch.tensor([10, 10, 10, 1]), 9, torch.Generator().manual_seed(0))
    assert quotas.sum() == 9 and quotas[3] == 1 and sorted(quotas[:3].tolist()) == [2, 3, 3]


def test_disjoint_repeats_do_not_overlap(labels: torch.Tensor) -> None:
    sets = [set(sample_probe_indices(labels, 15, seed=0, repeat=r).tolist()) for r in range(3)]
    assert all(len(s) == 15 for s in sets)
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    with pytest.raises(ValueError, match="disjoint repeat 4"):
        sample_probe_indices(labels, 15, seed=0, repeat=4)  # 5 x 5 > 20 samples of class 5


def test_independent_repeats_differ_but_may_overlap(labels: torch.Tensor) -> None:
    a = sample_probe_indices(labels, 45, seed=0, repeat=0, disjoint=False)
    b = sample_probe_indices(labels, 45, seed=0, repeat=1, disjoint=False)
    assert not torch.equal(a, b)
    assert set(a.tolist()) & set(b.tolist())  # 45 of 90 twice: overlap is certain
    assert torch.equal(b, sample_probe_indices(labels, 45, seed=0, repeat=1, disjoint=False))


def test_sequential_takes_consecutive_blocks(labels: torch.Tensor) -> None:
    assert torch.equal(sample_probe_indices(labels, 10, strategy="sequential"), torch.arange(10))
    assert torch.equal(
        sample_probe_indices(labels, 10, strategy="sequential", repeat=2), torch.arange(20, 30)
    )
    with pytest.raises(ValueError, match=r"needs samples 90\.\.99"):
        sample_probe_indices(labels, 10, strategy="sequential", repeat=9)
    with pytest.raises(ValueError, match="disjoint=False"):
        sample_probe_indices(labels, 10, strategy="sequential", repeat=1, disjoint=False)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n": 0}, "probe size n=0"),
        ({"n": 91}, r"n=91 must be in \[1, 90\]"),
        ({"n": 5, "strategy": "random"}, "'random' is not one of"),
        ({"n": 5, "repeat": -1}, "repeat=-1"),
    ],
)
def test_bad_requests_raise(labels: torch.Tensor, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        sample_probe_indices(labels, **kwargs)


def test_float_labels_rejected() -> None:
    with pytest.raises(ValueError, match="integer"):
        sample_probe_indices(torch.zeros(5), 2)


class _TinyDM:
    name = "tiny"

    def __init__(self) -> None:
        self.labels = torch.arange(12) % 3
        self.images = torch.rand(12, 1, 2, 2)

    def test_labels(self) -> torch.Tensor:
        return self.labels

    def probe_dataset(self):
        return list(zip(self.images, self.labels.tolist(), strict=True))


def test_probe_set_from_datamodule_matches_indices() -> None:
    dm = _TinyDM()
    probe = ProbeSet.from_datamodule(dm, 6, seed=1)
    assert len(probe) == 6 and probe.images.shape == (6, 1, 2, 2)
    assert torch.equal(probe.images, dm.images[probe.indices])
    assert torch.equal(probe.labels, dm.labels[probe.indices])
    assert probe.meta == {
        "n": 6,
        "seed": 1,
        "strategy": "balanced",
        "repeat": 0,
        "disjoint": True,
        "dataset": "tiny",
    }


@pytest.mark.parametrize(
    ("n", "num_classes", "k", "match"),
    [
        (5, 10, 3, r"probe\.n=5 must be larger than the number of classes \(10, data=digits\)"),
        (10, 10, 3, r"probe\.n=10 must be larger than the number of classes.*probe\.n >= 20"),
        (3, 10, 3, r"probe\.n=3 must be larger than graph\.k=3"),
    ],
)
def test_probe_size_check_refuses_sizes_without_a_curve(
    n: int, num_classes: int, k: int, match: str
) -> None:
    with pytest.raises(ProbeSizeError, match=match):
        check_probe_size(n, num_classes, k=k, dataset="digits")


def test_probe_size_check_accepts_enough_samples() -> None:
    check_probe_size(11, 10, k=3)
    check_probe_size(5, None, k=3)  # classes unknown: only N > k
    check_probe_size(2, 1, k=None)  # no k-NN graph (paper 2's M): only N > C


def test_balanced_probe_below_the_class_count_gives_an_all_negative_curve() -> None:
    """Why N <= C is refused: one sample per class, no same-class neighbour, Q < 0 everywhere."""
    from dnn_modularity.graph import knn_modularity

    labels = torch.arange(200) % 10
    picked = sample_probe_indices(labels, 5, seed=0)
    assert len(torch.unique(labels[picked])) == 5  # five classes, one sample each
    features = torch.randn(5, 16) + 3 * torch.nn.functional.one_hot(labels[picked], 16)
    assert knn_modularity(features, labels[picked], k=3) < 0


def test_probe_label_check_warns_about_missing_and_single_classes() -> None:
    with pytest.warns(UserWarning, match=r"holds no sample of class\(es\) \[3\] of the 4 classes"):
        check_probe_labels(torch.tensor([0, 0, 1, 1, 2, 2]), 4, dataset="tiny")
    with pytest.warns(UserWarning, match=r"single sample of class\(es\) \[2\].*probe\.n >= 6"):
        check_probe_labels(torch.tensor([0, 0, 1, 1, 2]), 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_probe_labels(torch.tensor([0, 0, 1, 1, 2, 2]), 3)  # complete: silent


class _NoClassTwoDM(_TinyDM):
    """A test split without any sample of class 2 (of 3): balanced cannot give it a sample."""

    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.labels = torch.arange(12) % 2


def test_balanced_probe_that_cannot_give_every_class_a_sample_warns() -> None:
    with pytest.warns(UserWarning, match=r"no sample of class\(es\) \[2\].*test split has no"):
        probe = ProbeSet.from_datamodule(_NoClassTwoDM(), 6)
    assert sorted(set(probe.labels.tolist())) == [0, 1]
