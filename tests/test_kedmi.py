"""KED-MI: minibatch discrimination, the implicit real/fake losses, and the attack beating random latents."""

from __future__ import annotations

import math

import pytest
import torch

from mibench.attack import DataInfo
from mibench.attacks.kedmi import KEDMI, KEDMIParams
from mibench.context import RunContext
from mibench.data.synthetic import SyntheticIdentities, SyntheticParams
from mibench.gan.networks import KEDMIDiscriminator, MinibatchDiscrimination
from mibench.gan.semi_supervised import KEDGANParams, fake_loss, real_fake_loss, soft_cross_entropy
from mibench.models.base import build_classifier, freeze
from mibench.oracle import Access, TargetOracle
from mibench.suite import TrainSpec
from mibench.training import train_classifier


def test_minibatch_discrimination_closed_form_and_groups():
    layer = MinibatchDiscrimination(2, kernels=1, kernel_dim=2)
    with torch.no_grad():
        layer.T.copy_(torch.eye(2))
    x = torch.tensor([[0.0, 0.0], [1.0, 2.0], [5.0, 5.0]])
    out = layer(x)
    # o_i = sum_{j != i} exp(-|x_i - x_j|_1): pairwise L1 distances 3, 10, 7.
    expected = torch.tensor([math.exp(-3) + math.exp(-10), math.exp(-3) + math.exp(-7), math.exp(-10) + math.exp(-7)])
    torch.testing.assert_close(out.squeeze(1), expected)
    grouped = layer(torch.cat([x, x]), group_size=3)
    torch.testing.assert_close(grouped, torch.cat([out, out]))


def test_kedmi_discriminator_shapes_at_64():
    d = KEDMIDiscriminator(1000, 64, 3, 64)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs] == [
        (3, 64, 5),
        (64, 128, 5),
        (128, 256, 5),
        (256, 256, 3),
    ]
    f, logits = d(torch.rand(4, 3, 64, 64))
    assert f.shape == (4, 4096) and logits.shape == (4, 1000)
    assert d.classifier.in_features == 4096 + 64


def test_implicit_real_fake_losses():
    logits = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    d_real = torch.sigmoid(torch.logsumexp(logits, 1))
    torch.testing.assert_close(real_fake_loss(logits), -torch.log(d_real))
    torch.testing.assert_close(fake_loss(logits), -torch.log(1 - d_real))
    target = torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    expected = -(target * torch.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(soft_cross_entropy(logits, target), expected)


@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(0)
    data = SyntheticIdentities(SyntheticParams(num_private=6, num_public=12, public_per_identity=30)).load(
        None, 16, None
    )
    target = build_classifier("tiny-cnn", {}, num_classes=6, in_channels=3, image_size=16)
    train_classifier(
        target,
        data.private_train,
        data.private_test,
        TrainSpec(epochs=6, batch_size=32, lr=0.05, selection="last"),
        RunContext(seed=1),
    )
    return freeze(target), data


def oracle(target):
    return TargetOracle(target, Access.WHITE_BOX, num_classes=6, image_shape=(3, 16, 16))


def test_kedmi_beats_random_latents(setting):
    target, data = setting
    params = KEDMIParams(
        gan=KEDGANParams(z_dim=16, width=16, epochs=30, batch_size=32), iterations=1000, samples=3, group_size=6
    )
    attack = KEDMI(params)
    prior = attack.build_prior(DataInfo(3, 16, 6))
    attack.train_prior(prior, data.public, oracle(target), RunContext(seed=2))
    recon = attack.invert(prior, oracle(target), torch.arange(6), RunContext(seed=3))
    assert recon.images.shape == (18, 3, 16, 16) and recon.labels.tolist() == list(range(6)) * 3
    with torch.no_grad():
        attacked = (target(recon.images).logits.argmax(1) == recon.labels).float().mean().item()
        random = prior.generator(torch.randn(18, 16, generator=torch.Generator().manual_seed(0)))
        baseline = (target(random).logits.argmax(1) == recon.labels).float().mean().item()
    assert attacked >= 0.6
    assert attacked >= baseline + 0.35
