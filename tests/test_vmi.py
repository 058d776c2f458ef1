"""VMI: the per-class flows' densities (change of variables, identity start, independence across classes) and an
attack that beats random latents on a tiny target with the stated query count."""

from __future__ import annotations

import math

import pytest
import torch

from mibench.api.context import RunContext
from mibench.attacks.vmi import VMI, VMIParams
from mibench.inversion.flows import ClassFlows, standard_normal_log_prob
from tests.conftest import hit_rate, white_box

# Larger steps than the official SGD lr 2e-4, sized for a few hundred iterations on a 16-d latent.
SMALL = {"epochs": 3, "iterations_per_epoch": 20, "batch_size": 16, "lr": 0.05, "flow_steps": 4, "flow_hidden": 32}


def _flows(classes=(0, 1, 2), dim=5, steps=3, seed=0) -> ClassFlows:
    flows = ClassFlows.initialised(
        list(classes), dim, steps, 8, lambda c: torch.Generator().manual_seed(seed * 100 + c)
    )
    with torch.no_grad():  # move away from the identity start
        for p in flows.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return flows.double()


def test_a_new_flow_standardises_its_initialisation_samples_and_is_affine_per_coordinate():
    # Glow's actnorms are data-initialised on one encode pass of 100 N(0, I) samples; the couplings start at zero,
    # so a new flow is a per-coordinate affine map (and shuffles): log q has the Gaussian closed form
    from mibench.inversion.flows import INIT_SAMPLES

    flows = ClassFlows.initialised([0, 1], 6, 3, 8, lambda c: torch.Generator().manual_seed(c))
    init = torch.stack([_initialisation_samples(c, 6, 3, 8) for c in (0, 1)])
    first = (init + flows.bias[0]) * flows.log_scale[0].exp()
    torch.testing.assert_close(first.mean(1), torch.zeros(2, 6), atol=1e-5, rtol=0)
    torch.testing.assert_close(first.pow(2).mean(1), torch.ones(2, 6), atol=1e-4, rtol=0)
    assert init.shape[1] == INIT_SAMPLES
    eps = torch.randn(2, 10, 6)
    x, log_q = flows(eps)
    torch.testing.assert_close(flows.log_prob(x), log_q, atol=1e-4, rtol=1e-5)
    assert torch.equal(flows.w3, torch.zeros_like(flows.w3))


def _initialisation_samples(c: int, dim: int, steps: int, hidden: int) -> torch.Tensor:
    """The N(0, I) samples `ClassFlows.initialised` draws for class c, after its shuffles and weights."""
    gen = torch.Generator().manual_seed(c)
    for _ in range(steps):
        torch.randperm(dim, generator=gen)
    torch.randn(steps, dim // 2, hidden, generator=gen)
    torch.randn(steps, hidden, hidden, generator=gen)
    return torch.randn(100, dim, generator=gen)


def test_density_by_change_of_variables_matches_the_inverse_and_a_numerical_jacobian():
    flows = _flows()
    eps = torch.randn(3, 4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x, log_q = flows(eps)
    torch.testing.assert_close(flows.log_prob(x), log_q)  # the inverse recovers eps and the log-determinant
    # oracle: log N(eps) - log |det d x / d eps| from autograd's Jacobian of one class's map
    c, i = 1, 2
    jac = torch.autograd.functional.jacobian(lambda e: flows(e.view(1, 1, 5).expand(3, 1, 5))[0][c, 0], eps[c, i])
    expected = standard_normal_log_prob(eps[c, i]) - torch.linalg.slogdet(jac).logabsdet
    assert float(log_q[c, i].detach()) == pytest.approx(float(expected), abs=1e-9)


def test_kl_estimate_of_a_scaled_flow_matches_the_closed_form():
    flows = ClassFlows.initialised([0], 4, 1, 8, lambda c: torch.Generator().manual_seed(c)).double()
    with torch.no_grad():  # encode eps = 2 x: q = N(0, I / 4), KL = d/2 (sigma^2 - 1 - log sigma^2)
        flows.bias.zero_()
        flows.log_scale.fill_(math.log(2.0))
    kl = flows.kl_to_standard_normal(200_000, lambda c: torch.Generator().manual_seed(3), [0])
    assert float(kl.detach()) == pytest.approx(4 / 2 * (0.25 - 1 - math.log(0.25)), rel=0.02)


def test_each_class_flow_gets_only_its_own_gradient():
    flows = _flows().float()
    x, log_q = flows.sample(4, lambda c: torch.Generator().manual_seed(c), [0, 1, 2])
    (x[1].sum() + log_q[1].sum()).backward()
    grads = flows.w1.grad  # steps x classes x ...
    assert grads[:, 1].abs().sum() > 0 and grads[:, 0].abs().sum() == 0 and grads[:, 2].abs().sum() == 0


@pytest.fixture(scope="module")
def vmi(gmi_gan):
    attack, prior = gmi_gan
    return VMI(VMIParams(gan=attack.params.gan, samples=4, **SMALL)), prior


def test_vmi_beats_random_latents_with_the_stated_query_count(attack_setting, vmi):
    target, _ = attack_setting
    attack, prior = vmi
    classes = torch.arange(6)
    recon = attack.invert(prior, white_box(target), classes, RunContext(seed=3))
    assert recon.images.shape == (24, 3, 16, 16) and recon.labels.tolist() == [c for c in range(6) for _ in range(4)]
    with torch.no_grad():
        random_images = prior.generator.eval()(torch.randn(120, 16, generator=torch.Generator().manual_seed(0)))
    baseline = hit_rate(target, random_images, torch.arange(120) % 6)
    attacked = hit_rate(target, recon.images, recon.labels)
    assert attacked >= max(0.6, baseline + 0.35)
    assert recon.stats["target_queries"] == 6 * SMALL["epochs"] * SMALL["iterations_per_epoch"] * SMALL["batch_size"]


def test_class_batching_does_not_change_the_flows(attack_setting, vmi):
    target, _ = attack_setting
    attack, prior = vmi
    quick = {"epochs": 1, "iterations_per_epoch": 5}
    one = VMI(attack.params.model_copy(update={**quick, "class_batch": 1}))
    all_ = VMI(attack.params.model_copy(update={**quick, "class_batch": 3}))
    a = one.invert(prior, white_box(target), torch.arange(3), RunContext(seed=4))
    b = all_.invert(prior, white_box(target), torch.arange(3), RunContext(seed=4))
    torch.testing.assert_close(a.latents, b.latents, atol=1e-5, rtol=0)


def test_defaults_are_the_released_run_script_and_sampler():
    # run_scripts/neurips2021-celeba-stylegan-flow.sh: lr 1e-4, patience 1000 (no early stopping), miners saved
    # before epochs 10/20/30; generate_vmi_attack_samples.py loads miner_20 and draws 50 per identity
    p = VMIParams()
    assert (p.lr, p.epochs, p.samples, p.flow_steps, p.flow_hidden, p.kl_weight) == (1e-4, 20, 50, 10, 100, 1e-3)
