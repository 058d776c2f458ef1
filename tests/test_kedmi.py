"""KED-MI: minibatch discrimination, the implicit real/fake losses, and the attack beating random latents."""

from __future__ import annotations

import math

import torch

from mibench.attack import DataInfo
from mibench.attacks.kedmi import KEDMI, KEDMIParams
from mibench.context import RunContext
from mibench.gan.networks import KEDMIDiscriminator, MinibatchDiscrimination
from mibench.gan.semi_supervised import KEDGANParams, fake_loss, real_fake_loss, soft_cross_entropy
from tests.conftest import hit_rate, white_box


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


oracle = white_box


def test_kedmi_beats_random_latents(attack_setting):
    target, data = attack_setting
    torch.manual_seed(0)
    params = KEDMIParams(
        gan=KEDGANParams(z_dim=16, width=16, epochs=30, batch_size=32), iterations=1000, samples=3, group_size=6
    )
    attack = KEDMI(params)
    prior = attack.build_prior(DataInfo(3, 16, 6))
    attack.train_prior(prior, data.public, oracle(target), RunContext(seed=2))
    recon = attack.invert(prior, oracle(target), torch.arange(6), RunContext(seed=3))
    assert recon.images.shape == (18, 3, 16, 16) and recon.labels.tolist() == list(range(6)) * 3
    attacked = hit_rate(target, recon.images, recon.labels)
    with torch.no_grad():
        random = prior.generator(torch.randn(18, 16, generator=torch.Generator().manual_seed(0)))
    baseline = hit_rate(target, random, recon.labels)
    assert attacked >= 0.6
    assert attacked >= baseline + 0.35
