"""AlignMI's gradient alignment (PAA / TAA, Peng et al., NeurIPS 2025) as a plug-in of GMI and KED-MI: the aligned
gradient's closed form, unchanged cache keys when off, the query cost, and a GMI+PAA run on a tiny target.

The searches' steps are pinned to the official code by tests/goldens/alignmi.pt (tests/test_parity.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mibench.api.context import RunContext
from mibench.attacks.gmi import GMI, GMIParams
from mibench.attacks.kedmi import KEDMIParams
from mibench.inversion.alignment import AlignmentParams, aligned_gradient, aligned_loss
from tests.conftest import hit_rate, white_box


def quadratic(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """A per-sample loss with a known gradient: 0.5 ||x - c_y||^2, gradient x - c_y."""
    centres = torch.linspace(0, 1, 3).view(3, 1, 1, 1)
    return 0.5 * (images - centres[labels]).pow(2).flatten(1).sum(1)


def test_paa_without_noise_on_a_full_range_batch_is_the_plain_gradient():
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    x[0, 0, 0, 0], x[1, 0, 0, 0] = 0.0, 1.0  # min-max normalisation is then the identity
    labels = torch.tensor([0, 2])
    g = aligned_gradient(x, labels, quadratic, AlignmentParams(mode="paa", spread=0.0, samples=3), torch.Generator())
    centres = torch.tensor([0.0, 1.0]).view(2, 1, 1, 1)
    torch.testing.assert_close(g, x - centres)


def test_paa_averages_the_gradients_of_the_noisy_copies():
    # the loss is quadratic, so each copy's gradient is (copy - c) / range and the average is linear in the noise
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([1, 1])
    p = AlignmentParams(mode="paa", spread=0.5, samples=4)
    got = aligned_gradient(x, labels, quadratic, p, torch.Generator().manual_seed(7))
    draws = torch.Generator().manual_seed(7)
    sigma = 0.5 * float(x.max() - x.min())
    expected = torch.zeros_like(x)
    for _ in range(4):
        copy = x + torch.randn(x.shape, generator=draws) * sigma
        low, high = copy.min(), copy.max()
        expected += ((copy - low) / (high - low) - 0.5) / (high - low)
    torch.testing.assert_close(got, expected / 4)


def test_the_wrapped_loss_keeps_its_value_and_replaces_only_its_gradient():
    x = torch.rand(3, 3, 8, 8, requires_grad=True)
    labels = torch.tensor([0, 1, 2])
    p = AlignmentParams(mode="taa", samples=2)
    wrapped = aligned_loss(quadratic, p, torch.Generator().manual_seed(3))
    torch.testing.assert_close(wrapped(x, labels), quadratic(x, labels))
    (3.0 * wrapped(x, labels).sum()).backward()
    expected = aligned_gradient(x, labels, quadratic, p, torch.Generator().manual_seed(3))
    torch.testing.assert_close(x.grad, 3.0 * expected)  # the chain rule's factor reaches the aligned gradient
    assert aligned_loss(quadratic, AlignmentParams(), torch.Generator()) is quadratic  # off: the loss itself


@pytest.mark.parametrize("params", [GMIParams, KEDMIParams])
def test_attacks_without_alignment_keep_their_cache_keys(params):
    assert "alignment" not in params().model_dump(mode="json")
    on = params(alignment={"mode": "paa"}).model_dump(mode="json")
    assert on["alignment"]["mode"] == "paa"


def test_gmi_with_paa_succeeds_on_a_tiny_target_and_pays_its_queries(attack_setting, gmi_gan):
    target, _ = attack_setting
    attack, prior = gmi_gan
    params = attack.params.model_copy(update={"alignment": AlignmentParams(mode="paa", samples=4), "iterations": 30})
    oracle = white_box(target)
    recon = GMI(params).invert(prior, oracle, torch.arange(6), RunContext(seed=3))
    # seeds 3-6 of this setting give 0.67-0.78 (12-14 of 18); GMI alone gives 0.67-1.0 at 60 iterations
    assert hit_rate(target, recon.images, recon.labels) >= 0.6
    # every step queries the clean images once and each of the 4 copies once (18 latents, 30 steps)
    assert recon.stats["target_queries"] == 18 * 30 * (1 + 4)
    assert F.mse_loss(recon.images, recon.images.clamp(0, 1)) == 0
