"""Mirror, black-box: "MIRROR: Model Inversion for Deep Learning Based Face Recognition Models" (An et al., NDSS 2022).

A genetic search in StyleGAN's W space driven by nothing but the target's confidence scores. Official code:
njuaplusplus/mirror @ 2730a14 (`my_blackbox_mirror.py`, `my_utils.py`; `scripts/run_*_blackbox.sh`), read for this
file; the search itself is `mibench.inversion.genetic`.

As the official code:

* a pool of untruncated w = mapping(z) is sampled once (`my_sample_z_w_space.py`'s `all_ws.pt`); the search runs
  on untruncated w, and every render truncates it (psi 0.7 on the first 8 layers: genforce's StyleGAN applies
  truncation in its forward pass to W-space codes too); the target scores each pool render; each class's initial
  population is the `population` pool members with the highest log-probability of that class, and their fitness is
  that log-probability;
* bounds live in the "p space" before the mapping network's last leaky ReLU (p = lrelu^-1(w), slope 0.2): the pool's
  per-coordinate p mean +- `p_std_ce` std, mapped back to w, clip every child;
* mutation adds, to the masked coordinates, `mutation_ce` times one uniform draw in [-std_p, std_p] per generation
  (the official `torch.rand_like(all_p_stds)` has the shape of one latent, so all children of a generation share
  it), in p space;
* 100 generations, mutation probability 0.1 and coefficient 0.1, a class stops once its elite's confidence reaches
  0.95; the elite is the reconstruction. The scripts run populations of 1,000 (the argument's default is 100).

Differences: the pool is `pool` latents (the official sample file holds 100,000 at 256x256); `keep` > 1 returns the
`keep` fittest individuals per class instead of the elite alone; without a StyleGAN (the tiny style generator, whose
mapping ends in a linear layer) `latent_space: w` searches W directly with bounds from the pool's w statistics.
Access: probabilities only (every fitness is a query; the oracle counts them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from mibench.api.attack import GenerativeAttack, Reconstructions
from mibench.api.context import RunContext
from mibench.api.oracle import Access, TargetOracle
from mibench.gan.style_prior import (
    StyleGANParams,
    StyleGANPrior,
    render,
    render_latents,
    sample_pool,
    truncated_ws,
)
from mibench.inversion.genetic import genetic_search
from mibench.inversion.search import in_chunks
from mibench.params import Params
from mibench.registry import ATTACKS


class MirrorParams(Params):
    """The official black-box settings (see module docstring)."""

    gan: StyleGANParams = Field(default_factory=StyleGANParams)
    pool: int = Field(100_000, ge=2, description="w sampled once; the initial populations are their fittest")
    population: int = Field(1000, ge=2, description="individuals per class (the scripts' 1,000)")
    generations: int = Field(100, ge=0)
    mutation_prob: float = Field(0.1, ge=0, le=1)
    mutation_ce: float = Field(0.1, ge=0)
    p_std_ce: float = Field(1.0, gt=0, description="bounds: mean +- this many stds of the pool (in p space)")
    min_score: float = Field(0.95, gt=0, le=1, description="a class stops when its elite reaches this confidence")
    truncation_psi: float = Field(0.7, gt=0, le=1)
    truncation_cutoff: int | None = Field(8, ge=1)
    latent_space: Literal["p", "w"] = Field("p", description="p: StyleGAN's pre-activation space (official)")
    crossover: Literal["official", "fitter"] = "official"
    keep: int = Field(1, ge=1, description="reconstructions per class: the elite, or the `keep` fittest")
    center_crop: float = Field(1.0, gt=0, le=1)


def _to_p(w: torch.Tensor) -> torch.Tensor:
    """Invert the mapping's final leaky ReLU (slope 0.2)."""
    return F.leaky_relu(w, negative_slope=5.0)


def _to_w(p: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(p, negative_slope=0.2)


def latent_spaces(latent_space: str) -> tuple[Callable, Callable]:
    """(w -> search space, search space -> w): StyleGAN's p space, or W itself."""
    return (_to_p, _to_w) if latent_space == "p" else ((lambda w: w), (lambda w: w))


def mirror_renderer(generator: nn.Module, size: int, p) -> Callable[[torch.Tensor], torch.Tensor]:
    """W (N x w_dim) -> target-sized [0, 1] images, truncated at render as genforce's W-space forward."""
    return lambda w: render(
        generator, truncated_ws(generator, w, p.truncation_psi, p.truncation_cutoff), size, p.center_crop
    )


@torch.no_grad()
def pool_log_confidence(pool: torch.Tensor, classes: torch.Tensor, probabilities, batch: int) -> torch.Tensor:
    """Log p(class | render) for every pool member and attacked class (pool x classes)."""
    return torch.cat(
        [probabilities(pool[c])[:, classes].clamp_min(1e-45).log().cpu() for c in in_chunks(len(pool), batch)]
    )


def p_space_bounds(pool: torch.Tensor, latent_space: str, std_ce: float) -> tuple[torch.Tensor, ...]:
    """(low, high) in W: the pool's per-coordinate mean +- std_ce std in the search space, mapped back; and that std."""
    space, back = latent_spaces(latent_space)
    pool_p = space(pool)
    mean, std = pool_p.mean(0), pool_p.std(0, unbiased=False)
    return back(mean - std_ce * std), back(mean + std_ce * std), std


class MirrorEvaluationRenders(StyleGANPrior):
    """Mirror's evaluation: the kept w rendered afresh at the evaluator's input size (both variants).

    The official scripts save the full-resolution render (`my_whitebox_mirror_helper.py`, 256 px) and resize it to
    the evaluation model's input (`my_test_confidence.py`), not the target-sized image upsampled. Saved images are
    8-bit, so the render is clamped.
    """

    def evaluation_images(
        self, prior: nn.Module | None, reconstructions: Reconstructions, size: int | tuple[int, int], ctx: RunContext
    ) -> torch.Tensor:
        """Fresh clamped renders of the kept w (truncated at render) at the evaluator's input size."""
        return self.renders(self.style_generator(prior, ctx), reconstructions.latents, size, ctx.device)

    def renders(self, generator: nn.Module, latents: torch.Tensor, size: int, device: torch.device) -> torch.Tensor:
        """Clamped renders of w (N x w_dim) at `size`, truncated at render, on the CPU.

        The reconstructions (at the target's size) and the evaluator's fresh renders (at its own) alike.
        """
        p = self.params
        to_ws = lambda w: truncated_ws(generator, w, p.truncation_psi, p.truncation_cutoff)  # noqa: E731
        batch = getattr(p, "batch_size", p.gan.batch_size)  # the black-box search renders in GAN-sized batches
        return render_latents(generator, latents, to_ws, size, p.center_crop, batch, device)


@ATTACKS.register
class MirrorBlackBox(MirrorEvaluationRenders, GenerativeAttack):
    """Genetic search in W from confidence scores (see module docstring)."""

    name: ClassVar[str] = "mirror-b"
    paper: ClassVar[str] = (
        "An et al., MIRROR: Model Inversion for Deep Learning Based Face Recognition Models, NDSS 2022"
    )
    official: ClassVar[str | None] = "njuaplusplus/mirror @ 2730a14"
    access: ClassVar[Access] = Access.PROBABILITIES
    # 2: untruncated pool and search, truncation at every render (official)
    # 3: the evaluator sees a fresh render at its input size (the official evaluation), not the target's upsampled
    version: ClassVar[int] = 3
    Params = MirrorParams

    def invert(self, prior, oracle: TargetOracle, classes: torch.Tensor, ctx: RunContext) -> Reconstructions:
        """Pool, initial populations, generations, the elite (or the `keep` fittest) per class."""
        p: MirrorParams = self.params
        generator = self.style_generator(prior, ctx)
        size = oracle.image_shape[-1]
        batch = p.gan.batch_size
        draw = mirror_renderer(generator, size, p)

        def probabilities(w: torch.Tensor) -> torch.Tensor:
            return oracle.probabilities(draw(w.to(ctx.device)))

        def log_confidence(w: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            probs = probabilities(w).gather(1, labels.to(ctx.device).view(-1, 1)).squeeze(1)
            return probs.clamp_min(1e-45).log().cpu()

        pool = sample_pool(generator, p.pool, ctx)
        scores = pool_log_confidence(pool, classes.to(ctx.device), probabilities, batch)
        n = min(p.population, p.pool)
        initial = scores.topk(n, dim=0)
        top = initial.indices.T  # classes x n
        space, back = latent_spaces(p.latent_space)
        low, high, std = p_space_bounds(pool, p.latent_space, p.p_std_ce)

        def mutate(children: torch.Tensor, mask: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
            noise = p.mutation_ce * (2 * std * torch.rand(std.shape, generator=gen) - std)  # one draw per generation
            return torch.maximum(torch.minimum(back(space(children) + mask * noise), high), low)

        with ctx.reporter.bar("Mirror genetic search", p.generations) as advance:
            result = genetic_search(
                pool[top],
                classes,
                log_confidence,
                generations=p.generations,
                mutate=mutate,
                mutation_prob=p.mutation_prob,
                generator=ctx.generator("genetic"),
                stop_fitness=math.log(p.min_score),
                crossover=p.crossover,
                batch_size=batch,
                advance=advance,
            )
        keep = min(p.keep, n)
        latents = result.populations[:, :keep].reshape(-1, pool.shape[1])
        labels = classes.repeat_interleave(keep)
        images = self.renders(generator, latents, size, ctx.device)
        stats = {
            "mean_generations": float(result.generations.float().mean()),
            "mean_elite_confidence": float(result.fitness[:, 0].exp().mean()),
            "mean_initial_elite_confidence": float(initial.values[0].exp().mean()),
        }
        return Reconstructions(images, labels, torch.arange(keep).repeat(len(classes)), latents, stats)
