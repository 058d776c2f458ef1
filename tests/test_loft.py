"""LoFt / CALoR: the inverse focal loss's closed-form optimum, the head's rank, and the two training stages.

The neck and the loss are pinned to the authors' library by tests/goldens/loft.pt (tests/test_parity.py)."""

from __future__ import annotations

import math

import pytest
import torch

from mibench.api.context import RunContext
from mibench.api.recipe import TrainSpec
from mibench.defenses.loft import LoFt, LoFtParams, LowRankHead, inverse_focal_loss
from mibench.defenses.negls import NegLS, NegLSParams
from mibench.training.stack import DefenseStack
from tests.conftest import tiny_model


@pytest.mark.parametrize("gamma", [2.0, 8.0])
def test_confidence_adaptation_stops_rewarding_confidence_at_exp_minus_one_over_gamma(gamma):
    # alpha p^gamma log p is smallest at p = exp(-1/gamma): descent on free logits settles there, not at 1
    logits = torch.tensor([[4.0, 0.0, 0.0]], requires_grad=True)
    optimiser = torch.optim.SGD([logits], lr=2.0)
    for _ in range(3000):
        optimiser.zero_grad()
        inverse_focal_loss(logits, torch.tensor([0]), gamma, 0.25).backward()
        optimiser.step()
    assert logits.softmax(1)[0, 0].item() == pytest.approx(math.exp(-1 / gamma), abs=1e-3)
    # and cross-entropy's direction is reversed above it: a more confident logit raises the loss
    confident = torch.tensor([[9.0, 0.0, 0.0]])
    assert inverse_focal_loss(confident, torch.tensor([0]), gamma, 0.25) > inverse_focal_loss(
        logits.detach(), torch.tensor([0]), gamma, 0.25
    )


def test_the_head_has_the_official_rank_and_keeps_the_backbone_feature():
    model = tiny_model(num_classes=5)
    wrapped = LoFt(LoFtParams(rank=3)).wrap(model)
    assert isinstance(wrapped, LowRankHead)
    linear_in, linear_out = wrapped.neck[1], wrapped.neck[3]
    assert torch.linalg.matrix_rank(linear_out.weight @ linear_in.weight).item() == 3
    x = torch.rand(4, 3, 16, 16)
    wrapped.eval()
    out = wrapped(x)
    torch.testing.assert_close(out.features, model(x).features)  # the neck's input, as feature_compressed=False
    assert out.logits.shape == (4, 5)


def test_both_stages_train_and_the_low_rank_accuracy_is_recorded(defense_data):
    spec = TrainSpec(epochs=1, batch_size=16, lr=0.05, selection="last")
    params = LoFtParams(rank=4, recipe={"epochs": 2, "batch_size": 16, "milestones": []}, ca_epochs=2, ca_lr=0.01)
    stack = DefenseStack([LoFt(params)])
    setup = stack.setup(spec)
    assert (setup.spec.optimizer, setup.spec.lr, setup.spec.epochs) == ("adam", 1e-3, 2)
    first_only = LoFt(params.model_copy(update={"confidence_adaptation": False}))
    torch.manual_seed(0)
    plain = first_only.fit(first_only.wrap(tiny_model(num_classes=5)), defense_data, setup, RunContext(seed=5))
    torch.manual_seed(0)
    trained = LoFt(params).fit(stack.wrap(tiny_model(num_classes=5)), defense_data, setup, RunContext(seed=5))
    assert [s.metric for s in trained.stats] == ["loft_low_rank_accuracy"]
    assert trained.stats[0].value == pytest.approx(plain.test_accuracy)  # stage 1 is the same training
    moved = [not torch.equal(a, b) for a, b in zip(plain.model.parameters(), trained.model.parameters(), strict=True)]
    assert any(moved)  # the adaptation changed the weights


def test_stacking_with_another_criterion_is_refused_before_any_training(defense_data):
    stack = DefenseStack([NegLS(NegLSParams()), LoFt(LoFtParams())])
    with pytest.raises(ValueError, match="'negls' and 'loft' both replace the training criterion"):
        stack.fit(tiny_model(num_classes=5), defense_data, TrainSpec(epochs=50), RunContext(seed=1))
