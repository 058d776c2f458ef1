"""Mirror (black-box): the shared genetic search, and the attack on a tiny style generator from scores only."""

from __future__ import annotations

import math

import pytest
import torch

from mibench.api.context import RunContext
from mibench.api.oracle import Access, TargetOracle
from mibench.attacks.mirror import MirrorBlackBox, MirrorParams
from mibench.errors import AccessDenied
from mibench.gan.style_prior import StyleGANParams
from mibench.inversion.genetic import genetic_search, next_generation
from tests.conftest import TINY_STYLE_GAN, hit_rate


def test_genetic_search_keeps_its_elite_and_converges_on_a_toy_fitness():
    targets = torch.tensor([[1.0, -1.0, 0.5], [-2.0, 0.0, 2.0]])

    def fitness(latents, classes):
        return -(latents - targets[classes]).pow(2).sum(1)

    def mutate(children, mask, gen):
        return children + mask * 0.3 * torch.randn(children.shape, generator=gen)

    start = torch.randn(2, 40, 3, generator=torch.Generator().manual_seed(0))
    classes = torch.tensor([0, 1])
    initial = fitness(start.reshape(-1, 3), classes.repeat_interleave(40)).reshape(2, 40).max(1).values
    result = genetic_search(
        start,
        classes,
        fitness,
        generations=60,
        mutate=mutate,
        mutation_prob=0.3,
        generator=torch.Generator().manual_seed(1),
        crossover="fitter",
    )
    assert (result.fitness[:, 0] >= initial).all()  # elitism: never worse
    assert (result.fitness[:, 0] > -0.05).all()  # and close to each class's optimum
    assert torch.equal(result.fitness, result.fitness.sort(dim=1, descending=True).values)


def test_a_class_stops_once_its_elite_reaches_the_stop_fitness():
    def fitness(latents, classes):
        return torch.where(classes == 0, torch.zeros(len(classes)), -torch.ones(len(classes)))

    result = genetic_search(
        torch.zeros(2, 4, 2),
        torch.tensor([0, 1]),
        fitness,
        generations=5,
        mutate=lambda c, m, g: c,
        mutation_prob=0.1,
        generator=torch.Generator(),
        stop_fitness=math.log(0.95),
    )
    assert result.generations.tolist() == [0, 5]


@pytest.mark.parametrize("crossover", ["official", "fitter"])
def test_crossover_takes_each_coordinate_from_the_first_parent_by_the_stated_share(crossover):
    """official: f1 / (f1 + f2), which with Mirror's negative log-probabilities favours the less fit parent."""
    classes = 3000  # each class: a fitter all-zeros and a less fit all-ones individual; one child each
    populations = torch.stack([torch.zeros(classes, 50), torch.ones(classes, 50)], dim=1)
    fitness = torch.tensor([-1.0, -3.0]).expand(classes, 2)
    children = next_generation(populations, fitness, lambda c, m, g: c, 0.0, torch.Generator().manual_seed(0))
    assert torch.equal(children[:, 0], torch.zeros(classes, 50))  # the elite
    w0 = math.exp(-1) / (math.exp(-1) + math.exp(-3))  # a parent is the zeros with probability softmax(fitness)_0
    mixed = 0.75 if crossover == "official" else 0.25  # P(a coordinate is 1) for a (zeros, ones) or (ones, zeros) pair
    expected = 2 * w0 * (1 - w0) * mixed + (1 - w0) ** 2
    children = next_generation(
        populations, fitness, lambda c, m, g: c, 0.0, torch.Generator().manual_seed(0), crossover
    )
    assert children[:, 1].mean().item() == pytest.approx(expected, abs=0.01)


@pytest.fixture(scope="module")
def mirror_prior(tiny_style_prior):
    # the tiny generator's 16-d W is narrow: looser bounds and stronger mutation than StyleGAN's defaults
    params = MirrorParams(
        gan=StyleGANParams(**TINY_STYLE_GAN),
        pool=256,
        population=24,
        generations=30,
        latent_space="w",
        keep=2,
        truncation_cutoff=None,
        p_std_ce=3.0,
        mutation_ce=0.5,
    )
    return MirrorBlackBox(params), tiny_style_prior


def test_mirror_black_box_beats_chance_from_scores_only_with_the_stated_query_count(attack_setting, mirror_prior):
    target, _ = attack_setting
    attack, prior = mirror_prior
    oracle = TargetOracle(target, Access.PROBABILITIES, num_classes=6, image_shape=(3, 16, 16))
    classes = torch.arange(6)
    recon = attack.invert(prior, oracle, classes, RunContext(seed=0))
    assert recon.images.shape == (12, 3, 16, 16) and recon.labels.tolist() == classes.repeat_interleave(2).tolist()
    assert hit_rate(target, recon.images, recon.labels) >= 0.5  # chance 1/6; measured 0.67
    assert recon.stats["mean_elite_confidence"] > recon.stats["mean_initial_elite_confidence"] + 0.02  # it searched
    p = attack.params
    generations = recon.stats["mean_generations"] * len(classes)  # summed over classes
    # the pool once, then every class's population at the start and after each of its generations
    assert oracle.queries == p.pool + len(classes) * p.population + generations * p.population
    with pytest.raises(AccessDenied):
        attack.invert(
            prior, TargetOracle(target, Access.LABELS, num_classes=6, image_shape=(3, 16, 16)), classes, RunContext()
        )


def test_renders_truncate_the_searched_w_as_the_mapping_would(tiny_style_prior):
    from mibench.attacks.mirror import mirror_renderer
    from mibench.gan.style_prior import render, repeat_w, sample_pool, truncated_ws

    g = tiny_style_prior.generator.eval()
    assert g.w_avg.abs().sum() > 0  # a trained generator: truncation moves w
    z = torch.randn(5, 16, generator=torch.Generator().manual_seed(0))
    w = g.mapping(z)[:, 0]
    torch.testing.assert_close(truncated_ws(g, w, 0.7, 2), g.mapping(z, 0.7, 2))  # the mapping's own truncation
    params = MirrorParams(gan=StyleGANParams(**TINY_STYLE_GAN), truncation_psi=0.7, truncation_cutoff=2)
    images = mirror_renderer(g, 16, params)(w)
    torch.testing.assert_close(images, render(g, g.mapping(z, 0.7, 2), 16, 1.0))
    assert not torch.allclose(images, render(g, repeat_w(g, w), 16, 1.0))
    pool = sample_pool(g, 4, RunContext(seed=1))  # untruncated, as the official all_ws.pt
    z_pool = torch.randn(4, 16, generator=RunContext(seed=1).generator("pool"))
    torch.testing.assert_close(pool, g.mapping(z_pool)[:, 0])


def test_projector_learning_rate_schedule():
    from mibench.attacks.mirror_white import projector_lr

    assert projector_lr(0.2, 50, 1000, 0.25, 0.05) == pytest.approx(0.2)  # warmed up, before the ramp-down
    assert projector_lr(0.2, 25, 1000, 0.25, 0.05) == pytest.approx(0.1)  # half way through the warm-up
    assert projector_lr(0.2, 875, 1000, 0.25, 0.05) == pytest.approx(0.1)  # cos ramp half way down
    assert projector_lr(0.2, 1000, 1000, 0.25, 0.05) == pytest.approx(0.0)


def test_mirror_white_box_beats_random_styles_with_the_stated_query_count(attack_setting, tiny_style_prior):
    from mibench.attacks.mirror_white import MirrorWhiteBox, MirrorWhiteParams
    from mibench.gan.style_prior import render
    from tests.conftest import white_box

    target, _ = attack_setting
    params = MirrorWhiteParams(
        gan=StyleGANParams(**TINY_STYLE_GAN), pool=96, per_class=2, steps=40, lr=0.1, latent_space="w",
        p_std_ce=3.0, truncation_cutoff=None,
    )  # fmt: skip
    oracle = white_box(target)
    recon = MirrorWhiteBox(params).invert(tiny_style_prior, oracle, torch.arange(6), RunContext(seed=2))
    assert recon.images.shape == (12, 3, 16, 16) and recon.labels.tolist() == [c for c in range(6) for _ in (0, 1)]
    g = tiny_style_prior.generator.eval()
    with torch.no_grad():
        random = render(g, g.mapping(torch.randn(120, 16, generator=torch.Generator().manual_seed(0)), 0.7), 16, 1.0)
    baseline = hit_rate(target, random, torch.arange(120) % 6)
    assert hit_rate(target, recon.images, recon.labels) >= max(0.6, baseline + 0.3)
    assert oracle.queries == params.pool + params.steps * 12  # the pool once, then every latent at every step
