"""PLG-MI: "Pseudo Label-Guided Model Inversion Attack via Conditional Generative Adversarial Network".

Yuan, Chen, Zhang, Xu; AAAI 2023 (official `top_n_selection.py`, `train_cgan.py`, `reconstruct.py`; spec §6).
Stage 0 labels public images with the target: for each class, the n public images it is most confident about.
Stage 1 trains a conditional SNGAN on them (hinge loss; the generator also minimises alpha x max-margin of the
target on augmented fakes). Stage 2 searches z per (class, restart) with Adam and no prior term: the conditional
generator is the prior; each step sums the max-margin loss of two independently augmented views.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from mibench.api.attack import DataInfo, GenerativeAttack, IdentityLoss, Reconstructions
from mibench.api.context import RunContext
from mibench.api.oracle import Access, TargetOracle
from mibench.data.base import ImageSet, iterate_batches, to_device, to_float
from mibench.gan.conditional import ConditionalResNetGenerator, SNProjectionDiscriminator, sample_conditional
from mibench.inversion.losses import IDENTITY_LOSSES, max_margin_identity
from mibench.inversion.search import adam_conditional_search, per_sample_normal
from mibench.models.base import ClassifierOutput, SavedShapeBuffers, freeze
from mibench.params import Params
from mibench.registry import ATTACKS
from mibench.training.augmentation import PLGAugmentParams, plg_augment


class CGANParams(Params):
    """Stage 0-1 settings of the official code."""

    top_n: int = Field(30, ge=1, description="public images pseudo-labelled per class")
    ch: int = Field(64, ge=1)
    z_dim: int = Field(128, ge=1)
    iterations: int = Field(30000, ge=1, description="generator iterations, each with n_dis discriminator steps")
    n_dis: int = Field(5, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(2e-4, gt=0)
    beta1: float = 0.0
    beta2: float = 0.9
    alpha: float = Field(0.2, ge=0, description="weight of the max-margin inversion loss in the generator loss")
    augment: PLGAugmentParams = Field(default_factory=lambda: PLGAugmentParams(jitter_p=0.5))


class PLGMIParams(Params):
    """Trap-MID protocol: 600 iterations, Adam lr 0.1, 5 restarts, two augmented views, max-margin loss."""

    cgan: CGANParams = Field(default_factory=CGANParams)
    iterations: int = Field(600, ge=1)
    lr: float = Field(0.1, gt=0)
    restarts: int = Field(5, ge=1)
    views: int = Field(2, ge=1, description="independently augmented views per step")
    augment: PLGAugmentParams = Field(default_factory=PLGAugmentParams)
    batch_size: int = Field(300, ge=1, description="latents optimised together (memory only)")
    # The official `--inv_loss_type`: max-margin by default; cross-entropy and PPA's Poincaré loss selectable.
    inversion_loss: Literal["max_margin", "ce", "poincare"] = "max_margin"


class PLGPrior(SavedShapeBuffers):
    """The conditional GAN, its pseudo-labelled public indices (num_classes x top_n) and auxiliary signatures.

    The auxiliary signatures (class x feature) are only filled by the adaptive variants.
    """

    def __init__(self, generator: nn.Module, discriminator: nn.Module, num_classes: int, top_n: int):
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        self.register_buffer("pseudo_labels", torch.zeros(num_classes, top_n, dtype=torch.long))
        self.register_buffer("auxiliary_signatures", torch.zeros(0))


# penalty(target output on augmented images, intended labels) -> per-sample extra loss (the adaptive variants)
Penalty = Callable[[ClassifierOutput, torch.Tensor], torch.Tensor]


@torch.no_grad()
def top_n_pseudo_labels(oracle: TargetOracle, public: ImageSet, n: int, device: torch.device) -> torch.Tensor:
    """For each class independently, the indices of the n public images with the highest target probability."""
    probs = torch.cat(
        [oracle.probabilities(to_float(public.images[idx], device)).cpu() for idx in iterate_batches(len(public), 350)]
    )
    return probs.topk(min(n, len(public)), dim=0).indices.T.contiguous()


def cgan_generator_loss(
    d_fake: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, alpha: float, extra: torch.Tensor | None = None
) -> torch.Tensor:
    """-mean D(G(z, y)) + alpha mean max-margin(T(A(G(z, y))), y) [+ mean extra, already weighted, not by alpha]."""
    loss = -d_fake.mean() + alpha * max_margin_identity(logits, labels).mean()
    return loss if extra is None else loss + extra.mean()


def train_plgmi_cgan(
    prior: PLGPrior,
    public: ImageSet,
    oracle: TargetOracle,
    p: CGANParams,
    ctx: RunContext,
    penalty: Penalty | None = None,
) -> None:
    """Stage 1 in place on `prior.pseudo_labels`: the hinge-loss cGAN, Adam (0, 0.9).

    Real images get dequantisation noise U(0, 1/256); the generator loss is -D(G(z, y)) + alpha max-margin of the
    target on augmented fakes, plus the adaptive variants' `penalty` with its own weights (not scaled by alpha: the
    Trap-MID paper adds the signature terms to "the original generator loss", Eq. 7).
    """
    device = ctx.device
    labels_idx = prior.pseudo_labels
    k = labels_idx.shape[0]
    real_images = public.images[labels_idx.flatten()].to(device)
    real_labels = torch.arange(k).repeat_interleave(labels_idx.shape[1]).to(device)
    g, d = prior.generator.to(device).train(), prior.discriminator.to(device).train()
    opt_g = torch.optim.Adam(g.parameters(), lr=p.lr, betas=(p.beta1, p.beta2))
    opt_d = torch.optim.Adam(d.parameters(), lr=p.lr, betas=(p.beta1, p.beta2))
    gens = {n: ctx.generator(n) for n in ("z", "y", "real", "noise", "augment")}

    def fake_batch() -> tuple[torch.Tensor, torch.Tensor]:
        return sample_conditional(g, p.batch_size, p.z_dim, k, gens, device)

    with ctx.reporter.bar("cGAN (PLG-MI)", p.iterations) as advance:
        for _ in range(p.iterations):
            fake, y = fake_batch()
            out = oracle(plg_augment(fake, p.augment, gens["augment"]))
            extra = penalty(out, y) if penalty is not None else None
            g_loss = cgan_generator_loss(d(fake, y), out.logits, y, p.alpha, extra)
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            for _ in range(p.n_dis):
                with torch.no_grad():
                    fake, y = fake_batch()
                idx = to_device(torch.randint(0, len(real_labels), (p.batch_size,), generator=gens["real"]), device)
                real = to_float(real_images[idx])
                real = real + to_device(torch.rand(real.shape, generator=gens["noise"]), device) / 256
                d_loss = F.relu(1 - d(real, real_labels[idx])).mean() + F.relu(1 + d(fake, y)).mean()
                opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                opt_d.step()
            advance(1)
    g.eval()
    d.eval()


@ATTACKS.register
class PLGMI(GenerativeAttack):
    """Pseudo-label-guided conditional GAN and augmented max-margin latent search."""

    name: ClassVar[str] = "plgmi"
    paper: ClassVar[str] = "Yuan et al., Pseudo Label-Guided Model Inversion Attack via Conditional GAN, AAAI 2023"
    official: ClassVar[str | None] = "LetheSec/PLG-MI-Attack @ 3cf8735"
    access: ClassVar[Access] = Access.WHITE_BOX
    published_pipeline: ClassVar[str | None] = "plgmi"
    version: ClassVar[int] = 2  # 2: keeps the unclamped output for the published evaluation protocol
    Params = PLGMIParams
    prior_name: ClassVar[str] = "plgmi-cgan"
    prior_uses_target: ClassVar[bool] = True

    def prior_params(self) -> CGANParams:
        """Stage 0-1 settings (and the target) determine the prior."""
        return self.params.cgan

    def build_prior(self, info: DataInfo, name: str | None = None) -> PLGPrior:
        """The conditional generator and projection discriminator at the data's resolution."""
        c = self.params.cgan
        return PLGPrior(
            ConditionalResNetGenerator(info.num_classes, info.image_size, info.channels, c.ch, c.z_dim),
            SNProjectionDiscriminator(info.num_classes, info.image_size, info.channels, c.ch),
            info.num_classes,
            c.top_n,
        )

    def train_prior(
        self, prior: nn.Module, public: ImageSet, oracle: TargetOracle | None, ctx: RunContext, name: str | None = None
    ) -> None:
        """Pseudo-label the public data with the target (stage 0), then train the cGAN (stage 1)."""
        prior.pseudo_labels = top_n_pseudo_labels(oracle, public, self.params.cgan.top_n, ctx.device).cpu()
        penalty = self.signature_penalty(prior, public, oracle, ctx)
        train_plgmi_cgan(prior, public, oracle, self.params.cgan, ctx, penalty)

    def signature_penalty(
        self, prior: PLGPrior, public: ImageSet, oracle: TargetOracle, ctx: RunContext
    ) -> Penalty | None:
        """An extra per-sample loss in both stages (none for PLG-MI; the adaptive variants' signature terms)."""
        return None

    def identity_loss(self, oracle: TargetOracle, prior: Any, ctx: RunContext) -> IdentityLoss:
        """The inversion loss of one augmented view, per sample (max-margin by default), plus any penalty."""
        loss_of = IDENTITY_LOSSES[self.params.inversion_loss]
        penalty = self.signature_penalty(prior, None, oracle, ctx)

        def identity(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            out = oracle(images)
            loss = loss_of(out.logits, labels)
            return loss if penalty is None else loss + penalty(out, labels)

        return identity

    def invert(self, prior: nn.Module, oracle: TargetOracle, classes: torch.Tensor, ctx: RunContext) -> Reconstructions:
        """Adam on z for every (class, restart), two augmented views per step, no clipping."""
        p: PLGMIParams = self.params
        generator = freeze(prior.generator).to(ctx.device)
        labels = classes.repeat(p.restarts)
        restarts = torch.arange(p.restarts).repeat_interleave(classes.numel())
        z0 = per_sample_normal(ctx, [(int(c), int(r)) for c, r in zip(labels, restarts, strict=True)], p.cgan.z_dim)
        augment = ctx.generator("augment")
        identity = self.identity_loss(oracle, prior, ctx)

        def step_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return sum(identity(plg_augment(x, p.augment, augment), y).mean() for _ in range(p.views))

        latents, images = adam_conditional_search(
            generator, z0, labels, step_loss, iterations=p.iterations, lr=p.lr, batch_size=p.batch_size, ctx=ctx,
            description="PLG-MI latent search",
        )  # fmt: skip
        # The generator is trained to emit [0, 1] through a tanh; reconstructions are clamped into that range. The
        # raw output is kept too: the official evaluation feeds it, unclamped, to the evaluation model.
        stats = {"target_queries": float(oracle.queries)}
        return Reconstructions(images.clamp(0, 1), labels, restarts, latents, stats, unclamped=images)
