"""Differential evolution over latent vectors, vectorised over classes (C2FMI's fine stage).

C2FMI (Ye et al., 2023) refines its coarse latents with a differential evolution the official code calls
`DE_c2b_5_bin2` (MiLabHITSZ/2022YeC2FMI @ ca5142a, `utils/DE.py`): one population of `P` (32) latents per class,
fitness the target's probability of the class (higher is better). A generation:

1. the parents' fitness is computed (the official code recomputes it every generation: P queries);
2. each parent x_i makes a child x_i + 0.02 (x_best - x_i) + beta sum_{k<4} (x_a_k - x_b_k), with a_k, b_k drawn
   uniformly with replacement and beta = 0.1, falling linearly over the last 30 generations as
   0.1 (G - g) / 50;
3. binomial crossover: each coordinate of the child is kept with probability 0.5, else the parent's;
4. the children's fitness (P queries); a child replaces its parent when strictly fitter.

`extend_population` fills a population up from fewer starting latents as the official `extend`: the mean of one
and the midpoint of two others (three distinct members), mixed 0.7 / 0.3 with a fresh latent.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# fitness(latents (m, d), classes (m,)) -> (m,) scores, higher is better
Fitness = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def extend_population(
    start: torch.Tensor, size: int, fresh: Callable[[int], torch.Tensor], generator: torch.Generator
) -> torch.Tensor:
    """Classes x size x d from classes x n x d starts (n >= 3): u = 0.7 (0.5 (0.5 (x1 + x2) + x3)) + 0.3 fresh."""
    c, n, d = start.shape
    if n >= size:
        return start[:, :size]
    if n < 3:
        raise ValueError(f"differential evolution needs at least 3 starting latents per class, got {n}")
    missing = size - n
    picks = torch.rand(c, missing, n, generator=generator).argsort(dim=2)[..., :3]  # three distinct members
    members = start.gather(1, picks.reshape(c, -1, 1).expand(-1, -1, d)).reshape(c, missing, 3, d)
    mixed = 0.5 * (0.5 * (members[:, :, 0] + members[:, :, 1]) + members[:, :, 2])
    added = 0.7 * mixed + 0.3 * fresh(c * missing).reshape(c, missing, d)
    return torch.cat([start, added], dim=1)


def _evaluate(populations: torch.Tensor, classes: torch.Tensor, fitness: Fitness) -> torch.Tensor:
    c, p, d = populations.shape
    return fitness(populations.reshape(c * p, d), classes.repeat_interleave(p)).reshape(c, p)


def differential_evolution(
    populations: torch.Tensor,
    classes: torch.Tensor,
    fitness: Fitness,
    *,
    generations: int,
    generator: torch.Generator,
    pulls: int = 4,
    beta: float = 0.1,
    to_best: float = 0.02,
    crossover: float = 0.5,
    anneal: int = 30,
    advance: Callable[[int], None] = lambda n: None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Evolve each class's population (see module docstring); returns it with its final fitness (P queries)."""
    pop = populations.clone()
    c, p, d = pop.shape
    for g in range(generations):
        step = beta if g < generations - anneal else beta * (generations - g) / 50
        parent_fitness = _evaluate(pop, classes, fitness)
        best = pop.gather(1, parent_fitness.argmax(dim=1).view(c, 1, 1).expand(-1, 1, d))
        pairs = torch.randint(0, p, (c, p, pulls, 2), generator=generator)
        gathered = pop.gather(1, pairs.reshape(c, -1, 1).expand(-1, -1, d)).reshape(c, p, pulls, 2, d)
        children = pop + to_best * (best - pop) + step * (gathered[..., 0, :] - gathered[..., 1, :]).sum(dim=2)
        take_child = torch.rand(c, p, d, generator=generator) > crossover
        children = torch.where(take_child, children, pop)
        better = _evaluate(children, classes, fitness) > parent_fitness
        pop = torch.where(better.unsqueeze(2), children, pop)
        advance(1)
    return pop, _evaluate(pop, classes, fitness)
