"""AT-AT (anti-adversarial training, ICLR 2026) and the robust-accuracy metric: targeted PGD, the AT-AT loss term, and
PGD robust accuracy on a linear model whose flips have a closed form."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F

from mibench.api.context import RunContext
from mibench.api.defense import TrainingSetup
from mibench.api.recipe import TrainSpec
from mibench.defenses.atat import ATAT, ATATParams
from mibench.models.base import ClassifierOutput
from mibench.training.adversarial import pgd_attack


class Linear(torch.nn.Module):
    """logits = x W (flattened 2 x 2 grey images, 3 classes)."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight = torch.nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        features = x.flatten(1)
        return ClassifierOutput(features, features @ self.weight)


def test_targeted_pgd_moves_towards_the_target_inside_the_ball():
    torch.manual_seed(0)
    model = Linear(torch.randn(4, 3))
    x = torch.rand(8, 1, 2, 2) * 0.5 + 0.25
    target = torch.full((8,), 2)
    adversarial = pgd_attack(model, x, target, norm="linf", eps=0.05, steps=5, step_size=0.01,
                             generator=torch.Generator().manual_seed(1), targeted=True)  # fmt: skip
    assert (adversarial - x).abs().max() <= 0.05 + 1e-7
    before, after = F.cross_entropy(model(x).logits, target), F.cross_entropy(model(adversarial).logits, target)
    assert after < before  # towards class 2
    # without a random start, one step is exactly eps-clipped signed descent of CE(., t)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x.requires_grad_(True)).logits, target), x)
    one = pgd_attack(model, x.detach(), target, norm="linf", eps=0.05, steps=1, step_size=0.01, targeted=True,
                     random_start=False)  # fmt: skip
    torch.testing.assert_close(one, (x.detach() - 0.01 * grad.sign()).clamp(0, 1))


def test_atat_adds_the_weighted_loss_of_targeted_examples_learned_as_their_target():
    torch.manual_seed(0)
    model = Linear(torch.randn(4, 3))
    defense = ATAT(ATATParams())
    defense.prepare(model, None, TrainSpec(), RunContext(seed=3))
    setup = defense.configure(TrainingSetup(TrainSpec()))
    x, y = torch.rand(16, 1, 2, 2), torch.arange(16) % 3
    terms, _ = setup.loss(model, x, y, epoch=0)
    assert set(terms) == {"loss", "ce", "adv_ce"}
    assert terms["loss"].item() == pytest.approx(terms["ce"].item() + terms["adv_ce"].item())
    # the same stream again: the targets (never the true class) and the examples it drew, recomputed
    replay = ATAT(ATATParams())
    replay.prepare(model, None, TrainSpec(), RunContext(seed=3))
    gen = replay._generator
    drawn = torch.randint(0, 3, (16,), generator=gen)
    wanted = torch.where(drawn == y, (drawn + 1) % 3, drawn)
    assert not (wanted == y).any()
    adversarial = pgd_attack(model, x, wanted, norm="linf", eps=2.5e-4, steps=5, step_size=5e-5, generator=gen,
                             targeted=True)  # fmt: skip
    expected = 0.08 * F.cross_entropy(model(adversarial).logits, wanted)
    torch.testing.assert_close(terms["adv_ce"], expected)
    # the classic adversarial-training configuration of the same file: only the untargeted adversarial loss
    at = ATAT(ATATParams(targeted=False, standard_weight=0.0, adversarial_weight=1.0, epsilon=0.01))
    terms, _ = at.configure(TrainingSetup(TrainSpec())).loss(model, x, y, epoch=0)
    assert terms["ce"].item() == 0.0 and terms["adv_ce"].item() > 0


def test_robust_accuracy_flips_exactly_the_points_within_reach():
    # two classes, logits (w.x, -w.x): an L-inf step of eps changes w.x by at most eps |w|_1, so a correctly
    # classified point with |w.x| > eps |w|_1 cannot flip and one with less (and room inside [0, 1]) does
    from mibench.metrics.robust_accuracy import RobustAccuracy, RobustAccuracyParams
    from tests.conftest import random_measure_inputs

    w = torch.tensor([1.0, -1.0, 0.0, 0.0])
    model = Linear(torch.stack([w, -w], 1))
    x = torch.tensor([[0.9, 0.1, 0.5, 0.5], [0.53, 0.47, 0.5, 0.5], [0.1, 0.9, 0.5, 0.5], [0.48, 0.52, 0.5, 0.5]])
    labels = torch.tensor([0, 0, 1, 1])
    inputs = random_measure_inputs([0, 1], torch.rand(2, 3, 4, 4), [0, 1])
    inputs.data = types.SimpleNamespace(private_test=_ImageSet(x.view(4, 1, 2, 2), labels))
    inputs.target = model
    eps = 0.05  # eps |w|_1 = 0.1: |w.x| of 0.8 holds, 0.06 and 0.04 flip
    (value,) = RobustAccuracy(RobustAccuracyParams(eps=eps, steps=10)).compute(inputs, RunContext(seed=0))
    assert value.value == 0.5 and value.details["n"] == 4 and value.details["attack"].startswith("PGD-10")
    (tiny,) = RobustAccuracy(RobustAccuracyParams(eps=1e-4, steps=5)).compute(inputs, RunContext(seed=0))
    assert tiny.value == 1.0  # nothing within reach: the clean accuracy


class _ImageSet:
    """A private test split of float images stored as uint8 (what `to_float` reads back)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images = (images * 255).round().to(torch.uint8)
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)
