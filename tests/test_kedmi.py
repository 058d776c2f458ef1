"""KED-MI: minibatch discrimination, the implicit real/fake losses, and the attack beating random latents."""

from __future__ import annotations

import math

import torch

from mibench.api.attack import DataInfo
from mibench.api.context import RunContext
from mibench.attacks.kedmi import KEDMI, KEDMIParams
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
        gan=KEDGANParams(z_dim=16, width=16, epochs=15, batch_size=32), iterations=400, samples=3, group_size=6
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


def test_soft_labels_come_from_the_target_in_train_mode_as_the_official_code(monkeypatch):
    """Official KED-MI/PLG-MI/LOMMA never call T.eval(): BatchNorm uses each batch's statistics."""
    from mibench.api.oracle import Access, TargetOracle
    from mibench.models.base import freeze
    from tests.conftest import tiny_model

    target = freeze(tiny_model(0, num_classes=6))
    with torch.no_grad():  # running statistics far from any batch's, so the two modes must differ
        for m in target.modules():
            if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
                m.running_mean.fill_(0.5)
                m.running_var.fill_(4.0)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    oracle = TargetOracle(target, Access.WHITE_BOX, num_classes=6, image_shape=(3, 16, 16))
    x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    train_mode, eval_mode = oracle.train_mode_probabilities(x), oracle.probabilities(x)
    assert not torch.allclose(train_mode, eval_mode, atol=1e-3)
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in before.items())  # the target itself is untouched
    assert not target.training and oracle.queries == 16
    label_only = TargetOracle(target, Access.LABELS, num_classes=6, image_shape=(3, 16, 16))
    import pytest

    from mibench.errors import AccessDenied

    with pytest.raises(AccessDenied):
        label_only.train_mode_probabilities(x)

    calls = {"train": 0, "eval": 0}
    real_train, real_eval = TargetOracle.train_mode_probabilities, TargetOracle.probabilities

    def spy_train(self, images):
        calls["train"] += 1
        return real_train(self, images)

    def spy_eval(self, images):
        calls["eval"] += 1
        return real_eval(self, images)

    monkeypatch.setattr(TargetOracle, "train_mode_probabilities", spy_train)
    monkeypatch.setattr(TargetOracle, "probabilities", spy_eval)
    from mibench.data.base import UNLABELLED, ImageSet
    from mibench.gan.semi_supervised import train_kedmi_gan

    public = ImageSet(torch.randint(0, 255, (16, 3, 16, 16), dtype=torch.uint8), torch.full((16,), UNLABELLED))
    for mode in ("train", "eval"):
        prior = KEDMI(KEDMIParams(gan={"z_dim": 8, "width": 8})).build_prior(DataInfo(3, 16, 6))
        params = KEDGANParams(z_dim=8, width=8, batch_size=8, max_steps=2, target_mode=mode)
        train_kedmi_gan(prior.generator, prior.discriminator, public, oracle, params, RunContext())
    assert calls == {"train": 2, "eval": 2}
