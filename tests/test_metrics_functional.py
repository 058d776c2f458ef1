"""Metric math against brute-force numpy and scipy oracles, and closed forms."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mibench.metrics.functional import (
    frechet_distance,
    frechet_distance_of_features,
    gaussian_statistics,
    knn_distance,
    nearest_same_class_sq_distance,
    topk_accuracy,
)


def scipy_frechet(mu1, s1, mu2, s2) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("dim", [2, 16, 64])
def test_frechet_matches_scipy_sqrtm(dim):
    rng = np.random.default_rng(dim)
    a = rng.normal(size=(4 * dim, dim))
    b = rng.normal(size=(4 * dim, dim)) @ rng.normal(size=(dim, dim)) * 0.5 + 1.0
    mu1, s1 = a.mean(0), np.cov(a, rowvar=False)
    mu2, s2 = b.mean(0), np.cov(b, rowvar=False)
    expected = scipy_frechet(mu1, s1, mu2, s2)
    got = frechet_distance(*(torch.from_numpy(x) for x in (mu1, s1, mu2, s2)))
    assert got == pytest.approx(expected, rel=1e-8)


def test_gaussian_statistics_match_numpy_cov():
    x = torch.randn(50, 7, dtype=torch.float64)
    mu, sigma = gaussian_statistics(x)
    np.testing.assert_allclose(mu.numpy(), x.numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma.numpy(), np.cov(x.numpy(), rowvar=False), rtol=1e-10)


def test_frechet_closed_forms():
    x = torch.randn(200, 5, dtype=torch.float64)
    assert frechet_distance_of_features(x, x) == pytest.approx(0.0, abs=1e-9)
    # Equal covariances: the distance is the squared distance of the means.
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0], dtype=torch.float64)
    assert frechet_distance_of_features(x, x + shift) == pytest.approx(float(shift @ shift), rel=1e-9)
    # Isotropic Gaussians: |mu1-mu2|^2 + d (s1 + s2 - 2 sqrt(s1 s2)).
    d = 4
    value = frechet_distance(torch.zeros(d), 4 * torch.eye(d), torch.ones(d), torch.eye(d))
    assert value == pytest.approx(d + d * (4 + 1 - 2 * 2), rel=1e-12)


def test_frechet_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2 samples"):
        frechet_distance_of_features(torch.randn(1, 3), torch.randn(5, 3))


def brute_force_knn(q, ql, r, rl):
    out = []
    for i in range(len(q)):
        same = r[rl == ql[i]]
        out.append(min(float(((q[i] - s) ** 2).sum()) for s in same))
    return np.array(out)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.integers(1, 6), st.integers(1, 4), st.integers(0, 10_000))
def test_knn_matches_brute_force(n_query, n_ref, dim, n_classes, seed):
    g = torch.Generator().manual_seed(seed)
    refs = torch.randn(n_ref + n_classes, dim, generator=g) * 3
    ref_labels = torch.cat([torch.arange(n_classes), torch.randint(0, n_classes, (n_ref,), generator=g)])
    queries = torch.randn(n_query, dim, generator=g) * 3
    query_labels = torch.randint(0, n_classes, (n_query,), generator=g)
    q64, r64 = queries.double().numpy(), refs.double().numpy()
    expected = brute_force_knn(q64, query_labels.numpy(), r64, ref_labels.numpy())
    got = nearest_same_class_sq_distance(queries, query_labels, refs, ref_labels, chunk=7).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)
    assert knn_distance(queries, query_labels, refs, ref_labels) == pytest.approx(expected.mean(), rel=1e-9)


def test_knn_is_zero_for_private_images_and_ignores_other_classes():
    refs = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    labels = torch.tensor([0, 1])
    assert knn_distance(refs, labels, refs, labels) == 0.0
    # The query sits on class 1's image but is meant as class 0: its distance is to class 0 only.
    assert knn_distance(torch.tensor([[10.0, 0.0]]), torch.tensor([0]), refs, labels) == 100.0


def test_knn_without_references_of_a_class_raises():
    with pytest.raises(ValueError, match="no reference images of class 3"):
        knn_distance(torch.zeros(1, 2), torch.tensor([3]), torch.zeros(2, 2), torch.tensor([0, 1]))


def test_topk_accuracy_closed_forms():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0], [1.0, 3.0, 2.0, 0.0]])
    labels = torch.tensor([0, 1, 2])
    assert topk_accuracy(logits, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(logits, labels, 2) == pytest.approx(2 / 3)
    assert topk_accuracy(logits, labels, 3) == pytest.approx(1.0)
    assert topk_accuracy(logits, labels, 50) == 1.0  # k beyond the number of classes


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(2, 12), st.integers(0, 1000))
def test_topk_monotone_in_k_and_full_k_is_one(n, k_classes, seed):
    g = torch.Generator().manual_seed(seed)
    logits, labels = torch.randn(n, k_classes, generator=g), torch.randint(0, k_classes, (n,), generator=g)
    accs = [topk_accuracy(logits, labels, k) for k in range(1, k_classes + 1)]
    assert all(a <= b for a, b in itertools.pairwise(accs))
    assert accs[-1] == 1.0
    assert accs[0] == pytest.approx((logits.argmax(1) == labels).float().mean().item())


def test_frechet_metric_rejects_unknown_extractor_with_suggestion(tiny_suite):
    from mibench.errors import ConfigError
    from mibench.suite import resolve_suite

    tiny_suite["metrics"][3]["params"]["extractor"] = "evaluater"
    with pytest.raises(ConfigError, match="unknown feature extractor 'evaluater'; did you mean 'evaluator'"):
        resolve_suite(tiny_suite)


def test_non_finite_features_give_nan_not_an_error():
    fake = torch.randn(10, 3)
    fake[2, 1] = float("inf")
    assert np.isnan(frechet_distance_of_features(torch.randn(10, 3), fake))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_functional_metrics_give_the_same_numbers_on_cuda():
    from mibench.metrics.functional import nearest_set_share, prdc_nearest, roc_auc

    gen = torch.Generator().manual_seed(0)
    q, r = torch.randn(40, 8, generator=gen), torch.randn(90, 8, generator=gen)
    ql, rl = torch.arange(40) % 3, torch.arange(90) % 3
    cuda = [t.cuda() for t in (q, ql, r, rl)]
    assert knn_distance(*cuda) == pytest.approx(knn_distance(q, ql, r, rl), rel=1e-9)
    assert prdc_nearest(r.cuda(), q.cuda()) == pytest.approx(prdc_nearest(r, q))
    assert roc_auc(q[:, 0].cuda(), r[:, 0].cuda()) == pytest.approx(roc_auc(q[:, 0], r[:, 0]))
    assert torch.equal(
        nearest_set_share(q.cuda(), r[:45].cuda(), r[45:].cuda()).cpu(), nearest_set_share(q, r[:45], r[45:])
    )
