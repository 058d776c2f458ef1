"""IF-GMI: the L1-ball projection, blockwise synthesis, gradients reaching the searched features, and an attack that
beats random styles on a tiny target."""

from __future__ import annotations

import pytest
import torch

from mibench.api.context import RunContext
from mibench.attacks.ifgmi import IFGMI, IFGMIParams
from mibench.gan.style import TinyStyleGenerator
from mibench.gan.style_prior import StyleGANParams, render, repeat_w
from mibench.gan.stylegan2 import StyleGAN2Config, StyleGAN2Generator
from mibench.inversion.constraints import project_l1_ball
from tests.conftest import TINY_STYLE_GAN, hit_rate, white_box

SMALL = {"pool": 96, "candidates": 2, "steps": [30, 10, 10], "lr": 0.05, "center_crop": 1.0, "batch_size": 12}


def _bisection_projection(v: torch.Tensor, radius: float) -> torch.Tensor:
    """Oracle: soft thresholding with theta found by bisection on ||max(|v| - theta, 0)||_1 = radius."""
    if v.abs().sum() <= radius:
        return v
    low, high = 0.0, float(v.abs().max())
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if (v.abs() - mid).clamp_min(0).sum() > radius else (low, mid)
    return v.sign() * (v.abs() - (low + high) / 2).clamp_min(0)


def test_l1_projection_matches_soft_thresholding_oracle():
    x = torch.randn(6, 3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 3
    x[0] *= 0.01  # inside the ball: unchanged
    projected = project_l1_ball(x, 4.0)
    torch.testing.assert_close(projected[0], x[0])
    for i in range(1, 6):
        torch.testing.assert_close(projected[i], _bisection_projection(x[i], 4.0), atol=1e-9, rtol=0)
        assert projected[i].abs().sum() == pytest.approx(4.0)
    assert project_l1_ball(torch.tensor([[3.0, -1.0, 0.5]]), 2.0).tolist() == [[2.0, 0.0, 0.0]]


def test_tiny_generator_blocks_compose_to_its_synthesis():
    g = TinyStyleGenerator(16, 3, z_dim=8, w_dim=8, width=8).eval()
    ws = g.mapping(torch.randn(3, 8))
    full = g.synthesis(ws)
    features = None
    for block in range(g.num_blocks):
        torch.testing.assert_close(g.synthesis_from(ws, block, features), full)
        features = g.block_features(ws, block, features)


def test_stylegan2_intermediate_synthesis_restarts_the_skip_image():
    torch.manual_seed(0)
    g = StyleGAN2Generator(StyleGAN2Config(z_dim=8, w_dim=8, resolution=16, channel_base=64, channel_max=16)).eval()
    ws = g.mapping(torch.randn(2, 8))
    torch.testing.assert_close(g.synthesis_from(ws, 0, None), g.synthesis(ws))
    f0 = g.block_features(ws, 0, None)
    x, img = g.synthesis.run_blocks(ws, 0, 1)
    torch.testing.assert_close(f0, x)
    # from block 1 on, the 4x4 block's RGB branch is dropped (IF-GMI's `layer_in` with img=None) ...
    _, rest = g.synthesis.run_blocks(ws, 1, None, f0, None)
    torch.testing.assert_close(g.synthesis_from(ws, 1, f0), rest)
    # ... which is the full image minus that branch carried up through the upsampling filters
    _, carried = g.synthesis.run_blocks(ws, 1, None, f0, img)
    torch.testing.assert_close(carried, g.synthesis(ws))
    assert not torch.allclose(rest, carried)


def test_validation_needs_a_radius_per_stage_and_a_real_output_stage():
    with pytest.raises(ValueError, match="radius"):
        IFGMIParams(steps=[1, 1, 1], radius_w=[1.0, 1.0])
    with pytest.raises(ValueError, match="output_stage"):
        IFGMIParams(steps=[1, 1], output_stage=2)


@pytest.fixture(scope="module")
def ifgmi_prior(tiny_style_prior):
    return IFGMI(IFGMIParams(gan=StyleGANParams(**TINY_STYLE_GAN), **SMALL)), tiny_style_prior


def test_later_stages_search_the_intermediate_features_within_their_ball(attack_setting, ifgmi_prior):
    target, _ = attack_setting
    attack, prior = ifgmi_prior
    g = prior.generator.eval()
    w = g.mapping(torch.randn(4, 16, generator=torch.Generator().manual_seed(1)))[:, 0]
    features = g.block_features(repeat_w(g, w), 0, None).detach()
    y = torch.tensor([0, 1, 2, 3])
    oracle = white_box(target)
    # gradients of the stage-1 loss reach the features fed to block 1
    f = features.clone().requires_grad_(True)
    x = (g.synthesis_from(repeat_w(g, w), 1, f) + 1) / 2
    target(x).logits.gather(1, y.view(-1, 1)).sum().backward()
    assert f.grad is not None and f.grad.abs().sum() > 0
    small = IFGMI(attack.params.model_copy(update={"steps": [1, 5], "radius_features": [1, 0.5], "radius_w": [1, 0.2]}))
    w1, f1 = small.stage(g, oracle, w, features, y, 1, RunContext(seed=0))
    moved_f, moved_w = (f1 - features).flatten(1).abs().sum(1), (w1 - w).abs().sum(1)
    assert (moved_f > 0.1).all() and (moved_f <= 0.5 + 1e-4).all()  # searched, and bounded by the L1 ball
    assert (moved_w > 0.01).all() and (moved_w <= 0.2 + 1e-4).all()


def test_ifgmi_beats_random_styles_and_counts_its_queries(attack_setting, ifgmi_prior):
    target, _ = attack_setting
    attack, prior = ifgmi_prior
    classes = torch.arange(6)
    oracle = white_box(target)
    recon = attack.invert(prior, oracle, classes, RunContext(seed=7))
    assert recon.images.shape == (12, 3, 16, 16) and recon.images.min() >= 0 and recon.images.max() <= 1
    assert recon.labels.tolist() == [c for c in range(6) for _ in (0, 1)] and recon.restarts.tolist() == [0, 1] * 6
    g = prior.generator.eval()
    with torch.no_grad():
        random = render(g, g.mapping(torch.randn(120, 16, generator=torch.Generator().manual_seed(0)), 0.5, 8), 16, 1.0)
    baseline = hit_rate(target, random, torch.arange(120) % 6)
    assert hit_rate(target, recon.images, recon.labels) > max(0.6, baseline + 0.3)
    # pool scored with its mirror images, then one query per step and one scoring query per stage per candidate
    n, steps = len(recon.labels), SMALL["steps"]
    assert recon.stats["target_queries"] == 2 * SMALL["pool"] + n * (sum(steps) + len(steps))
    # the intermediate stages raise the target's confidence beyond the W-space stage (measured 0.59 -> 0.69)
    assert recon.stats["stage1_mean_confidence"] > recon.stats["stage0_mean_confidence"] + 0.05


def test_a_later_start_block_searches_from_that_blocks_features(attack_setting, ifgmi_prior):
    target, _ = attack_setting
    attack, prior = ifgmi_prior
    late = IFGMI(attack.params.model_copy(update={"steps": [3, 3], "start_block": 1, "pool": 24, "candidates": 1}))
    recon = late.invert(prior, white_box(target), torch.tensor([0, 1]), RunContext(seed=1))
    assert recon.images.shape == (2, 3, 16, 16) and torch.isfinite(recon.images).all()
    with pytest.raises(ValueError, match="exceed"):
        too_many = IFGMI(attack.params.model_copy(update={"steps": [1] * 3, "start_block": 2}))
        too_many.invert(prior, white_box(target), torch.tensor([0]), RunContext(seed=1))


def test_official_batch_shared_crops_and_unclamped_evaluation(attack_setting, ifgmi_prior, monkeypatch):
    # intermediate_attack.py pins 3 GPUs and multiplies the per-GPU batch of 4 (effective 12); its torchvision crop
    # is applied to the batch tensor (one draw per batch); its evaluation reads the raw, unclamped render
    import mibench.attacks.ifgmi as ifgmi_module
    from mibench.training.augmentation import AffineAugmentParams, random_affine_augment

    assert IFGMIParams().batch_size == 12
    images = torch.rand(1, 3, 16, 16).expand(3, -1, -1, -1).contiguous()  # three copies of one image
    aug = AffineAugmentParams(crop_scale=(0.5, 0.6), crop_ratio=(1.0, 1.0), crop_p=1.0, flip_p=0.0, rotation_p=0.0)
    shared = random_affine_augment(images, aug, torch.Generator().manual_seed(0), shared=True)
    assert torch.equal(shared[0], shared[1]) and torch.equal(shared[0], shared[2])
    apart = random_affine_augment(images, aug, torch.Generator().manual_seed(0))
    assert not torch.equal(apart[0], apart[1])

    calls = []
    original = ifgmi_module.random_affine_augment
    monkeypatch.setattr(ifgmi_module, "random_affine_augment", lambda *a, **k: calls.append(k) or original(*a, **k))
    target, _ = attack_setting
    attack, prior = ifgmi_prior
    small = IFGMI(attack.params.model_copy(update={"steps": [2, 2], "candidates": 1}))
    recon = small.invert(prior, white_box(target), torch.arange(2), RunContext(seed=3))
    assert calls and all(k.get("shared") for k in calls)
    assert recon.unclamped is not None and torch.equal(recon.unclamped.clamp(0, 1), recon.images)
    rendered = small.evaluation_images(prior, recon, 32, RunContext())
    assert rendered.shape == (2, 3, 32, 32)
    torch.testing.assert_close(
        rendered, torch.nn.functional.interpolate(recon.unclamped, size=32, mode="bilinear", antialias=True)
    )
