"""KED-MI: "Knowledge-Enriched Distributional Model Inversion Attacks" (Chen, Kahla, Jia, Qi; ICCV 2021).

Stage 1 trains an inversion-specific GAN whose discriminator learns the target's soft labels on public data
(`mibench.gan.semi_supervised`; the GAN depends on the target, so it is cached per target). Stage 2 learns one
Gaussian per class in latent space with L = L_prior + 100 CE(T(G(z)), y), L_prior = -log D_real(G(z)) through the
discriminator's log-sum-exp (paper Eq. 7-8; official `recovery.py` with `--improved_flag --dist_flag`), then draws 5
samples per class. Minibatch discrimination couples the samples of a batch, so the prior is evaluated in groups of
60 classes, the official batch (spec §4.6).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from mibench.api.attack import DataInfo, GenerativeAttack, IdentityLoss, Reconstructions
from mibench.api.context import RunContext
from mibench.api.oracle import Access, TargetOracle
from mibench.data.base import ImageSet
from mibench.gan.networks import DCGANGenerator, GANPrior, KEDMIDiscriminator
from mibench.gan.semi_supervised import KEDGANParams, real_fake_loss, train_kedmi_gan
from mibench.inversion.alignment import AlignmentParams, aligned_loss
from mibench.inversion.search import distributional_search, in_chunks, per_sample_normal
from mibench.models.base import freeze
from mibench.params import Params
from mibench.registry import ATTACKS


class KEDMIParams(Params):
    """Trap-MID/PLG-MI protocol: 1500 iterations (2400 in KED-MI's own `recovery.py`), 5 samples per class."""

    gan: KEDGANParams = Field(default_factory=KEDGANParams)
    iterations: int = Field(1500, ge=1)
    lr: float = Field(0.02, gt=0)
    identity_weight: float = Field(100.0, ge=0)
    samples: int = Field(5, ge=1, description="reconstructions drawn per class from its learnt Gaussian")
    clip_z: Literal["none", "in_graph"] = "none"
    group_size: int = Field(60, ge=1, description="classes per minibatch-discrimination group (official batch)")
    alignment: AlignmentParams = Field(
        default_factory=AlignmentParams,
        description="AlignMI's gradient alignment of the identity loss (mode: paa or taa; Peng et al. NeurIPS 2025)",
    )
    added_later: ClassVar[dict[str, Any]] = {"alignment": AlignmentParams()}


def kedmi_prior(info: DataInfo, p: KEDGANParams) -> GANPrior:
    """G64 and the KED-MI discriminator at the data's resolution."""
    return GANPrior(
        DCGANGenerator(p.z_dim, info.image_size, info.channels, p.width),
        KEDMIDiscriminator(info.num_classes, info.image_size, info.channels, p.width),
    )


@ATTACKS.register
class KEDMI(GenerativeAttack):
    """Knowledge-enriched GAN and distributional latent search."""

    name: ClassVar[str] = "kedmi"
    paper: ClassVar[str] = "Chen et al., Knowledge-Enriched Distributional Model Inversion Attacks, ICCV 2021"
    official: ClassVar[str | None] = "SCccc21/Knowledge-Enriched-DMI @ 1ec92f4"
    access: ClassVar[Access] = Access.WHITE_BOX
    published_pipeline: ClassVar[str | None] = "plgmi-baselines"
    Params = KEDMIParams
    prior_name: ClassVar[str] = "kedmi-gan"
    prior_uses_target: ClassVar[bool] = True

    def prior_params(self) -> KEDGANParams:
        """Only the GAN settings (and the target) determine the prior."""
        return self.params.gan

    def build_prior(self, info: DataInfo, name: str | None = None) -> GANPrior:
        """G64 and the minibatch-discrimination discriminator."""
        return kedmi_prior(info, self.params.gan)

    def train_prior(
        self, prior: nn.Module, public: ImageSet, oracle: TargetOracle | None, ctx: RunContext, name: str | None = None
    ) -> None:
        """Semi-supervised GAN with the target's soft labels."""
        train_kedmi_gan(prior.generator, prior.discriminator, public, oracle, self.params.gan, ctx)

    def invert(self, prior: nn.Module, oracle: TargetOracle, classes: torch.Tensor, ctx: RunContext) -> Reconstructions:
        """Learn a Gaussian per class, then sample from it."""
        p: KEDMIParams = self.params
        gan = self.generative_prior(prior)
        generator = freeze(gan.generator).to(ctx.device)
        disc = freeze(gan.discriminator).to(ctx.device)
        identity = aligned_loss(self.identity_loss(oracle, prior, ctx), p.alignment, ctx.generator("alignment"))
        mus, log_vars = search_gaussians(generator, disc, identity, classes, p, ctx)
        labels = classes.repeat(p.samples)
        restarts = torch.arange(p.samples).repeat_interleave(classes.numel())
        eps = per_sample_normal(ctx, [(int(c), int(r)) for c, r in zip(labels, restarts, strict=True)], p.gan.z_dim)
        z = mus.repeat(p.samples, 1) + torch.exp(log_vars.repeat(p.samples, 1) / 2) * eps
        if p.clip_z == "in_graph":
            z = z.clamp(-1, 1)
        with torch.no_grad():
            images = torch.cat([generator(z[c].to(ctx.device)).cpu() for c in in_chunks(len(z), 256)])
        return Reconstructions(images, labels, restarts, z, {"target_queries": float(oracle.queries)})


def kedmi_objective(generator: nn.Module, disc: nn.Module, identity: IdentityLoss, weight: float, group_size: int):
    """-log D_real(G(z)) + weight identity(G(z), y) (CE for KED-MI), the prior evaluated in groups of `group_size`."""

    def objective(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        images = generator(z)
        _, logits = disc(images, group_size=group_size)
        return real_fake_loss(logits) + weight * identity(images, y)

    return objective


def search_gaussians(
    generator: nn.Module,
    disc: nn.Module,
    identity: IdentityLoss,
    classes: torch.Tensor,
    p: KEDMIParams,
    ctx: RunContext,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, log sigma^2) per class, all classes optimised together (groups keep the official statistics)."""
    objective = kedmi_objective(generator, disc, identity, p.identity_weight, p.group_size)
    with ctx.reporter.bar("KED-MI distributional search", p.iterations) as advance:
        mu, log_var = distributional_search(
            classes.to(ctx.device),
            objective,
            dim=p.gan.z_dim,
            iterations=p.iterations,
            lr=p.lr,
            clip=p.clip_z,
            generator=ctx.generator("eps"),
            device=ctx.device,
            advance=advance,
        )
    return mu.cpu(), log_var.cpu()
