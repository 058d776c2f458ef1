"""Genetic search over latent vectors, vectorised over classes (Mirror's black-box search; C2FMI's builds on it).

One population of `n` latents per class, scored by a fitness (higher is better). A generation, as Mirror's official
`VectorizedPopulation` (njuaplusplus/mirror @ 2730a14, `my_blackbox_mirror.py`):

1. sort by fitness; the best individual (the elite) survives unchanged;
2. n - 1 parent pairs are drawn with replacement, each parent with probability softmax(fitness);
3. uniform crossover: each coordinate comes from the first parent with probability f1 / (f1 + f2). With Mirror's
   fitness (a log-probability, always negative) that ratio favours the *less* fit parent; the official formula is
   kept (`crossover: official`) and `fitter` uses f2 / (f1 + f2) instead;
4. mutation: each coordinate of a child is perturbed with probability `mutation_prob` by `mutate(children, mask)`.

A class stops evolving once its elite reaches `stop_fitness` (Mirror: log 0.95). Random draws come from one
generator, so a search is reproducible; batching across classes does not change any class's draws' distribution.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

# fitness(latents (m, d), classes (m,)) -> (m,) scores, higher is better
Fitness = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# mutate(children (c, n, d), mask (c, n, d), generator) -> children
Mutation = Callable[[torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class GeneticResult:
    """The final populations (classes x n x d) sorted by fitness, their fitness, and generations run per class."""

    populations: torch.Tensor
    fitness: torch.Tensor
    generations: torch.Tensor


def evaluate(populations: torch.Tensor, classes: torch.Tensor, fitness: Fitness, batch_size: int) -> torch.Tensor:
    """Fitness of every individual (classes x n), in batches of `batch_size` latents."""
    c, n, d = populations.shape
    flat, labels = populations.reshape(c * n, d), classes.repeat_interleave(n)
    scores = [fitness(flat[i : i + batch_size], labels[i : i + batch_size]) for i in range(0, c * n, batch_size)]
    return torch.cat(scores).reshape(c, n)


def next_generation(
    populations: torch.Tensor,
    fitness: torch.Tensor,
    mutate: Mutation,
    mutation_prob: float,
    generator: torch.Generator,
    crossover: Literal["official", "fitter"] = "official",
) -> torch.Tensor:
    """Elite, fitness-proportional parents, uniform crossover, mutation (see module docstring); sorted input."""
    c, n, d = populations.shape
    weights = torch.softmax(fitness, dim=1)
    picks = torch.multinomial(weights, 2 * (n - 1), replacement=True, generator=generator)  # classes x 2(n-1)
    first, second = picks[:, : n - 1], picks[:, n - 1 :]
    f1, f2 = fitness.gather(1, first), fitness.gather(1, second)
    share = (f1 if crossover == "official" else f2) / (f1 + f2)
    take_first = torch.rand(c, n - 1, d, generator=generator) < share.unsqueeze(2)
    parents1 = populations.gather(1, first.unsqueeze(2).expand(-1, -1, d))
    parents2 = populations.gather(1, second.unsqueeze(2).expand(-1, -1, d))
    children = torch.where(take_first, parents1, parents2)
    mask = torch.rand(c, n - 1, d, generator=generator) < mutation_prob
    children = mutate(children, mask, generator)
    return torch.cat([populations[:, :1], children], dim=1)


def genetic_search(
    populations: torch.Tensor,
    classes: torch.Tensor,
    fitness: Fitness,
    *,
    generations: int,
    mutate: Mutation,
    mutation_prob: float,
    generator: torch.Generator,
    stop_fitness: float | None = None,
    crossover: Literal["official", "fitter"] = "official",
    batch_size: int = 256,
    advance: Callable[[int], None] = lambda n: None,
) -> GeneticResult:
    """Evolve one population per class for up to `generations` (see module docstring)."""
    populations = populations.clone()
    scores = evaluate(populations, classes, fitness, batch_size)
    run = torch.zeros(len(classes), dtype=torch.long)
    for _ in range(generations):
        order = scores.argsort(dim=1, descending=True)
        populations = populations.gather(1, order.unsqueeze(2).expand_as(populations))
        scores = scores.gather(1, order)
        active = torch.ones(len(classes), dtype=torch.bool) if stop_fitness is None else scores[:, 0] < stop_fitness
        if not active.any():
            break
        grown = next_generation(populations[active], scores[active], mutate, mutation_prob, generator, crossover)
        populations[active] = grown
        scores[active] = evaluate(grown, classes[active], fitness, batch_size)
        run += active.long()
        advance(1)
    order = scores.argsort(dim=1, descending=True)
    populations = populations.gather(1, order.unsqueeze(2).expand_as(populations))
    return GeneticResult(populations, scores.gather(1, order), run)
