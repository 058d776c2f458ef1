"""PLG-MI: pseudo-labelling, conditional networks, colour jitter, and the attack beating random latents."""

from __future__ import annotations

import pytest
import torch

from mibench.api.context import RunContext
from mibench.attacks.plgmi import top_n_pseudo_labels
from mibench.data.base import to_float
from mibench.gan.conditional import (
    CategoricalConditionalBatchNorm,
    ConditionalResNetGenerator,
    SNProjectionDiscriminator,
    upsample2x_bilinear,
)
from mibench.training.augmentation import color_jitter
from tests.conftest import hit_rate, white_box

oracle = white_box


def test_top_n_pseudo_labels_match_a_per_class_sort(attack_setting):
    target, data = attack_setting
    idx = top_n_pseudo_labels(oracle(target), data.public, 7, torch.device("cpu"))
    with torch.no_grad():
        probs = torch.softmax(target(to_float(data.public.images)).logits, 1)
    assert idx.shape == (6, 7)
    for c in range(6):
        expected = probs[:, c].argsort(descending=True)[:7]
        assert set(idx[c].tolist()) == set(expected.tolist())


def test_conditional_networks_at_64():
    g = ConditionalResNetGenerator(1000, 64, 3, 64, 128)
    assert g.l1.out_features == 1024 * 16
    assert [b.c1.in_channels for b in g.blocks] == [1024, 512, 256, 128]
    d = SNProjectionDiscriminator(1000, 64, 3, 64)
    assert [b.c_sc.weight_orig.shape[0] for b in d.blocks] == [64, 128, 256, 512, 1024]
    x = g(torch.randn(2, 128), torch.tensor([3, 7]))
    assert x.shape == (2, 3, 64, 64) and x.abs().max() <= 1
    assert d(x, torch.tensor([3, 7])).shape == (2,)


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (1, 5, 1, 7), (3, 2, 8, 3)])
def test_upsample2x_equals_torch_bilinear(shape):
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    ours = upsample2x_bilinear(x)
    ref = torch.nn.functional.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    (g_ours,) = torch.autograd.grad(ours.square().sum(), x)
    (g_ref,) = torch.autograd.grad(ref.square().sum(), x)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-12, atol=1e-12)


def test_conditional_batch_norm_uses_class_parameters():
    cbn = CategoricalConditionalBatchNorm(2, 3).eval()
    with torch.no_grad():
        cbn.gamma.weight[1] = torch.tensor([2.0, 3.0])
        cbn.beta.weight[1] = torch.tensor([0.5, -1.0])
    x = torch.randn(1, 2, 4, 4)
    out = cbn(x, torch.tensor([1]))
    normalised = x / (1 + 1e-5) ** 0.5  # eval mode: running mean 0, var 1
    torch.testing.assert_close(
        out, normalised * torch.tensor([2.0, 3.0]).view(1, 2, 1, 1) + torch.tensor([0.5, -1.0]).view(1, 2, 1, 1)
    )
    torch.testing.assert_close(cbn(x, torch.tensor([0])), normalised)  # initialised to identity


def test_color_jitter_closed_form_and_probability():
    x = torch.full((4, 3, 2, 2), 0.5)
    x[:, :, 0, 0] = 0.8  # stays below 1 at the largest factor 1.2, so no clamping
    gen = torch.Generator().manual_seed(0)
    out = color_jitter(x, 0.2, 0.0, 1.0, gen)
    ratio = out / x
    assert torch.allclose(ratio, ratio[:, :1, :1, :1].expand_as(ratio).clone(), atol=1e-6)  # one factor per image
    assert ((ratio[:, 0, 0, 0] >= 0.8) & (ratio[:, 0, 0, 0] <= 1.2)).all()
    assert torch.equal(color_jitter(x, 0.2, 0.2, 0.0, gen), x)
    bright = color_jitter(torch.ones(2, 1, 2, 2), 0.5, 0.0, 1.0, gen)
    assert bright.max() <= 1.0  # clamped


def test_plgmi_beats_random_latents(attack_setting, plgmi_prior):
    target, _ = attack_setting
    attack, prior = plgmi_prior
    assert prior.pseudo_labels.shape == (6, 20)
    recon = attack.invert(prior, oracle(target), torch.arange(6), RunContext(seed=3))
    assert recon.images.min() >= 0 and recon.images.max() <= 1
    attacked = hit_rate(target, recon.images, recon.labels)
    with torch.no_grad():
        random = prior.generator(torch.randn(18, 32, generator=torch.Generator().manual_seed(0)), recon.labels)
    baseline = hit_rate(target, random.clamp(0, 1), recon.labels)
    assert attacked >= 0.8
    assert attacked >= baseline + 0.35
