"""Batched latent search: per-sample seeded initialisation, GMI's momentum step, and the chunked driver.

Batching across classes and restarts must not change the result (spec §10.1): each latent is drawn from its own
generator seeded by (job seed, class, restart), and losses are summed and divided by a fixed reference batch size,
so a latent's update does not depend on how many others share its physical batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mibench.api.context import RunContext
from mibench.data.base import to_device


def per_sample_normal(ctx: RunContext, keys: list[tuple[int, ...]], dim: int) -> torch.Tensor:
    """One N(0, I_dim) vector per key, each from a generator seeded by (ctx.seed, "latent", *key)."""
    return torch.stack([torch.randn(dim, generator=ctx.generator("latent", *key)) for key in keys])


class GMIMomentum:
    """GMI's latent update (spec §2.6), a Nesterov reformulation with z clamped to [-clip, clip] after every step.

    v_prev = v; v = mu v - lr grad; z = z - mu v_prev + (1 + mu) v. v starts at 0 and is never clipped; z is not
    clipped before the first step.
    """

    def __init__(self, lr: float = 0.02, momentum: float = 0.9, clip: float | None = 1.0):
        self.lr, self.momentum, self.clip = lr, momentum, clip
        self.velocity: torch.Tensor | None = None

    def step(self, z: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """The next z."""
        if self.velocity is None:
            self.velocity = torch.zeros_like(z)
        previous = self.velocity
        self.velocity = self.momentum * previous - self.lr * grad
        z = z - self.momentum * previous + (1 + self.momentum) * self.velocity
        return z.clamp(-self.clip, self.clip) if self.clip is not None else z


# objective(z, labels) -> per-sample losses (N,)
Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def momentum_search(
    z0: torch.Tensor,
    labels: torch.Tensor,
    objective: Objective,
    *,
    iterations: int,
    lr: float,
    momentum: float,
    clip: float | None,
    reference_batch: int,
    advance: Callable[[int], None] = lambda n: None,
) -> torch.Tensor:
    """Minimise sum_i objective_i / reference_batch over z with `GMIMomentum`; returns the final z (detached).

    Non-finite gradient entries are treated as zero.
    """
    z = z0.clone()
    opt = GMIMomentum(lr, momentum, clip)
    for _ in range(iterations):
        z.requires_grad_(True)
        loss = objective(z, labels).sum() / reference_batch
        (grad,) = torch.autograd.grad(loss, z)
        # A stochastic or faulty target (MIDAS's bit errors) can return non-finite gradients; an attacker skips them.
        z = opt.step(z.detach(), torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0))
        advance(1)
    return z.detach()


def zero_nonfinite_grads(tensors) -> None:
    """Set non-finite gradient entries of `tensors` to zero, in place.

    A stochastic or faulty target (MIDAS's bit errors) can return non-finite gradients; an attacker skips them.
    """
    for t in tensors:
        if t.grad is not None:
            t.grad.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)


def in_chunks(n: int, chunk: int) -> list[slice]:
    """Slices covering range(n) in pieces of at most `chunk` (the physical batch)."""
    return [slice(s, min(s + chunk, n)) for s in range(0, n, chunk)]


def adam_conditional_search(
    generator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    z0: torch.Tensor,
    labels: torch.Tensor,
    step_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    iterations: int,
    lr: float,
    batch_size: int,
    ctx: RunContext,
    description: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Adam on the latents of a conditional generator G(z, y), chunk by chunk, with no clipping (PLG-MI, LOKT).

    Each step minimises `step_loss(G(z, y), y)`, a scalar (the attacks sum augmented views of a per-sample loss
    averaged over the chunk). Returns the final latents and their images G(z, y), unclamped, on the CPU.
    """
    device = ctx.device
    latents = torch.empty_like(z0)
    chunks = in_chunks(len(labels), batch_size)
    with ctx.reporter.bar(description, iterations * len(chunks)) as advance:
        for chunk in chunks:
            z = z0[chunk].to(device).requires_grad_(True)
            y = labels[chunk].to(device)
            opt = torch.optim.Adam([z], lr=lr)
            for _ in range(iterations):
                loss = step_loss(generator(z, y), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                advance(1)
            latents[chunk] = z.detach().cpu()
    with torch.no_grad():
        images = torch.cat([generator(latents[c].to(device), labels[c].to(device)).cpu() for c in chunks])
    return latents, images


def distributional_search(
    labels: torch.Tensor,
    objective: Objective,
    *,
    dim: int,
    iterations: int,
    lr: float,
    clip: str,
    generator: torch.Generator,
    device: torch.device,
    advance: Callable[[int], None] = lambda n: None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """KED-MI's distributional recovery (Chen et al. ICCV 2021, Sec. 3.3; spec §4.4): one Gaussian per latent.

    mu starts at 0 and s = log sigma^2 at 1; each iteration samples z = mu + exp(s / 2) eps and takes an Adam step
    (default betas) on the batch-mean objective. `clip: in_graph` clamps z to [-1, 1] before the generator
    (LOMMA); `none` is official KED-MI, whose post-step clamp of a detached copy has no effect. Returns (mu, s).
    """
    n = labels.shape[0]
    mu = torch.zeros(n, dim, device=device, requires_grad=True)
    log_var = torch.ones(n, dim, device=device, requires_grad=True)
    opt = torch.optim.Adam([mu, log_var], lr=lr)
    for _ in range(iterations):
        eps = to_device(torch.randn(n, dim, generator=generator), device)
        z = mu + torch.exp(log_var / 2) * eps
        if clip == "in_graph":
            z = z.clamp(-1, 1)
        loss = objective(z, labels).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        advance(1)
    return mu.detach(), log_var.detach()
