"""One normalising flow per class over a GAN's latent space, stored batched (VMI's per-class latent distribution).

Variational model inversion (Wang et al., NeurIPS 2021) fits, for each class y, a distribution q_y(z) over the
generator's latent space. Its released configuration (`--flow_glow 1`, wangkua1/vmi @ f308752 `flow/model.py`,
`flow/modules.py`, `likelihood_model.py`) is a Glow of K steps on the latent seen as a 1 x 1 image. Each step,
in the density ("encode") direction x -> eps:

1. actnorm: x <- (x + b) * exp(s), per coordinate;
2. a fixed random shuffle of the coordinates;
3. an additive coupling x2 <- x2 + NN(x1) (x1 the first half of the coordinates). NN is Glow's `get_block`:
   a convolution without bias (N(0, 0.05^2) weights) followed by an actnorm, ELU, again, then `Conv2dZeros`, a
   zero-initialised layer whose output is multiplied by a learned exp(3 * s_out). On a 1 x 1 image a 3 x 3
   convolution with "same" padding is its centre tap, i.e. a linear layer.

Samples go the other way ("decode", `reverse_flow`): for the steps in reverse order, x2 <- x2 - NN(x1), the shuffle
undone, then the actnorm undone, x <- x * exp(-s) - b, so the last operation on a sample is a per-coordinate affine
map. Shuffles and additive couplings have unit Jacobian, so log q(x) = log N(eps) + sum_k sum_i s_k,i.

Every actnorm (the steps' and the coupling networks' hidden ones) is data-initialised on one encode pass of N(0, I)
samples (`likelihood_model.py`: 100 of them): b = -mean, s = log(1 / (std + 1e-6)) of its input over the batch.

All classes' flows live in one module with a leading class dimension on every parameter, so that C independent flows
train in one batched pass (their losses are summed; each parameter receives only its own class's gradient).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

OUTPUT_LOG_SCALE_FACTOR = 3.0  # Conv2dZeros' logscale_factor: its output is scaled by exp(3 * s_out)
WEIGHT_STD = 0.05  # Glow's Conv2d initialisation
INIT_SAMPLES = 100  # N(0, I) samples of the actnorms' data initialisation (likelihood_model.py)


def standard_normal_log_prob(x: torch.Tensor) -> torch.Tensor:
    """Log N(x; 0, I), summed over the last dimension."""
    return -0.5 * (x.pow(2) + math.log(2 * math.pi)).sum(-1)


def actnorm_from_data(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Glow's actnorm data initialisation over the samples (dim 1): (b, s) = (-mean, log(1 / (std + 1e-6)))."""
    bias = -x.mean(1, keepdim=True)
    std = (x + bias).pow(2).mean(1, keepdim=True).sqrt()
    return bias, torch.log(1.0 / (std + 1e-6))


class ClassFlows(nn.Module):
    """C flows over R^dim: `sample` (C x n x dim with log q), `log_prob` (of given C x n x dim points)."""

    def __init__(self, permutations: torch.Tensor, hidden: int, weights: list[torch.Tensor]):
        """`permutations`: C x steps x dim, each row a permutation of range(dim) (the fixed shuffles).

        `weights`: the coupling networks' first two weight matrices (steps x C x in x out), as drawn; every actnorm
        starts as the identity until `initialise_actnorms`. `initialised` draws both from per-class generators and
        initialises the actnorms.
        """
        super().__init__()
        classes, steps, dim = permutations.shape
        if dim < 2:
            raise ValueError(f"a coupling flow needs a dimension >= 2, got {dim}")
        self.dim, self.steps, self.split = dim, steps, dim // 2
        changed = dim - self.split
        self.register_buffer("permutations", permutations.long())
        self.register_buffer("inverse_permutations", permutations.argsort(-1))
        zeros = lambda width: nn.Parameter(torch.zeros(steps, classes, 1, width))  # noqa: E731
        self.bias, self.log_scale = zeros(dim), zeros(dim)  # the steps' actnorms
        self.w1 = nn.Parameter(weights[0].clone())
        self.h1_bias, self.h1_log_scale = zeros(hidden), zeros(hidden)
        self.w2 = nn.Parameter(weights[1].clone())
        self.h2_bias, self.h2_log_scale = zeros(hidden), zeros(hidden)
        self.w3 = nn.Parameter(torch.zeros(steps, classes, hidden, changed))  # zero: each coupling starts at 0
        self.b3 = zeros(changed)
        self.out_log_scale = zeros(changed)

    @classmethod
    def initialised(
        cls, classes: list[int], dim: int, steps: int, hidden: int, generators: Callable[[int], torch.Generator]
    ) -> ClassFlows:
        """Flows whose shuffles, weights and actnorm initialisation come from `generators(c)` for each class c."""
        given = dim // 2
        perms, w1, w2, init = [], [], [], []
        for c in classes:
            gen = generators(c)
            perms.append(torch.stack([torch.randperm(dim, generator=gen) for _ in range(steps)]))
            w1.append(torch.randn(steps, given, hidden, generator=gen) * WEIGHT_STD)
            w2.append(torch.randn(steps, hidden, hidden, generator=gen) * WEIGHT_STD)
            init.append(torch.randn(INIT_SAMPLES, dim, generator=gen))
        flows = cls(torch.stack(perms), hidden, [torch.stack(w1, 1), torch.stack(w2, 1)])
        flows.initialise_actnorms(torch.stack(init))
        return flows

    @torch.no_grad()
    def initialise_actnorms(self, samples: torch.Tensor) -> None:
        """Set every actnorm from one encode pass of `samples` (C x n x dim), as Glow's first forward call does."""
        self._encode(samples.to(self.bias.device, self.bias.dtype), initialise=True)

    def _encode(self, x: torch.Tensor, initialise: bool = False) -> torch.Tensor:
        """The encode direction x -> eps; `initialise` first sets each actnorm from the data reaching it."""
        for k in range(self.steps):
            if initialise:
                bias, log_scale = actnorm_from_data(x)
                self.bias[k].copy_(bias)
                self.log_scale[k].copy_(log_scale)
            x = self._permute((x + self.bias[k]) * self.log_scale[k].exp(), self.permutations[:, k])
            given, changed = x[..., : self.split], x[..., self.split :]
            x = torch.cat([given, changed + self._shift(k, given, initialise)], dim=-1)
        return x

    def _shift(self, k: int, given: torch.Tensor, initialise: bool = False) -> torch.Tensor:
        """The coupling network of step k (`get_block` on a 1 x 1 image); `initialise` sets its hidden actnorms."""
        hidden = given
        for weight, bias, log_scale in ((self.w1, self.h1_bias, self.h1_log_scale),
                                        (self.w2, self.h2_bias, self.h2_log_scale)):  # fmt: skip
            hidden = hidden @ weight[k]
            if initialise:
                b, s = actnorm_from_data(hidden)
                bias[k].copy_(b)
                log_scale[k].copy_(s)
            hidden = F.elu((hidden + bias[k]) * log_scale[k].exp())
        return (hidden @ self.w3[k] + self.b3[k]) * (OUTPUT_LOG_SCALE_FACTOR * self.out_log_scale[k]).exp()

    def _permute(self, x: torch.Tensor, perms: torch.Tensor) -> torch.Tensor:
        return x.gather(-1, perms[:, None, :].expand_as(x))

    def log_determinant(self) -> torch.Tensor:
        """Log |det d eps / d x| of the encode direction, the same for every point (C x 1): sum of actnorm scales."""
        return self.log_scale.sum(dim=(0, 3))

    def forward(self, eps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Samples x = decode(eps) for eps (C x n x dim), and log q(x) (C x n)."""
        x = eps
        for k in reversed(range(self.steps)):
            given, changed = x[..., : self.split], x[..., self.split :]
            x = torch.cat([given, changed - self._shift(k, given)], dim=-1)
            x = self._permute(x, self.inverse_permutations[:, k])
            x = x * (-self.log_scale[k]).exp() - self.bias[k]
        return x, standard_normal_log_prob(eps) + self.log_determinant()

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log q(x) of points x (C x n x dim), by the encode direction (the official `logp`)."""
        return standard_normal_log_prob(self._encode(x)) + self.log_determinant()

    def sample(self, n: int, generators, classes: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """N points per class (C x n x dim) with their log q, eps drawn from `generators(c)` per class."""
        eps = torch.stack([torch.randn(n, self.dim, generator=generators(c)) for c in classes])
        eps = eps.to(self.log_scale.device, self.log_scale.dtype)
        return self(eps)

    def kl_to_standard_normal(self, n: int, generators, classes: list[int]) -> torch.Tensor:
        """Monte-Carlo KL(q_c || N(0, I)) per class from n samples: mean of log q(x) - log N(x)."""
        x, log_q = self.sample(n, generators, classes)
        return (log_q - standard_normal_log_prob(x)).mean(1)
