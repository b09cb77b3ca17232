"""Ridge linear probe: equals scikit-learn's Ridge, exact LOO, seeded stratified splits, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge

from dnn_modularity.linear_probe import (
    DEFAULT_L2_GRID,
    LinearProbeResult,
    linear_probe,
    stratified_split,
)


def planted(n: int, dim: int, num_classes: int, strength: float, seed: int):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    means = torch.randn(num_classes, dim, generator=gen)
    feats = strength * means[labels] + torch.randn(n, dim, generator=gen) + 3.0  # off-centre
    return feats, labels * 3 + 1  # label values that are not 0..C-1


@pytest.mark.parametrize(("n", "dim", "solver"), [(60, 200, "dual"), (90, 12, "primal")])
def test_weights_equal_sklearn_ridge_with_the_same_penalty(n, dim, solver):
    x, y = planted(n, dim, 3, 0.5, seed=dim)
    xt, yt = planted(40, dim, 3, 0.5, seed=dim + 1)
    res = linear_probe(x, y, xt, yt, l2=0.05)
    assert res.solver == solver and res.split == "given" and res.seed is None
    onehot = np.eye(3)[np.unique(y.numpy(), return_inverse=True)[1]]
    ref = Ridge(alpha=res.l2_absolute).fit(x.double().numpy(), onehot)
    assert np.abs(ref.coef_.T - res.weight.numpy()).max() < 1e-5
    assert np.abs(ref.intercept_ - res.bias.numpy()).max() < 1e-5
    ref_pred = res.classes.numpy()[ref.predict(xt.double().numpy()).argmax(1)]
    assert res.test_predictions.tolist() == ref_pred.tolist()
    assert res.accuracy == pytest.approx(float((ref_pred == yt.numpy()).mean()))
    mean_sq_norm = float((x - x.mean(0)).double().square().sum()) / n
    assert res.l2_absolute == pytest.approx(0.05 * mean_sq_norm)
    assert res.predict(xt).tolist() == ref_pred.tolist()


@pytest.mark.parametrize(("dim", "rel"), [(150, 1e-3), (150, 1.0), (8, 0.1)])
def test_cross_validation_accuracy_is_the_exact_leave_one_out_accuracy(dim, rel):
    x, y = planted(45, dim, 3, 0.4, seed=7)
    res = linear_probe(x, y, x[:5], y[:5], l2=rel)
    onehot = np.eye(3)[np.unique(y.numpy(), return_inverse=True)[1]]
    xd = x.double().numpy()
    right = 0
    for i in range(len(xd)):
        keep = np.arange(len(xd)) != i
        fit = Ridge(alpha=res.l2_absolute).fit(xd[keep], onehot[keep])
        right += int(fit.predict(xd[i : i + 1]).argmax() == onehot[i].argmax())
    assert res.cv_accuracy == pytest.approx(right / len(xd), abs=1e-12)
    assert res.grid_cv_accuracy == (res.cv_accuracy,) and res.l2_grid == (rel,)


def test_penalty_selection_takes_the_best_loo_grid_value():
    x, y = planted(120, 400, 4, 0.25, seed=3)
    res = linear_probe(x, y, test_fraction=0.25, seed=1)
    assert res.l2_grid == DEFAULT_L2_GRID
    assert res.cv_accuracy == max(res.grid_cv_accuracy)
    assert res.l2 == res.l2_grid[res.grid_cv_accuracy.index(res.cv_accuracy)] or (
        res.grid_cv_accuracy.count(res.cv_accuracy) > 1
    )
    for rel, acc in zip(res.l2_grid, res.grid_cv_accuracy, strict=True):
        fixed = linear_probe(x, y, test_fraction=0.25, seed=1, l2=rel)
        assert fixed.cv_accuracy == pytest.approx(acc, abs=1e-12)


def test_separable_classes_are_probed_perfectly_and_random_labels_near_chance():
    x, y = planted(200, 512, 5, 2.0, seed=0)
    res = linear_probe(x, y)
    assert res.accuracy == 1.0 and res.train_accuracy == 1.0
    assert res.chance_accuracy == pytest.approx(0.2)
    shuffled = y[torch.randperm(200, generator=torch.Generator().manual_seed(0))]
    null = linear_probe(x, shuffled)
    assert null.accuracy < 0.4


def test_stratified_split_is_seeded_disjoint_and_per_class():
    labels = torch.tensor([0] * 10 + [5] * 7 + [9] * 1 + [2] * 2)
    train, test = stratified_split(labels, 0.3, seed=4)
    assert sorted(train.tolist() + test.tolist()) == list(range(20))
    held = {v: int((labels[test] == v).sum()) for v in (0, 5, 9, 2)}
    assert held == {0: 3, 5: 2, 9: 0, 2: 1}  # round(0.3 n), clipped to [1, n - 1]
    again = stratified_split(labels, 0.3, seed=4)
    assert torch.equal(again[1], test) and torch.equal(again[0], train)
    assert not torch.equal(stratified_split(labels, 0.3, seed=5)[1], test)
    assert torch.equal(test, test.sort().values)


def test_split_record_and_determinism():
    x, y = planted(100, 64, 4, 1.0, seed=2)
    a = linear_probe(x, y, test_fraction=0.4, seed=3)
    b = linear_probe(x, y, test_fraction=0.4, seed=3)
    assert isinstance(a, LinearProbeResult)
    assert torch.equal(a.weight, b.weight) and a.accuracy == b.accuracy
    assert (a.split, a.seed, a.test_fraction) == ("stratified", 3, 0.4)
    assert (a.num_train, a.num_test, a.num_features) == (60, 40, 64)
    _, test_idx = stratified_split(y, 0.4, seed=3)
    assert a.accuracy == pytest.approx(float((a.test_predictions == y[test_idx]).double().mean()))
    record = a.record()
    assert record["probe_split"] == "stratified" and record["probe_num_test"] == 40
    assert all(not isinstance(v, torch.Tensor) for v in record.values())


def test_unseen_test_labels_count_as_wrong_and_images_are_flattened():
    x, y = planted(60, 48, 3, 3.0, seed=5)
    xt, yt = planted(30, 48, 3, 3.0, seed=5)
    yt = yt.clone()
    yt[:3] = 100  # never seen in training
    res = linear_probe(x.view(60, 3, 4, 4), y, xt.view(30, 3, 4, 4), yt)
    assert res.num_features == 48
    assert res.accuracy <= 27 / 30


def test_constant_features_predict_the_majority_class():
    x = torch.ones(12, 5)
    y = torch.tensor([0] * 7 + [1] * 5)
    res = linear_probe(x, y, x[:4], torch.tensor([0, 0, 1, 1]))
    assert res.test_predictions.tolist() == [0, 0, 0, 0] and res.accuracy == 0.5


def test_bad_input_raises_naming_it():
    x, y = planted(20, 8, 2, 1.0, seed=0)
    with pytest.raises(ValueError, match="both test_x and test_y"):
        linear_probe(x, y, x)
    with pytest.raises(ValueError, match="test_x has D = 7"):
        linear_probe(x, y, x[:, :7], y)
    with pytest.raises(ValueError, match="train_y must have shape"):
        linear_probe(x, y[:-1])
    with pytest.raises(ValueError, match="integers"):
        linear_probe(x, y.float())
    with pytest.raises(ValueError, match="at least 2 training classes"):
        linear_probe(x, torch.zeros(20, dtype=torch.long), x, y)
    with pytest.raises(ValueError, match="test_fraction"):
        linear_probe(x, y, test_fraction=1.0)
    with pytest.raises(ValueError, match="l2 values"):
        linear_probe(x, y, l2=0.0)
    with pytest.raises(ValueError, match="empty"):
        linear_probe(x, y, l2_grid=[])
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"(?i)nan|finite"):
        linear_probe(bad, y)
