"""MI-Face (Fredrikson 2015) and the training-based inversion network (Yang 2019) on tiny targets."""

from __future__ import annotations

import math

import pytest
import torch

from mibench.api.attack import DataInfo
from mibench.api.context import RunContext
from mibench.api.oracle import Access, TargetOracle
from mibench.attacks.inversion_network import (
    InversionDecoder,
    InversionNetParams,
    InversionNetwork,
    log_confidence_encoding,
    truncate,
)
from mibench.attacks.miface import MIFace, MIFaceParams, gaussian_blur3
from mibench.data.base import to_float
from mibench.errors import AccessDenied
from mibench.models.base import ClassifierOutput
from tests.conftest import hit_rate, white_box


class Linear(torch.nn.Module):
    """Softmax regression on 1 x 2 x 2 images: class 0 likes bright pixels, class 1 dark ones."""

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        s = 3 * (x.flatten(1).sum(1) - 0.5)
        return ClassifierOutput(x.flatten(1), torch.stack([s, -s], 1))


def test_miface_stopping_rules():
    """Class 0 can reach 99% confidence (stops by gamma); class 1 cannot go below x = 0 (stops by beta)."""
    oracle = TargetOracle(Linear(), Access.WHITE_BOX, num_classes=2, image_shape=(1, 2, 2))
    params = MIFaceParams(iterations=500, patience=20, lr=0.5)
    recon = MIFace(params).invert(None, oracle, torch.tensor([0, 1]), RunContext())
    probs = torch.softmax(Linear()(recon.images).logits, 1)
    assert probs[0, 0] >= 0.99  # gamma reached
    assert recon.images[1].abs().max() == 0  # the best class-1 image is the start, x = 0 (p = 0.953)
    assert probs[1, 1] == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())
    assert recon.stats["mean_steps"] < 100  # both stopped long before alpha = 500


def test_gaussian_blur_keeps_constants_and_mass():
    const = torch.full((1, 3, 5, 5), 0.3)
    torch.testing.assert_close(gaussian_blur3(const, 0.5), const)
    impulse = torch.zeros(1, 1, 5, 5)
    impulse[0, 0, 2, 2] = 1
    blurred = gaussian_blur3(impulse, 0.5)
    assert blurred.sum().item() == pytest.approx(1.0) and blurred[0, 0, 2, 2] < 1


def test_miface_beats_noise_on_the_tiny_target(attack_setting):
    target, _ = attack_setting
    # The paper's lambda = 0.1 suits softmax regression; 1 - softmax of a CNN has far smaller input gradients.
    params = MIFaceParams(iterations=300, patience=50, lr=10.0)
    recon = MIFace(params).invert(None, white_box(target), torch.arange(6), RunContext())
    noise = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    attacked, baseline = hit_rate(target, recon.images, recon.labels), hit_rate(target, noise, recon.labels)
    assert attacked >= 0.8 and attacked >= baseline + 0.35


def test_truncation_and_decoder_shapes():
    scores = torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]])
    torch.testing.assert_close(truncate(scores, 1), torch.tensor([[0.0, 0.6, 0.0], [0.5, 0.0, 0.0]]))
    torch.testing.assert_close(truncate(scores, 2), torch.tensor([[0.0, 0.6, 0.3], [0.5, 0.0, 0.3]]))
    assert truncate(scores, None) is scores
    for size in (16, 32, 64):
        out = InversionDecoder(10, size, 3, 8)(torch.rand(2, 10))
        assert out.shape == (2, 3, size, size) and out.min() >= 0 and out.max() <= 1
    with pytest.raises(ValueError, match="power-of-two"):
        InversionDecoder(10, 48, 3, 8)


def test_log_confidence_encoding_of_a_known_vector():
    """Official `Inversion.forward`: log p clamped at -1000, + c, shifted by relu(-min), top-k scattered into zeros."""
    p = torch.tensor([[0.5, 0.25, 0.2, 0.05, 0.0]])
    full = log_confidence_encoding(p, None, 50.0)
    raw = torch.tensor([math.log(0.5), math.log(0.25), math.log(0.2), math.log(0.05), -1000.0]) + 50
    torch.testing.assert_close(full[0], raw + 950.0)  # the zero probability's -950 sets the shift
    top2 = log_confidence_encoding(p, 2, 50.0)
    torch.testing.assert_close(top2[0], torch.tensor([50 + math.log(0.5), 50 + math.log(0.25), 0.0, 0.0, 0.0]))
    low_c = log_confidence_encoding(p[:, :4], None, 1.0)  # log 0.05 + 1 < 0: shifted so the minimum is 0
    assert low_c.min().item() == pytest.approx(0.0) and low_c[0, 0].item() == pytest.approx(math.log(10.0))


def _trained_inversion(attack_setting, **params):
    target, data = attack_setting
    oracle = TargetOracle(
        target,
        Access.PROBABILITIES,
        num_classes=6,
        image_shape=(3, 16, 16),
        victims=(data.private_train, data.private_test),
    )
    attack = InversionNetwork(InversionNetParams(width=16, epochs=30, batch_size=32, **params))
    decoder = attack.build_prior(DataInfo(3, 16, 6))
    attack.train_prior(decoder, data.public, oracle, RunContext(seed=0))
    return attack, decoder, oracle


def test_inversion_network_reconstructs_each_victim_from_its_own_prediction(attack_setting):
    target, data = attack_setting
    attack, decoder, oracle = _trained_inversion(attack_setting, victims_per_class=3)
    with pytest.raises(AccessDenied):
        oracle.logits(torch.zeros(1, 3, 16, 16))
    assert oracle.queries == len(data.public)
    recon = attack.invert(decoder, oracle, torch.arange(6), RunContext())
    assert oracle.queries == len(data.public) + 18  # one query per victim image at attack time
    assert recon.victims is not None and len(recon.victims) == 18 and recon.restarts.tolist() == [0, 1, 2] * 6
    victims = to_float(data.private_train.images[recon.victims])
    assert torch.equal(recon.labels, data.private_train.labels[recon.victims])
    # Each reconstruction is closer to its own victim than to the other victims' images.
    own = (recon.images - victims).pow(2).flatten(1).mean(1)
    other = (recon.images - victims.roll(3, 0)).pow(2).flatten(1).mean(1)
    assert (own < other).float().mean() >= 0.7
    assert hit_rate(target, recon.images, recon.labels) >= 0.6


def test_inversion_network_sees_an_inference_time_defense(attack_setting):
    from mibench.defenses.midas import MIDAS, MIDASParams
    from mibench.models.base import freeze

    target, data = attack_setting
    attack, decoder, _ = _trained_inversion(attack_setting, victims_per_class=2)
    victims = (data.private_train, data.private_test)
    clean = TargetOracle(target, Access.PROBABILITIES, num_classes=6, image_shape=(3, 16, 16), victims=victims)
    defended_model = freeze(MIDAS(MIDASParams(bit_error_rate=0.05)).deploy(target, torch.Generator().manual_seed(0)))
    defended = TargetOracle(
        defended_model, Access.PROBABILITIES, num_classes=6, image_shape=(3, 16, 16), victims=victims
    )
    a = attack.invert(decoder, clean, torch.arange(6), RunContext())
    b = attack.invert(decoder, defended, torch.arange(6), RunContext())
    assert torch.equal(a.victims, b.victims) and defended.queries == 12
    assert not torch.allclose(a.images, b.images)  # the corrupted model's vectors reach the decoder


def test_inversion_network_class_onehot_variant_makes_no_query(attack_setting):
    attack, decoder, oracle = _trained_inversion(attack_setting, protocol="class-onehot")
    before = oracle.queries
    recon = attack.invert(decoder, oracle, torch.arange(6), RunContext())
    assert oracle.queries == before and recon.victims is None and len(recon.images) == 6
