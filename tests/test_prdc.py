"""PRDC against the `prdc` package, ROC AUC against sklearn, nearest-set shares: closed forms and oracles."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from prdc import compute_prdc

from mibench.metrics.functional import (
    kth_neighbour_radii,
    nearest_set_share,
    prdc_naeem,
    prdc_nearest,
    roc_auc,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_naeem_variant_equals_the_prdc_package(seed):
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(120, 8))
    fake = rng.normal(loc=0.3, scale=1.2, size=(90, 8))
    expected = compute_prdc(real_features=real, fake_features=fake, nearest_k=5)
    got = prdc_naeem(torch.from_numpy(real), torch.from_numpy(fake), k=5)
    for name in ("precision", "recall", "density", "coverage"):
        assert got[name] == pytest.approx(expected[name], abs=1e-12), name


def test_kth_neighbour_radii_closed_form():
    points = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    # Sorted distances from 0: 0, 1, 3, 7 -> k=1: 1, k=2: 3; from 7: 0, 4, 6, 7.
    torch.testing.assert_close(kth_neighbour_radii(points, 1), torch.tensor([1.0, 1.0, 2.0, 4.0], dtype=torch.float64))
    torch.testing.assert_close(kth_neighbour_radii(points, 2), torch.tensor([3.0, 2.0, 3.0, 6.0], dtype=torch.float64))


@pytest.mark.parametrize("fn", [prdc_naeem, prdc_nearest])
def test_identical_and_disjoint_sets(fn):
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    same = fn(x, x.clone(), 3)
    assert same["coverage"] == 1.0
    if fn is prdc_nearest:  # "<=": every point is inside its own nearest ball
        assert same["precision"] == 1.0 and same["recall"] == 1.0
    far = fn(x, x + 1000.0, 3)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_nearest_variant_uses_only_the_nearest_ball():
    real = torch.tensor([[0.0], [1.0], [10.0], [20.0]], dtype=torch.float64)  # k=1 radii: 1, 1, 9, 10
    fake = torch.tensor([[4.0], [4.5]], dtype=torch.float64)
    # Nearest real of 4.0 is 1 (radius 1, distance 3): outside; but 4.0 is inside 10's ball (distance 6 <= 9).
    assert prdc_nearest(real, fake, 1)["precision"] == 0.0
    assert prdc_naeem(real, fake, 1)["precision"] == 1.0


def test_roc_auc_equals_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    neg = torch.from_numpy(rng.integers(0, 6, 40).astype(float))
    pos = torch.from_numpy(rng.integers(2, 9, 25).astype(float))
    labels = np.r_[np.zeros(40), np.ones(25)]
    assert roc_auc(neg, pos) == pytest.approx(roc_auc_score(labels, np.r_[neg.numpy(), pos.numpy()]), abs=1e-12)
    assert roc_auc(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0])) == 1.0


def test_nearest_set_share_closed_form():
    first = torch.tensor([[0.0, 0.0]])
    second = torch.tensor([[10.0, 0.0]])
    queries = torch.tensor([[1.0, 0.0], [9.0, 0.0], [5.0, 0.0]])
    assert nearest_set_share(queries, first, second).tolist() == [True, False, True]  # ties go to the first set
