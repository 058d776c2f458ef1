"""KED-MI's inversion-specific GAN (Chen et al., ICCV 2021, Sec. 3.2; official `k+1_gan.py`, spec §4.3).

The discriminator learns the target's soft labels on public images (the "knowledge") plus real vs fake through the
implicit D_real(x) = sigmoid(logsumexp(l(x))); the generator matches D's mean features of public images and
minimises the entropy of D's class prediction on its samples.

The soft labels come from the target in **train** mode by default (`target_mode: train`), as every official code
base computes them (KED-MI `k+1_gan.py`, PLG-MI's `KED_MI.py`, LOMMA's `engine.py` never call `T.eval()`): each
public batch's BatchNorm statistics, and an active dropout in the IR nets' output layer. `target_mode: eval` uses the
released model's running statistics (cleaner, not the published protocol).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from mibench.api.context import RunContext
from mibench.api.oracle import TargetOracle
from mibench.data.base import ImageSet, iterate_batches, to_device, to_float
from mibench.params import Params


class KEDGANParams(Params):
    """KED-MI GAN settings: 120 epochs, batch 64, Adam 2e-4 (0.5, 0.999), a generator step every 5 steps."""

    z_dim: int = Field(100, ge=1)
    width: int = Field(64, ge=1)
    epochs: int = Field(120, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(2e-4, gt=0)
    beta1: float = 0.5
    beta2: float = 0.999
    n_critic: int = Field(5, ge=1, description="discriminator steps per generator step")
    entropy_weight: float = Field(1e-4, ge=0, description="weight of the batch-summed entropy (official)")
    max_steps: int | None = Field(None, ge=1, description="cap on discriminator steps (budget override)")
    target_mode: Literal["train", "eval"] = Field(
        "train", description="the target's mode for the soft labels: train (official: batch statistics) or eval"
    )


def real_fake_loss(logits: torch.Tensor) -> torch.Tensor:
    """-log D_real per sample = softplus(LSE(l)) - LSE(l), with D_real = sigmoid(LSE(l))."""
    lse = torch.logsumexp(logits, dim=1)
    return F.softplus(lse) - lse


def fake_loss(logits: torch.Tensor) -> torch.Tensor:
    """-log(1 - D_real) per sample = softplus(LSE(l))."""
    return F.softplus(torch.logsumexp(logits, dim=1))


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Batch mean of -sum_k p_k log softmax(l)_k."""
    return -(target_probs * F.log_softmax(logits, dim=1)).sum(1).mean()


def train_kedmi_gan(
    generator: nn.Module, disc: nn.Module, public: ImageSet, oracle: TargetOracle, p: KEDGANParams, ctx: RunContext
) -> dict[str, float]:
    """Train in place (see module docstring).

    Three independently shuffled public batches per step: labelled, unlabelled, feature matching. The config key
    `unlabel_weight: 10` of the official code is never read there, so it is not applied here either.
    """
    device = ctx.device
    generator.to(device).train()
    disc.to(device).train()
    opt_g = torch.optim.Adam(generator.parameters(), lr=p.lr, betas=(p.beta1, p.beta2))
    opt_d = torch.optim.Adam(disc.parameters(), lr=p.lr, betas=(p.beta1, p.beta2))
    gens = [ctx.generator("batches", i) for i in range(3)]
    noise = ctx.generator("z")
    images = public.images.to(device)
    per_epoch = max(1, len(public) // p.batch_size)
    total = per_epoch * p.epochs if p.max_steps is None else min(per_epoch * p.epochs, p.max_steps)

    def batches(gen: torch.Generator):
        while True:
            yield from iterate_batches(len(public), p.batch_size, generator=gen, drop_last=True)

    streams = [batches(g) for g in gens]

    def z(n: int) -> torch.Tensor:
        return to_device(torch.randn(n, p.z_dim, generator=noise), device)

    d_loss = g_loss = torch.zeros(())
    with ctx.reporter.bar("GAN (KED-MI)", total) as advance:
        for step in range(1, total + 1):
            x, x_u, x_fm = (to_float(images[to_device(next(s), device)]) for s in streams)
            with torch.no_grad():
                soft = oracle.train_mode_probabilities(x) if p.target_mode == "train" else oracle.probabilities(x)
                fake = generator(z(x.shape[0]))
            _, l_lab = disc(x)
            _, l_unlab = disc(x_u)
            _, l_fake = disc(fake)
            d_loss = soft_cross_entropy(l_lab, soft) + 0.5 * (real_fake_loss(l_unlab).mean() + fake_loss(l_fake).mean())
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            if step % p.n_critic == 0:
                f_fake, l_gen = disc(generator(z(p.batch_size)))
                with torch.no_grad():
                    f_real, _ = disc(x_fm)
                probs = F.softmax(l_gen, dim=1)
                entropy = -(probs * F.log_softmax(l_gen, dim=1)).sum()
                g_loss = (f_fake.mean(0) - f_real.mean(0)).abs().mean() + p.entropy_weight * entropy
                opt_g.zero_grad(set_to_none=True)
                g_loss.backward()
                opt_g.step()
            advance(1)
    generator.eval()
    disc.eval()
    return {"steps": float(total), "d_loss": d_loss.item(), "g_loss": g_loss.item()}
