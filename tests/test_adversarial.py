"""PGD against closed-form optima on linear models, the detection success rate, and the adversarial-detection metric
on a tiny Trap-MID target."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mibench.api.context import RunContext
from mibench.api.metric import MeasureInputs
from mibench.api.recipe import TrainSpec
from mibench.defenses.trap_mid import TrapMID, TrapMIDParams
from mibench.metrics.trapdoor_detection import AdversarialDetection, AdversarialDetectionParams
from mibench.models.base import ClassifierOutput, freeze
from mibench.training.adversarial import detection_success_rate, pgd_attack
from mibench.training.stack import DefenseStack
from tests.conftest import tiny_model


class Linear2(nn.Module):
    """Logits (0, w.x): the cross-entropy of class 0 grows with w.x, so the optimum is known in closed form."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.w = w

    def forward(self, x):
        score = (x.flatten(1) * self.w.flatten()).sum(1)
        return ClassifierOutput(x.flatten(1), torch.stack([torch.zeros_like(score), score], 1))


@pytest.fixture
def linear():
    w = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    return Linear2(w), torch.full((2, 3, 4, 4), 0.5), torch.zeros(2, dtype=torch.long)


def test_linf_pgd_reaches_the_corner_eps_sign_w(linear):
    model, x, y = linear
    adv = pgd_attack(model, x, y, norm="linf", eps=0.1, steps=50, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(adv - x, 0.1 * model.w.sign().expand_as(x), atol=1e-6, rtol=0)


def test_l2_pgd_moves_along_w_to_the_sphere(linear):
    model, x, y = linear
    adv = pgd_attack(model, x, y, norm="l2", eps=0.3, steps=100, generator=torch.Generator().manual_seed(1))
    delta = (adv - x).flatten(1)
    assert torch.allclose(delta.norm(dim=1), torch.full((2,), 0.3), atol=1e-5)
    # the objective w.delta reaches 99% of its maximum eps ||w|| (the random start's sideways part decays slowly)
    w = model.w.flatten()
    assert ((delta @ w) / (0.3 * w.norm()) > 0.99).all()


def test_pgd_stays_in_the_image_box(linear):
    model, _, y = linear
    x = torch.full((2, 3, 4, 4), 0.98)
    adv = pgd_attack(model, x, y, norm="linf", eps=0.5, steps=10)
    assert adv.min() >= 0 and adv.max() <= 1


def test_detection_success_rate_closed_form():
    clean, adv = torch.tensor([0.1, 0.3, 0.6]), torch.tensor([0.7, 0.2])
    assert detection_success_rate(clean, adv, 0.5) == pytest.approx(3 / 5)  # 0.1, 0.3 clean; 0.7 adversarial


def test_adversarial_detection_metric_on_a_tiny_trap_mid_target(defense_data):
    params = TrapMIDParams(alpha=0.25, beta=0.5, augment=False)
    spec = TrainSpec(epochs=20, batch_size=16, lr=0.05, selection="last")
    trained = DefenseStack([TrapMID(params)]).fit(tiny_model(), defense_data, spec, RunContext(seed=0))
    inputs = MeasureInputs(
        target=freeze(trained.model),
        evaluator=nn.Identity(),
        evaluator_accuracy=1.0,
        data=defense_data,
        eval_data=defense_data,
        classes=torch.arange(5),
        reconstructions=None,
        device=torch.device("cpu"),
        target_extras=trained.extras,
    )
    metric = AdversarialDetection(AdversarialDetectionParams(steps=10, max_images=20))
    values = {m.metric: m for m in metric.compute(inputs, RunContext(seed=0))}
    assert set(values) == {"adv_dsr_linf", "adv_auc_linf", "adv_dsr_l2", "adv_auc_l2"}
    assert all(0 <= m.value <= 1 for m in values.values())
    assert values["adv_dsr_linf"].details["n"] == 20
    # 8/255 PGD breaks an undefended tiny CNN; the trapdoored one is mostly broken too (its shortcut is the trapdoor)
    assert values["adv_dsr_linf"].details["robust_accuracy"] < 0.5
    inputs.target_extras = {}
    missing = metric.compute(inputs, RunContext(seed=0))  # no triggers: undefined values that say why
    assert {m.metric for m in missing} == set(values) and all(m.value is None for m in missing)
    assert all("no trapdoor triggers" in m.details["reason"] for m in missing)
