"""Target access: each level exposes exactly what it declares, and counts queries."""

from __future__ import annotations

import pytest
import torch

from mibench.api.oracle import Access, TargetOracle
from mibench.errors import AccessDenied, QueryBudgetExceeded
from mibench.models.base import build_classifier


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_classifier("tiny-cnn", {}, num_classes=5, in_channels=3, image_size=16)


def oracle(model, access, **kw):
    return TargetOracle(model, access, num_classes=5, image_shape=(3, 16, 16), **kw)


def test_label_only_refuses_gradients_logits_scores_and_the_model(model):
    o = oracle(model, Access.LABELS)
    x = torch.rand(4, 3, 16, 16)
    labels = o.labels(x)
    assert labels.dtype == torch.long and labels.shape == (4,)
    assert not labels.requires_grad
    with pytest.raises(AccessDenied, match="needs white-box access; this attack declared labels access"):
        o.logits(x)
    with pytest.raises(AccessDenied, match="white-box"):
        o(x)
    with pytest.raises(AccessDenied, match="needs probabilities access"):
        o.probabilities(x)
    with pytest.raises(AccessDenied, match="the target model"):
        _ = o.model
    with pytest.raises(AccessDenied, match="no gradients"):
        o.labels(x.clone().requires_grad_(True))


def test_probabilities_are_detached_softmax(model):
    o = oracle(model, Access.PROBABILITIES)
    x = torch.rand(3, 3, 16, 16)
    p = o.probabilities(x)
    assert not p.requires_grad
    torch.testing.assert_close(p.sum(1), torch.ones(3))
    torch.testing.assert_close(p, torch.softmax(model.eval()(x).logits, 1))
    with pytest.raises(AccessDenied):
        o.logits(x)


def test_white_box_gives_input_gradients_but_frozen_weights(model):
    o = oracle(model, Access.WHITE_BOX)
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    o.logits(x)[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in o.model.parameters())
    assert not o.model.training


def test_queries_are_counted_and_capped(model):
    o = oracle(model, Access.LABELS, max_queries=10)
    o.labels(torch.rand(4, 3, 16, 16))
    o.labels(torch.rand(6, 3, 16, 16))
    assert o.queries == 10
    with pytest.raises(QueryBudgetExceeded, match="11 target queries exceed the cap of 10"):
        o.labels(torch.rand(1, 3, 16, 16))


def test_wrong_input_shape_is_rejected(model):
    with pytest.raises(ValueError, match=r"N x \(3, 16, 16\)"):
        oracle(model, Access.LABELS).labels(torch.rand(2, 3, 8, 8))


def test_internal_score_access_checks_the_level_too():
    oracle = TargetOracle(torch.nn.Identity(), Access.LABELS, num_classes=2, image_shape=(1, 1, 2))
    with pytest.raises(AccessDenied):
        oracle._scores(torch.zeros(1, 1, 1, 2), Access.PROBABILITIES)
    with pytest.raises(AccessDenied, match="victim"):
        oracle.victim_probabilities(torch.tensor([0]))


def test_no_attack_reaches_into_the_oracle_privately():
    """Attacks use the public access methods only: no `oracle._...` and no name-mangled model attribute."""
    import re
    from pathlib import Path

    offenders = []
    for path in sorted(Path("mibench/attacks").glob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"oracle\._|_TargetOracle__|__model\b|__victims\b", line):
                offenders.append(f"{path}:{number}: {line.strip()}")
    assert offenders == []
