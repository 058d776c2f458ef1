"""DeepInversion: the BatchNorm statistics loss in closed form, the TV terms, a white-box attack above chance."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mibench.api.context import RunContext
from mibench.api.oracle import Access, TargetOracle
from mibench.api.recipe import TrainSpec
from mibench.attacks.deepinversion import (
    BatchNormStatistics,
    DeepInversion,
    DeepInversionParams,
    cosine_lr,
    image_prior_losses,
    statistics_mismatch,
)
from mibench.errors import AccessDenied, MibenchError
from mibench.models.base import build_classifier, freeze
from mibench.training.classifier import train_classifier
from tests.conftest import hit_rate


def test_statistics_loss_equals_a_hand_computed_value_on_a_one_layer_batchnorm_model():
    bn = nn.BatchNorm2d(2).eval()
    bn.running_mean.copy_(torch.tensor([0.5, -1.0]))
    bn.running_var.copy_(torch.tensor([2.0, 0.25]))
    # channel 0 holds 1, 2, 3, 4 (mean 2.5, biased var 1.25); channel 1 holds 0, 0, 0, 0 (mean 0, var 0)
    x = torch.tensor([[[[1.0, 2.0]], [[0.0, 0.0]]], [[[3.0, 4.0]], [[0.0, 0.0]]]])
    hooks = BatchNormStatistics(bn, first_multiplier=10.0)
    bn(x)
    expected = math.hypot(2.0 - 1.25, 0.25 - 0.0) + math.hypot(0.5 - 2.5, -1.0 - 0.0)
    assert statistics_mismatch(x, bn.running_mean, bn.running_var).item() == pytest.approx(expected)
    assert hooks.loss().item() == pytest.approx(10.0 * expected)  # the first BatchNorm counts ten times
    hooks.close()
    assert not bn._forward_hooks


def test_total_variation_terms_of_a_single_step_edge():
    x = torch.zeros(1, 1, 2, 2)
    x[..., 1] = 1.0  # left column 0, right column 1
    tv_l1, tv_l2 = image_prior_losses(x)
    # horizontal differences -1, -1; vertical 0, 0; each diagonal one difference of -1
    assert tv_l1.item() == pytest.approx(1 + 0 + 1 + 1)
    assert tv_l2.item() == pytest.approx(math.sqrt(2) + 0 + 1 + 1)


def test_cosine_schedule_warms_up_then_decays_to_zero():
    assert cosine_lr(0.25, 100, 1000, 0) == pytest.approx(0.0025)
    assert cosine_lr(0.25, 100, 1000, 99) == pytest.approx(0.25)
    assert cosine_lr(0.25, 100, 1000, 100) == pytest.approx(0.25)
    assert cosine_lr(0.25, 100, 1000, 550) == pytest.approx(0.125)
    assert cosine_lr(0.25, 100, 3, 0) > 0  # a short budget still steps


@pytest.fixture(scope="module")
def bn_target(attack_setting):
    """A tiny ResNet (BatchNorm2d throughout) trained on the attack setting's six identities."""
    _, data = attack_setting
    torch.manual_seed(0)
    model = build_classifier("tiny-resnet", {}, num_classes=6, in_channels=3, image_size=16)
    spec = TrainSpec(epochs=8, batch_size=32, lr=0.05, selection="last")
    train_classifier(model, data.private_train, data.private_test, spec, RunContext(seed=2))
    return freeze(model)


def test_deepinversion_beats_chance_against_an_undefended_tiny_target(bn_target):
    classes = torch.arange(6)
    oracle = TargetOracle(bn_target, Access.WHITE_BOX, num_classes=6, image_shape=(3, 16, 16))
    params = DeepInversionParams(restarts=2, iterations=150, batch_size=12, lr=0.1, warmup=10)
    recon = DeepInversion(params).invert(None, oracle, classes, RunContext(seed=0))
    assert recon.images.shape == (12, 3, 16, 16)
    assert recon.images.min() >= 0 and recon.images.max() <= 1
    assert hit_rate(bn_target, recon.images, recon.labels) >= 0.9  # chance 1/6
    assert oracle.queries == 150 * 12  # one batch of 12 images, one forward per step
    bn = next(m for m in bn_target.modules() if isinstance(m, nn.BatchNorm2d))
    assert not bn._forward_hooks  # hooks removed after the attack


def test_deepinversion_needs_white_box_access_and_batchnorm(bn_target):
    params = DeepInversionParams(restarts=1, iterations=2, batch_size=6)
    labels_only = TargetOracle(bn_target, Access.LABELS, num_classes=6, image_shape=(3, 16, 16))
    with pytest.raises(AccessDenied):
        DeepInversion(params).invert(None, labels_only, torch.arange(2), RunContext())
    no_bn = freeze(nn.Sequential(nn.Flatten(), nn.Linear(768, 6)))
    oracle = TargetOracle(no_bn, Access.WHITE_BOX, num_classes=6, image_shape=(3, 16, 16))
    with pytest.raises(MibenchError, match="needs a target with BatchNorm2d layers"):
        DeepInversion(params).invert(None, oracle, torch.arange(2), RunContext())


def test_a_purified_target_keeps_its_own_batchnorm_prior(bn_target):
    """The adversarial purifier's decoder has BatchNorms too; they are not the classifier's prior (smoke found it)."""
    from mibench.defenses.purifiers import AdversarialLogits, AdversarialPurifierParams, PurifiedClassifier
    from mibench.inversion.decoder import InversionDecoder

    params = AdversarialPurifierParams(iterations=2)
    deployed = freeze(PurifiedClassifier(bn_target, AdversarialLogits(InversionDecoder(6, 16, 3, 8), params)))
    own = [m for m in bn_target.modules() if isinstance(m, nn.BatchNorm2d)]
    hooks = BatchNormStatistics(deployed, 10.0)
    assert hooks.layers == own
    hooks.close()
    oracle = TargetOracle(deployed, Access.WHITE_BOX, num_classes=6, image_shape=(3, 16, 16))
    recon = DeepInversion(DeepInversionParams(restarts=1, iterations=3, batch_size=6)).invert(
        None, oracle, torch.arange(6), RunContext(seed=0)
    )
    assert recon.images.shape == (6, 3, 16, 16)


def test_the_default_keeps_the_last_iterate_as_the_cited_command_does_and_records_the_kept_phase(bn_target):
    # The README command mibench cites passes no --store_best_images: its images are the last iterates (the
    # lowest-loss images are that flag's). The phase a kept image comes from is recorded: the global lowest-loss
    # rule can keep a half-resolution image whose detail within each 2x2 block is still the start noise.
    assert DeepInversionParams().selection == "last"
    oracle = TargetOracle(bn_target, Access.WHITE_BOX, num_classes=6, image_shape=(3, 16, 16))
    shares = {}
    for selection in ("last", "lowest-loss"):
        params = DeepInversionParams(restarts=1, iterations=12, batch_size=6, lr=0.1, warmup=2, selection=selection)
        recon = DeepInversion(params).invert(None, oracle, torch.arange(6), RunContext(seed=0))
        shares[selection] = recon.stats["kept_from_half_resolution"]
    assert shares["last"] == 0.0
    assert 0.0 <= shares["lowest-loss"] <= 1.0
