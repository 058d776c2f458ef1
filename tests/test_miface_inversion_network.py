"""MI-Face (Fredrikson 2015) and the training-based inversion network (Yang 2019) on tiny targets."""

from __future__ import annotations

import pytest
import torch

from mibench.attack import DataInfo
from mibench.attacks.inversion_network import InversionDecoder, InversionNetParams, InversionNetwork, truncate
from mibench.attacks.miface import MIFace, MIFaceParams, gaussian_blur3
from mibench.context import RunContext
from mibench.errors import AccessDenied
from mibench.models.base import ClassifierOutput
from mibench.oracle import Access, TargetOracle
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


def test_inversion_network_uses_scores_only_and_beats_random(attack_setting):
    target, data = attack_setting
    oracle = TargetOracle(target, Access.PROBABILITIES, num_classes=6, image_shape=(3, 16, 16))
    with pytest.raises(AccessDenied):
        oracle.logits(torch.zeros(1, 3, 16, 16))
    attack = InversionNetwork(InversionNetParams(width=16, epochs=30, batch_size=32, truncation=1))
    decoder = attack.build_prior(DataInfo(3, 16, 6))
    attack.train_prior(decoder, data.public, oracle, RunContext(seed=0))
    assert oracle.queries == len(data.public)  # one query per public image, none during inversion
    recon = attack.invert(decoder, oracle, torch.arange(6), RunContext())
    assert oracle.queries == len(data.public)
    with torch.no_grad():
        random = decoder(torch.softmax(torch.randn(6, 6, generator=torch.Generator().manual_seed(0)), 1))
    attacked, baseline = hit_rate(target, recon.images, recon.labels), hit_rate(target, random, recon.labels)
    assert attacked >= 0.6 and attacked >= baseline + 0.3
