"""One normalising flow per class over a GAN's latent space, stored batched (VMI's per-class latent distribution).

Variational model inversion (Wang et al., NeurIPS 2021) fits, for each class y, a distribution q_y(z) over the
generator's latent space. Its released configuration uses a Glow-style flow of K steps, each an actnorm, a fixed
random shuffle of the coordinates and an additive coupling (Dinh et al., NICE, 2015) whose network has 100 hidden
units and ELU activations, its last layer initialised to zero so that the flow starts as the identity (q_y = N(0, I)).

Sampling pushes eps ~ N(0, I) through the steps; the density follows from the change of variables,
log q(x) = log N(eps) - sum_k sum_i s_k,i, since shuffles and additive couplings have unit Jacobian and actnorm
y = (x + b) exp(s) scales volume by exp(sum s). `log_prob` inverts the flow for densities of given points.

All classes' flows live in one module with a leading class dimension on every parameter, so that C independent flows
train in one batched pass (their losses are summed; each parameter receives only its own class's gradient).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def standard_normal_log_prob(x: torch.Tensor) -> torch.Tensor:
    """Log N(x; 0, I), summed over the last dimension."""
    return -0.5 * (x.pow(2) + math.log(2 * math.pi)).sum(-1)


class ClassFlows(nn.Module):
    """C flows over R^dim: `sample` (C x n x dim with log q), `log_prob` (of given C x n x dim points)."""

    def __init__(self, permutations: torch.Tensor, hidden: int, weights: list[torch.Tensor]):
        """`permutations`: C x steps x dim, each row a permutation of range(dim) (the fixed shuffles).

        `weights`: the coupling networks' first two weight tensors (steps x C x in x out) drawn N(0, 1), scaled here
        by 1/sqrt(in); `initialised` draws them, and the shuffles, from per-class generators.
        """
        super().__init__()
        classes, steps, dim = permutations.shape
        if dim < 2:
            raise ValueError(f"a coupling flow needs a dimension >= 2, got {dim}")
        self.dim, self.steps, self.split = dim, steps, dim // 2
        given, changed = self.split, dim - self.split
        self.register_buffer("permutations", permutations.long())
        self.register_buffer("inverse_permutations", permutations.argsort(-1))
        self.log_scale = nn.Parameter(torch.zeros(steps, classes, 1, dim))
        self.bias = nn.Parameter(torch.zeros(steps, classes, 1, dim))
        self.w1 = nn.Parameter(weights[0] / math.sqrt(given))
        self.b1 = nn.Parameter(torch.zeros(steps, classes, 1, hidden))
        self.w2 = nn.Parameter(weights[1] / math.sqrt(hidden))
        self.b2 = nn.Parameter(torch.zeros(steps, classes, 1, hidden))
        self.w3 = nn.Parameter(torch.zeros(steps, classes, hidden, changed))  # zero: the flow starts as the identity
        self.b3 = nn.Parameter(torch.zeros(steps, classes, 1, changed))

    @classmethod
    def initialised(cls, classes: list[int], dim: int, steps: int, hidden: int, generators) -> ClassFlows:
        """Flows whose shuffles and initial weights come from `generators(c)` for each class c alone."""
        given = dim // 2
        perms, w1, w2 = [], [], []
        for c in classes:
            gen = generators(c)
            perms.append(torch.stack([torch.randperm(dim, generator=gen) for _ in range(steps)]))
            w1.append(torch.randn(steps, given, hidden, generator=gen))
            w2.append(torch.randn(steps, hidden, hidden, generator=gen))
        return cls(torch.stack(perms), hidden, [torch.stack(w1, 1), torch.stack(w2, 1)])

    def _shift(self, k: int, given: torch.Tensor) -> torch.Tensor:
        h = F.elu(given @ self.w1[k] + self.b1[k])
        h = F.elu(h @ self.w2[k] + self.b2[k])
        return h @ self.w3[k] + self.b3[k]

    def _permute(self, x: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
        return x.gather(-1, perms[:, None, :].expand_as(x))

    def forward(self, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """X = f(eps) for eps (C x n x dim), and log q(x) (C x n)."""
        x, log_det = eps, torch.zeros(eps.shape[:2], device=eps.device, dtype=eps.dtype)
        for k in range(self.steps):
            x = (x + self.bias[k]) * self.log_scale[k].exp()
            log_det = log_det + self.log_scale[k].sum(-1)
            x = self._permute(x, self.permutations[:, k])
            given, changed = x[..., : self.split], x[..., self.split :]
            x = torch.cat([given, changed + self._shift(k, given)], dim=-1)
        return x, standard_normal_log_prob(eps) - log_det

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log q(x) of points x (C x n x dim), by inverting every step."""
        log_det = torch.zeros(x.shape[:2], device=x.device, dtype=x.dtype)
        for k in reversed(range(self.steps)):
            given, changed = x[..., : self.split], x[..., self.split :]
            x = torch.cat([given, changed - self._shift(k, given)], dim=-1)
            x = self._permute(x, self.inverse_permutations[:, k])
            x = x * (-self.log_scale[k]).exp() - self.bias[k]
            log_det = log_det + self.log_scale[k].sum(-1)
        return standard_normal_log_prob(x) - log_det

    def sample(self, n: int, generators, classes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """N points per class (C x n x dim) with their log q, eps drawn from `generators(c)` per class."""
        device = self.log_scale.device
        eps = torch.stack([torch.randn(n, self.dim, generator=generators(c)) for c in classes]).to(device)
        return self(eps)

    def kl_to_standard_normal(self, n: int, generators, classes: list[int]) -> torch.Tensor:
        """Monte-Carlo KL(q_c || N(0, I)) per class from n samples: mean of log q(x) - log N(x)."""
        x, log_q = self.sample(n, generators, classes)
        return (log_q - standard_normal_log_prob(x)).mean(1)
