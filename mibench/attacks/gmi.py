"""GMI: "The Secret Revealer: Generative Model-Inversion Attacks Against Deep Neural Networks".

Zhang, Jia, Pei, Wang, Li, Song, CVPR 2020. Stage 1 trains a WGAN-GP on public images (target-independent, so one
GAN per public set is cached and shared with LOMMA-GMI and BREP-MI). Stage 2 searches the latent space for each
class with L(z) = -D(G(z)) + lambda * CE(T(G(z)), y) (paper Eq. 3-5; spec §3.4), batched across all classes and
restarts.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from mibench.api.attack import Attack, DataInfo, GenerativeAttack, Reconstructions
from mibench.api.context import RunContext
from mibench.api.oracle import Access, TargetOracle
from mibench.data.base import ImageSet
from mibench.gan.networks import DCGANGenerator, GANPrior, WGANCritic
from mibench.gan.wgan_gp import WGANGPParams, train_wgan_gp
from mibench.inversion.alignment import AlignmentParams, aligned_loss
from mibench.inversion.search import in_chunks, momentum_search, per_sample_normal
from mibench.models.base import freeze
from mibench.params import Params
from mibench.registry import ATTACKS


class GMIParams(Params):
    """Paper/official-code defaults (PLG-MI baselines and the Trap-MID protocol: 1500 iterations, 5 restarts)."""

    gan: WGANGPParams = Field(default_factory=WGANGPParams)
    iterations: int = Field(1500, ge=1)
    lr: float = Field(0.02, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    identity_weight: float = Field(100.0, ge=0, description="lambda in L_prior + lambda L_id")
    restarts: int = Field(5, ge=1)
    clip: float = Field(1.0, gt=0, description="z is clamped to [-clip, clip] after every step")
    reference_batch: int = Field(60, ge=1, description="losses are summed / this: the official batch of 60 classes")
    batch_size: int = Field(300, ge=1, description="latents optimised together (memory only; results do not change)")
    # "all": keep every restart (KED-MI/PLG-MI/Trap-MID baselines, 5 images per class).
    # "best_logit": keep the restart with the highest target logit for its class (original GMI repo, with its
    # score[i, i] indexing bug fixed to score[i, y_i]).
    selection: Literal["all", "best_logit"] = "all"
    alignment: AlignmentParams = Field(
        default_factory=AlignmentParams,
        description="AlignMI's gradient alignment of the identity loss (mode: paa or taa; Peng et al. NeurIPS 2025)",
    )
    added_later: ClassVar[dict[str, Any]] = {"alignment": AlignmentParams()}


def build_gmi_gan(info: DataInfo, p: WGANGPParams) -> GANPrior:
    """GMI's G64 and DGWGAN at the data's resolution."""
    return GANPrior(
        DCGANGenerator(p.z_dim, info.image_size, info.channels, p.width),
        WGANCritic(info.image_size, info.channels, p.width),
    )


class UsesGMIGAN(Attack):
    """The target-free GMI GAN (from `params.gan`) as an attack's prior.

    One per public set, shared by every attack that declares it with the same settings (GMI, LOMMA-GMI, BREP-MI).
    """

    prior_name: ClassVar[str] = "gmi-wgan-gp"

    def prior_params(self) -> WGANGPParams:
        """Only the GAN settings determine the prior."""
        return self.params.gan

    def build_prior(self, info: DataInfo, name: str | None = None) -> GANPrior:
        """G64 and DGWGAN (generalised to the data's resolution)."""
        return build_gmi_gan(info, self.params.gan)

    def train_prior(
        self, prior: nn.Module, public: ImageSet, oracle: TargetOracle | None, ctx: RunContext, name: str | None = None
    ) -> None:
        """WGAN-GP on the public images; the target is not used."""
        train_wgan_gp(prior.generator, prior.discriminator, public, self.params.gan, ctx)


@ATTACKS.register
class GMI(UsesGMIGAN, GenerativeAttack):
    """Generative model inversion with a WGAN-GP prior and momentum latent search."""

    name: ClassVar[str] = "gmi"
    paper: ClassVar[str] = "Zhang et al., The Secret Revealer: Generative Model-Inversion Attacks, CVPR 2020"
    official: ClassVar[str | None] = "LetheSec/PLG-MI-Attack @ 3cf8735"
    access: ClassVar[Access] = Access.WHITE_BOX
    published_pipeline: ClassVar[str | None] = "plgmi-baselines"
    Params = GMIParams

    def invert(self, prior: nn.Module, oracle: TargetOracle, classes: torch.Tensor, ctx: RunContext) -> Reconstructions:
        """Momentum search for every (class, restart) at once, in physical batches of `batch_size`."""
        p: GMIParams = self.params
        device = ctx.device
        gan = self.generative_prior(prior)
        generator = freeze(gan.generator).to(device)
        critic = freeze(gan.discriminator).to(device)
        identity = aligned_loss(self.identity_loss(oracle, prior, ctx), p.alignment, ctx.generator("alignment"))
        labels = classes.repeat(p.restarts)
        restarts = torch.arange(p.restarts).repeat_interleave(classes.numel())
        keys = [(int(c), int(r)) for c, r in zip(labels, restarts, strict=True)]
        z0 = per_sample_normal(ctx, keys, p.gan.z_dim)

        def objective(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            images = generator(z)
            prior_loss = -critic(images)
            return prior_loss + p.identity_weight * identity(images, y)

        latents = torch.empty_like(z0)
        with ctx.reporter.bar("GMI latent search", p.iterations * len(in_chunks(len(keys), p.batch_size))) as advance:
            for chunk in in_chunks(len(keys), p.batch_size):
                latents[chunk] = momentum_search(
                    z0[chunk].to(device),
                    labels[chunk].to(device),
                    objective,
                    iterations=p.iterations,
                    lr=p.lr,
                    momentum=p.momentum,
                    clip=p.clip,
                    reference_batch=p.reference_batch,
                    advance=advance,
                ).cpu()
        with torch.no_grad():
            images = torch.cat([generator(latents[c].to(device)).cpu() for c in in_chunks(len(keys), p.batch_size)])
        recon = Reconstructions(images, labels, restarts, latents, {"target_queries": float(oracle.queries)})
        return select_best_logit(recon, oracle, p.batch_size, device) if p.selection == "best_logit" else recon


def select_best_logit(
    recon: Reconstructions, oracle: TargetOracle, batch_size: int, device: torch.device
) -> Reconstructions:
    """Keep, per class, the reconstruction with the highest target logit for that class (original GMI repo)."""
    with torch.no_grad():
        scores = torch.cat(
            [oracle.logits(recon.images[c].to(device)).cpu() for c in in_chunks(len(recon.labels), batch_size)]
        )
    own = scores.gather(1, recon.labels.view(-1, 1)).squeeze(1)
    keep = torch.stack(
        [(recon.labels == c).nonzero().squeeze(1)[own[recon.labels == c].argmax()] for c in recon.labels.unique()]
    )
    latents = None if recon.latents is None else recon.latents[keep]
    stats = {**recon.stats, "target_queries": float(oracle.queries)}
    return Reconstructions(recon.images[keep], recon.labels[keep], torch.zeros_like(keep), latents, stats)
