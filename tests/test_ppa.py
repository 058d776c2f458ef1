"""PPA on a tiny style generator: truncation, candidate search, Poincaré W-space search beating random styles, and
selection by transformation robustness."""

from __future__ import annotations

import pytest
import torch

from mibench.api.context import RunContext
from mibench.attacks.ppa import PPA, PPAParams, StyleGANParams, render
from mibench.gan.style import TinyStyleGenerator
from tests.conftest import TINY_STYLE_GAN, hit_rate, white_box

# The paper's lr 0.005 is sized for StyleGAN2's W; the tiny generator's W needs larger steps.
SMALL = {"pool": 96, "candidates": 4, "select": 2, "iterations": 40, "lr": 0.05, "center_crop": 1.0}
SMALL["selection_transforms"] = 8


@pytest.fixture(scope="module")
def ppa_prior(tiny_style_prior):
    return PPA(PPAParams(gan=StyleGANParams(**TINY_STYLE_GAN), **SMALL)), tiny_style_prior


def test_truncation_pulls_the_cutoff_layers_to_w_avg():
    g = TinyStyleGenerator(16, 3, z_dim=8, w_dim=8, width=8).eval()
    g.w_avg.copy_(torch.randn(8))
    z = torch.randn(5, 8)
    full = g.mapping(z)
    assert full.shape == (5, g.num_ws, 8) and torch.equal(full[:, 0], full[:, -1])
    torch.testing.assert_close(g.mapping(z, psi=0.0), g.w_avg.expand(5, g.num_ws, 8))
    half = g.mapping(z, psi=0.5, cutoff=1)
    torch.testing.assert_close(half[:, 0], (full[:, 0] + g.w_avg) / 2)
    torch.testing.assert_close(half[:, 1:], full[:, 1:])


def test_candidates_are_each_classes_most_confident_pool_members(attack_setting, ppa_prior):
    target, _ = attack_setting
    attack, prior = ppa_prior
    g = prior.generator.eval()
    ctx = RunContext(seed=5)
    w, labels = attack.candidates(g, white_box(target), torch.tensor([1, 4]), 16, ctx)
    assert w.shape == (8, 16) and labels.tolist() == [1] * 4 + [4] * 4
    z = torch.randn(SMALL["pool"], 16, generator=ctx.generator("pool"))
    with torch.no_grad():
        x = render(g, g.mapping(z, 0.5, 8), 16, 1.0)
        probs = (torch.softmax(target(x).logits, 1) + torch.softmax(target(x.flip(-1)).logits, 1)) / 2
    expected = g.mapping(z, 0.5, 8)[probs[:, 4].topk(4).indices][:, 0]
    torch.testing.assert_close(w[4:], expected)


def test_ppa_beats_random_styles(attack_setting, ppa_prior):
    target, _ = attack_setting
    attack, prior = ppa_prior
    classes = torch.arange(6)
    recon = attack.invert(prior, white_box(target), classes, RunContext(seed=7))
    assert recon.images.shape == (12, 3, 16, 16) and recon.images.min() >= 0 and recon.images.max() <= 1
    assert recon.restarts.tolist() == [0, 1] * 6 and recon.labels.tolist() == [c for c in range(6) for _ in (0, 1)]
    g = prior.generator.eval()
    with torch.no_grad():
        random = render(g, g.mapping(torch.randn(120, 16, generator=torch.Generator().manual_seed(0)), 0.5, 8), 16, 1.0)
    baseline = hit_rate(target, random, torch.arange(120) % 6)
    assert hit_rate(target, recon.images, recon.labels) > max(0.6, baseline + 0.3)


def test_selection_keeps_the_most_robust_candidates(attack_setting, ppa_prior, monkeypatch):
    target, _ = attack_setting
    attack, prior = ppa_prior
    params = attack.params.model_copy(update={"iterations": 1})
    quick = PPA(params)
    scores = torch.tensor([0.1, 0.9, 0.5, 0.3, 0.8, 0.2, 0.7, 0.4])  # classes 0 (first four) and 3 (last four)
    monkeypatch.setattr(PPA, "robustness", lambda self, *a, **k: scores)
    recon = quick.invert(prior, white_box(target), torch.tensor([0, 3]), RunContext(seed=1))
    # class 0 keeps candidates 1 (0.9) then 2 (0.5); class 3 keeps 4 (0.8) then 6 (0.7)
    assert recon.labels.tolist() == [0, 0, 3, 3] and recon.restarts.tolist() == [0, 1, 0, 1]
    assert recon.stats["mean_robustness"] == pytest.approx((0.9 + 0.5 + 0.8 + 0.7) / 4)


def test_ppa_on_a_released_stylegan2_file(attack_setting, tmp_path):
    """gan.generator stylegan2: no prior to train, the file is read at inversion (here a small random StyleGAN2)."""
    from mibench.gan.stylegan2 import StyleGAN2Config, StyleGAN2Generator
    from mibench.gan.stylegan2_files import save_stylegan2

    target, _ = attack_setting
    torch.manual_seed(0)
    save_stylegan2(StyleGAN2Generator(StyleGAN2Config(16, 16, 32, 3, 2, 256, 32)), tmp_path / "g.pt")
    gan = StyleGANParams(generator="stylegan2", checkpoint=str(tmp_path / "g.pt"))
    attack = PPA(PPAParams(gan=gan, **{**SMALL, "iterations": 3, "center_crop": 0.75}))
    assert attack.priors() == [] and attack.external_files() == {"gan.checkpoint": str(tmp_path / "g.pt")}
    recon = attack.invert(None, white_box(target), torch.tensor([2, 5]), RunContext(seed=2))
    assert recon.images.shape == (4, 3, 16, 16) and recon.labels.tolist() == [2, 2, 5, 5]
    assert recon.latents.shape == (4, 16) and recon.images.min() >= 0 and recon.images.max() <= 1


def test_a_released_generator_needs_its_file_and_enters_keys_by_content(tmp_path, tiny_suite):
    from mibench.errors import ConfigError, DataError
    from mibench.gan.stylegan2 import StyleGAN2Config, StyleGAN2Generator
    from mibench.gan.stylegan2_files import save_stylegan2
    from mibench.running.plan import build_plan
    from mibench.suite import load_suite
    from tests.conftest import write_suite

    with pytest.raises(ValueError, match=r"needs gan\.checkpoint"):
        StyleGANParams(generator="stylegan2")
    file = tmp_path / "g.pt"
    tiny_suite["attacks"] = [{"name": "ppa", "params": {"gan": {"generator": "stylegan2", "checkpoint": str(file)}}}]
    path = write_suite(tmp_path / "s.yaml", tiny_suite)
    with pytest.raises((DataError, ConfigError), match=r"attacks\[ppa\]\.params\.gan\.checkpoint"):
        build_plan(load_suite(path))

    def invert_keys() -> list[str]:
        plan = build_plan(load_suite(path))
        assert not [j for j in plan.jobs.values() if j.stage == "prior"]
        return sorted(j.key for j in plan.jobs.values() if j.stage == "invert")

    torch.manual_seed(0)
    save_stylegan2(StyleGAN2Generator(StyleGAN2Config(16, 16, 16, 3, 2, 128, 16)), file)
    first = invert_keys()
    assert first == invert_keys()
    torch.manual_seed(1)
    save_stylegan2(StyleGAN2Generator(StyleGAN2Config(16, 16, 16, 3, 2, 128, 16)), file)  # same path, new weights
    assert set(invert_keys()).isdisjoint(first)


def test_released_generator_suite_runs_end_to_end_and_resumes(tmp_path, tiny_suite):
    from mibench.gan.stylegan2 import StyleGAN2Config, StyleGAN2Generator
    from mibench.gan.stylegan2_files import save_stylegan2
    from tests.conftest import run_suite_file, write_suite

    torch.manual_seed(0)
    save_stylegan2(StyleGAN2Generator(StyleGAN2Config(16, 16, 32, 3, 2, 256, 32)), tmp_path / "g.pt")
    params = {"pool": 64, "candidates": 2, "select": 1, "iterations": 3, "selection_transforms": 2}
    gan = {"generator": "stylegan2", "checkpoint": str(tmp_path / "g.pt")}
    tiny_suite["attacks"] = [{"name": "ppa", "params": {"gan": gan, **params}}]
    path = write_suite(tmp_path / "s.yaml", tiny_suite)
    first = run_suite_file(path, tmp_path / "cache", tmp_path / "run")
    assert not first.failed and sum(j.startswith("invert/") for j in first.ran) == 2
    assert {r.metric for r in first.records if r.attack == "ppa"} >= {"aa1", "knn_dist", "target_queries"}
    again = run_suite_file(path, tmp_path / "cache", tmp_path / "run")
    assert again.ran == []


class _Bright(torch.nn.Module):
    """A stand-in synthesis whose output leaves [-1, 1]: 3 * w broadcast over a 1 x 8 x 8 image."""

    num_ws = 1

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        return 3 * ws[:, 0, :1, None, None].expand(-1, 1, 8, 8)


def test_search_renders_are_unclamped_so_out_of_range_pixels_keep_their_gradient():
    w = torch.full((2, 1, 4), 1.0, requires_grad=True)  # renders to (3 + 1) / 2 = 2, far above 1
    render(_Bright(), w, 8, 1.0, clip=False).sum().backward()
    assert w.grad.abs().sum() > 0
    w.grad = None
    render(_Bright(), w, 8, 1.0, clip=True).sum().backward()
    assert w.grad.abs().sum() == 0  # what the clamped search did: no gradient at all out of range


def test_only_the_candidate_search_clamps(attack_setting, ppa_prior, monkeypatch):
    import mibench.attacks.ppa as ppa_module
    import mibench.gan.style_prior as style_prior

    target, _ = attack_setting
    attack, prior = ppa_prior
    calls = []
    original = ppa_module.render

    def spy(generator, ws, size, crop, clip=True):
        calls.append((torch.is_grad_enabled() and ws.requires_grad, clip))
        return original(generator, ws, size, crop, clip)

    monkeypatch.setattr(ppa_module, "render", spy)
    monkeypatch.setattr(style_prior, "render", spy)  # the shared candidate search
    small = attack.params.model_copy(update={"iterations": 2, "selection_transforms": 1})
    PPA(small).invert(prior, white_box(target), torch.tensor([0]), RunContext(seed=0))
    searched = {clip for optimised, clip in calls if optimised}
    assert searched == {False}  # the 70-step search (official clip: false)
    assert calls[0][1] is True  # the candidate search clamps (find_initial_w's default)


def test_evaluator_sees_a_fresh_render_at_its_own_resolution(attack_setting, ppa_prior):
    from mibench.api.metric import MeasureInputs

    target, data = attack_setting
    attack, prior = ppa_prior
    small = attack.params.model_copy(update={"iterations": 2, "selection_transforms": 1, "center_crop": 0.75})
    recon = PPA(small).invert(prior, white_box(target), torch.tensor([0, 1]), RunContext(seed=0))
    rendered = PPA(small).evaluation_images(prior, recon, 32, RunContext())
    g = prior.generator.eval()
    with torch.no_grad():
        expected = render(g, recon.latents[:, None].expand(-1, g.num_ws, -1), 32, 0.75, clip=False)
    torch.testing.assert_close(rendered, expected)
    upsampled = torch.nn.functional.interpolate(recon.images, size=32, mode="bilinear", antialias=True)
    assert not torch.allclose(rendered, upsampled, atol=1e-3)  # not the target-sized render upsampled

    class Spy(torch.nn.Module):
        def forward(self, x):
            self.seen = x
            return target(torch.nn.functional.interpolate(x, size=16))

    spy = Spy()
    inputs = MeasureInputs(
        target=target, evaluator=spy, evaluator_accuracy=1.0, data=data, eval_data=data,
        classes=torch.tensor([0, 1]), reconstructions=recon, device=torch.device("cpu"), evaluation_images=rendered,
    )  # fmt: skip
    inputs.reconstruction_outputs()
    # The evaluator's input comes from the renders (here resized to this test's 16-pixel eval data), not from the
    # stored reconstructions.
    from mibench.data.base import resize_images

    torch.testing.assert_close(spy.seen, resize_images(rendered, 16))
