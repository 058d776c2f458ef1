"""C2FMI: differential evolution (monotone, converging on a toy fitness), the population extension, the prediction
mapping's truncation, and the attack from scores only on a tiny target with the stated query count."""

from __future__ import annotations

import math

import pytest
import torch

from mibench.api.attack import DataInfo
from mibench.api.context import RunContext
from mibench.api.oracle import Access, TargetOracle
from mibench.api.recipe import TrainSpec
from mibench.attacks.c2fmi import C2FMI, MAPPING, C2FMIParams, EmbeddingParams, PredictionMapping
from mibench.data.base import ImageSet
from mibench.gan.style_prior import StyleGANParams
from mibench.inversion.evolution import differential_evolution, extend_population
from tests.conftest import TINY_STYLE_GAN, hit_rate


def test_differential_evolution_never_loses_fitness_and_converges_on_a_toy_problem():
    targets = torch.tensor([[1.0, -1.0, 0.5, 0.0], [-0.5, 0.5, 0.0, 1.0]])
    calls = []

    def fitness(latents, classes):
        calls.append(len(latents))
        return -(latents - targets[classes]).pow(2).sum(1)

    start = torch.randn(2, 12, 4, generator=torch.Generator().manual_seed(0))
    initial = fitness(start.reshape(-1, 4), torch.arange(2).repeat_interleave(12)).reshape(2, 12)
    calls.clear()
    _, scores = differential_evolution(start, torch.arange(2), fitness, generations=150,
                                           generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert (scores >= initial - 1e-6).all()  # a child replaces its parent only when fitter
    assert (scores.max(dim=1).values > -0.01).all()  # close to each class's optimum
    assert sum(calls) == 150 * 2 * 24 + 24  # parents and children every generation, then the final population


def test_population_extension_mixes_three_members_with_a_fresh_latent():
    start = torch.ones(2, 3, 5)
    grown = extend_population(start, 7, lambda n: torch.zeros(n, 5), torch.Generator().manual_seed(0))
    assert grown.shape == (2, 7, 5) and torch.equal(grown[:, :3], start)
    torch.testing.assert_close(grown[:, 3:], torch.full((2, 4, 5), 0.7))  # 0.7 * mean of ones + 0.3 * zeros
    with pytest.raises(ValueError, match="at least 3"):
        extend_population(torch.ones(1, 2, 5), 4, lambda n: torch.zeros(n, 5), torch.Generator())


def test_mapping_with_trunc_one_reads_only_the_top_prediction():
    mapping = PredictionMapping(5, 3, 8, trunc=1).eval()
    a = torch.tensor([[0.6, 0.1, 0.1, 0.1, 0.1]])
    b = torch.tensor([[0.6, 0.3, 0.05, 0.05, 0.0]])
    torch.testing.assert_close(mapping(a), mapping(b))  # log(p_top) + 50, normalised: one-hot either way
    assert not torch.allclose(mapping(a), mapping(torch.tensor([[0.1, 0.6, 0.1, 0.1, 0.1]])))
    with torch.no_grad():
        assert math.isfinite(float(mapping(torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0]])).sum()))


def test_c2fmi_from_scores_only_beats_chance_with_the_stated_query_count(attack_setting, tiny_style_prior):
    target, data = attack_setting
    embedding = EmbeddingParams(
        input_size=16, params={"width": 8}, train=TrainSpec(epochs=4, lr=0.05, selection="last")
    )
    params = C2FMIParams(
        gan=StyleGANParams(**TINY_STYLE_GAN), embedding=embedding, mapping_hidden=64, mapping_epochs=5,
        mapping_batch=64, pool=400, coarse_latents=16, coarse_steps=10, selected=8, population=16, generations=200,
    )  # fmt: skip
    attack = C2FMI(params)
    oracle = TargetOracle(target, Access.PROBABILITIES, num_classes=6, image_shape=(3, 16, 16))
    torch.manual_seed(0)  # module initialisation and dropout: the runner seeds them from the job key
    mapping = attack.build_prior(DataInfo(3, 16, 6), MAPPING)
    public = ImageSet(data.public.images, data.public_identities)
    attack.train_prior(mapping, public, oracle, RunContext(seed=1), MAPPING)
    mapping_queries = oracle.queries
    assert mapping_queries == 5 * (len(public) // 64) * 64  # the public images' predictions, every epoch
    # the cached state dict rebuilds the same networks (the public identities size them)
    reloaded = attack.build_prior(DataInfo(3, 16, 6), MAPPING)
    reloaded.load_state_dict(mapping.state_dict())
    priors = {"style-gan": tiny_style_prior, MAPPING: reloaded}
    recon = attack.invert(priors, oracle, torch.arange(6), RunContext(seed=2))
    assert recon.images.shape == (6, 3, 16, 16) and recon.labels.tolist() == list(range(6))
    assert hit_rate(target, recon.images, recon.labels) >= 0.5  # chance is 1/6; measured 0.67
    per_class = 16 + 200 * 2 * 16 + 16  # coarse selection, parents and children per generation, the final population
    assert oracle.queries - mapping_queries == 6 * per_class


def test_renders_draw_fresh_noise_from_the_jobs_stream_as_the_official_generator_does():
    # The official C2FMI generator renders with randomize_noise=True: every fitness is a sample. mibench rendered
    # with the stored constant noise. The draw comes from the job's stream, never the global one.
    from mibench.gan.style_prior import render, repeat_w
    from mibench.gan.stylegan2 import StyleGAN2Config, StyleGAN2Generator

    assert C2FMIParams().noise_mode == "random"
    torch.manual_seed(0)
    g = StyleGAN2Generator(StyleGAN2Config(8, 8, 16, 3, 2, 64, 16)).eval()
    with torch.no_grad():
        for name, parameter in g.named_parameters():
            if name.endswith("noise_strength"):
                parameter.fill_(0.5)  # trained generators use their noise; a new one has strength 0
        ws = repeat_w(g, g.mapping(torch.randn(2, 8))[:, 0])
        before = torch.get_rng_state()
        first = render(g, ws, 16, 1.0, noise=torch.Generator().manual_seed(0))
        again = render(g, ws, 16, 1.0, noise=torch.Generator().manual_seed(0))
        other = render(g, ws, 16, 1.0, noise=torch.Generator().manual_seed(1))
        constant = render(g, ws, 16, 1.0)
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(first, again)  # a function of the job's stream
    assert not torch.allclose(first, other) and not torch.allclose(first, constant)


@pytest.mark.parametrize("attack_name", ["c2fmi", "mirror-b", "mirror-w"])
def test_the_evaluator_sees_a_fresh_render_at_its_own_size_not_the_target_render_upsampled(
    attack_name, tiny_style_prior
):
    # Mirror saves the 256-px render and C2FMI the 128-px one, and their evaluations resize those to the evaluation
    # model's input; mibench upsampled the target-sized reconstruction
    from mibench.api.attack import Reconstructions
    from mibench.gan.style_prior import render, repeat_w, truncated_ws
    from mibench.registry import ATTACKS

    cls = ATTACKS.get(attack_name)
    gan, crop = StyleGANParams(**TINY_STYLE_GAN), 0.75
    extra = {} if attack_name == "c2fmi" else {"truncation_psi": 0.7, "truncation_cutoff": None}
    attack = cls(cls.Params(gan=gan, center_crop=crop, **extra))
    g = tiny_style_prior.generator.eval()
    latents = g.mapping(torch.randn(3, g.z_dim, generator=torch.Generator().manual_seed(0)))[:, 0].detach()
    to_ws = (lambda w: repeat_w(g, w)) if attack_name == "c2fmi" else (lambda w: truncated_ws(g, w, 0.7, None))
    with torch.no_grad():
        small = render(g, to_ws(latents), 16, crop)
        expected = render(g, to_ws(latents), 32, crop)
    recon = Reconstructions(small, torch.tensor([0, 1, 2]), torch.zeros(3, dtype=torch.long), latents)
    priors = {"style-gan": tiny_style_prior} if attack_name == "c2fmi" else tiny_style_prior
    rendered = attack.evaluation_images(priors, recon, 32, RunContext(seed=0))
    torch.testing.assert_close(rendered, expected)
    upsampled = torch.nn.functional.interpolate(small, size=32, mode="bilinear", antialias=True)
    assert not torch.allclose(rendered, upsampled, atol=1e-3)
