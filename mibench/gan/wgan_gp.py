"""WGAN-GP training on public images (Gulrajani et al. 2017), as GMI's stage 1 does it (spec §3.3)."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from mibench.api.context import RunContext
from mibench.data.base import ImageSet, iterate_batches, to_device, to_float
from mibench.params import Params


class WGANGPParams(Params):
    """GMI's GAN hyperparameters (KED-MI `binary_gan.py`, PLG-MI baselines, Trap-MID: 120 epochs; GMI's own: 280)."""

    z_dim: int = Field(100, ge=1)
    width: int = Field(64, ge=1, description="generator/critic base width (64 = G64/DGWGAN)")
    epochs: int = Field(120, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(2e-4, gt=0)
    beta1: float = 0.5
    beta2: float = 0.999
    n_critic: int = Field(5, ge=1, description="critic steps per generator step (global step counter)")
    gp_weight: float = Field(10.0, ge=0)
    max_steps: int | None = Field(None, ge=1, description="cap on critic steps (budget override for smoke runs)")


def gradient_penalty(
    critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    """mean_i (||grad_x D(x_i)|| - 1)^2 at x_i = real_i + a_i (fake_i - real_i), a_i ~ U(0, 1) per sample."""
    alpha = to_device(torch.rand(real.shape[0], 1, 1, 1, generator=generator), real.device)
    mixed = (real + alpha * (fake - real)).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(2, dim=1) - 1.0) ** 2).mean()


def critic_loss(
    critic: nn.Module, real: torch.Tensor, fake: torch.Tensor, gp_weight: float, generator: torch.Generator
) -> torch.Tensor:
    """WGAN-GP critic loss: mean D(fake) - mean D(real) + gp_weight x the gradient penalty."""
    loss = critic(fake).mean() - critic(real).mean()
    return loss + gp_weight * gradient_penalty(critic, real, fake, generator)


def _set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def train_wgan_gp(
    generator: nn.Module, critic: nn.Module, data: ImageSet, p: WGANGPParams, ctx: RunContext
) -> dict[str, float]:
    """Train in place with WGAN-GP; returns the final losses.

    Every critic step uses a shuffled real batch (drop_last) and detached fakes; every
    `n_critic`-th step on the global counter is followed by one generator step on a fresh z with L_G = -mean D(G(z)).
    Adam for both. The last state is kept (no model selection), as in the official code.
    """
    device = ctx.device
    generator.to(device).train()
    critic.to(device).train()
    opt_g = torch.optim.Adam(generator.parameters(), lr=p.lr, betas=(p.beta1, p.beta2))
    opt_d = torch.optim.Adam(critic.parameters(), lr=p.lr, betas=(p.beta1, p.beta2))
    shuffle, noise, mix = ctx.generator("shuffle"), ctx.generator("z"), ctx.generator("gp")
    images = data.images.to(device)
    per_epoch = max(1, len(data) // p.batch_size)
    total = per_epoch * p.epochs if p.max_steps is None else min(per_epoch * p.epochs, p.max_steps)

    def sample_z(n: int) -> torch.Tensor:
        return to_device(torch.randn(n, p.z_dim, generator=noise), device)

    step, d_loss, g_loss = 0, torch.zeros(()), torch.zeros(())
    with ctx.reporter.bar("GAN (WGAN-GP)", total) as advance:
        while step < total:
            for idx in iterate_batches(len(data), p.batch_size, generator=shuffle, drop_last=True):
                real = to_float(images[to_device(idx, device)])
                with torch.no_grad():
                    fake = generator(sample_z(real.shape[0]))
                d_loss = critic_loss(critic, real, fake, p.gp_weight, mix)
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
                step += 1
                advance(1)
                if step % p.n_critic == 0:
                    _set_requires_grad(critic, False)
                    g_loss = -critic(generator(sample_z(p.batch_size))).mean()
                    opt_g.zero_grad(set_to_none=True)
                    g_loss.backward()
                    opt_g.step()
                    _set_requires_grad(critic, True)
                if step >= total:
                    break
    generator.eval()
    critic.eval()
    return {"critic_steps": float(step), "d_loss": d_loss.item(), "g_loss": g_loss.item()}
