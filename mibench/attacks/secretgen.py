"""SecretGen: "Privacy Recovery on Pre-trained Models via Distribution Discrimination" (Yuan et al., ECCV 2022).

An attacker who holds each private image with a region removed (the face's centre) recovers the region. Official
code as shipped in ffhibnese/Model-Inversion-Attack-ToolBox @ d9ad48f (`attack/SecretGen/stage1.py`, `stage2.py`,
`models.py`, `utils.py`, `losses.py`), read for this file; the networks are `mibench.gan.inpainting`.

Stage 1 (the prior, per target): an inpainting generator G(visible, mask, z) and two WGAN-GP critics, a global one
on whole images and a local one on a random half-side patch, are trained on public images with the centre mask
(hidden pixels shown as the public mean pixel value). Per batch: a local critic step, a global critic step (gradient
penalty 10 each), then a generator step on (-D_local - D_global) / 2 - 0.5 x diversity, where diversity is the mean
absolute difference of the target's body outputs of two fills of the same images (z1, z2) divided by the
mean |z1 - z2| (a mode-seeking term: white-box); the official target is never put in eval mode, so the body runs on
each batch's BatchNorm statistics, and its VGG16's first output is the raw conv output (no BN1d after it). Adam
lr 0.004, betas (0.5, 0.999), batch 64, 100 epochs. Only the hidden region of G's output is kept (composite with
the visible pixels).

Stage 2 (`labels: pseudo`, SecretGen's white-box attack `ini-wb`; `known`: the variant given the true label, `full`):
1. 200 rounds of z ~ N(0, I) clamped to [-1, 1] fill each victim; the target labels each fill, with its top-1
   probability as the confidence. Pseudo labels: the target's probabilities averaged over the fills and, for each,
   16 copies with one cell of a 4x4 grid set to the mean pixel; a victim's label is the most probable class among
   those some fill was labelled with.
2. The bank: the `bank` (5) most confident z whose fill got that label (padded with N(0, I) draws); the first
   `tries` (1) are searched.
3. GMI's momentum search (lr 0.01, momentum 0.9, z clamped to [-1, 1], 1500 iterations) on
   -D_local(random patch) - D_global + 100 NLL(target, label), each term a mean over the batch of 64 victims; the
   try with the lowest final NLL is kept; the reconstruction is the composite.

Reconstructions name their victims (`pcc`, `pixel-mse` score each against its own image) and carry the victim's true
class; the visible pixels are the private image's own, as in the official evaluation. Differences: the mean pixel
value is computed on the public images (official: a constant measured on CelebA); random draws come from the job's
generators, per victim where batching would otherwise change them; a non-finite target gradient (MIDAS) is zeroed.
The black-box variants (`ini-bb`, `full-bb`: a public model for the diversity term, no gradient search) and the
`face` mask are not built.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from mibench.api.attack import DataInfo, GenerativeAttack, Reconstructions
from mibench.api.context import RunContext
from mibench.api.oracle import Access, TargetOracle
from mibench.data.base import ImageSet, iterate_batches, to_float
from mibench.gan.inpainting import (
    InpaintingGenerator,
    center_mask,
    composite,
    grid_cutouts,
    masked_input,
    random_patch,
)
from mibench.gan.networks import WGANCritic
from mibench.gan.wgan_gp import critic_loss
from mibench.inversion.losses import cross_entropy_identity
from mibench.inversion.search import in_chunks, momentum_search
from mibench.models.base import freeze
from mibench.params import Params
from mibench.registry import ATTACKS


class InpaintingGANParams(Params):
    """Stage 1 (`stage1.py`): what determines the inpainting prior."""

    z_dim: int = Field(100, ge=1)
    width: int = Field(64, ge=4, description="64: SecretGen's InversionNet and GMI's critics")
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(64, ge=8, description="official: batches under 8 images are skipped")
    lr: float = Field(0.004, gt=0)
    betas: tuple[float, float] = (0.5, 0.999)
    gp_weight: float = Field(10.0, ge=0)
    diversity_weight: float = Field(0.5, ge=0)
    diversity_feature: Literal["body-train-mode", "features-eval-mode"] = Field(
        "body-train-mode",
        description="the target feature the diversity term compares: the body output in train mode (official) or "
        "the exposed feature in eval mode",
    )
    max_steps: int | None = Field(None, ge=1, description="cap on batches (budget override for smoke runs)")


class SecretGenParams(Params):
    """Stage 2 (`stage2.py`, `--target ini-wb`) defaults."""

    gan: InpaintingGANParams = Field(default_factory=InpaintingGANParams)
    labels: Literal["pseudo", "known"] = Field("pseudo", description="pseudo: ini-wb; known: full (true labels)")
    init_rounds: int = Field(200, ge=1)
    bank: int = Field(5, ge=1, description="most confident initial z kept per victim")
    tries: int = Field(1, ge=1, description="bank entries searched (official m = 1)")
    iterations: int = Field(1500, ge=0)
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    clip: float = Field(1.0, gt=0)
    identity_weight: float = Field(100.0, ge=0)
    victims_per_class: int | None = Field(None, ge=1, description="the first N private training images per class")
    reference_batch: int = Field(64, ge=1, description="losses are batch means over the official 64 victims")
    batch_size: int = Field(64, ge=1, description="victims searched together (memory only)")


class InpaintingPrior(nn.Module):
    """The inpainting generator, its global and local critics, and the public mean pixel (the hidden fill)."""

    def __init__(self, info: DataInfo, p: InpaintingGANParams):
        super().__init__()
        self.generator = InpaintingGenerator(info.image_size, info.channels, p.z_dim, p.width)
        self.global_critic = WGANCritic(info.image_size, info.channels, p.width)
        self.local_critic = WGANCritic(info.image_size // 2, info.channels, p.width)
        self.register_buffer("fill", torch.zeros(info.channels))
        self.register_buffer("mask", center_mask(info.image_size))

    def fill_in(self, visible: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Composite of the visible pixels and the generator's hidden region."""
        generated = self.generator(masked_input(visible, self.mask, self.fill), self.mask, z)
        return composite(visible, generated, self.mask)


def _critic_step(critic, optimiser, real, fake, p: InpaintingGANParams, mix) -> None:
    loss = critic_loss(critic, real, fake, p.gp_weight, mix)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()


def diversity_features(oracle: TargetOracle, images: torch.Tensor, p: InpaintingGANParams) -> torch.Tensor:
    """The target feature stage 1's diversity term compares (`diversity_feature`).

    `body-train-mode` (official: `stage1.py` never puts the target in eval mode, and `noise_loss` reads the first
    output of SecretGen's VGG16, the raw flattened conv output with no BN1d after it); `features-eval-mode`: the
    exposed feature of the eval-mode target (mibench version 1).
    """
    if p.diversity_feature == "body-train-mode":
        return oracle.train_mode_body_features(images)
    return oracle(images).features


def train_inpainting_gan(
    prior: InpaintingPrior, public: ImageSet, oracle: TargetOracle, p: InpaintingGANParams, ctx: RunContext
) -> None:
    """Stage 1 (see module docstring), in place."""
    device = ctx.device
    prior.to(device).train()
    images = public.images
    with torch.no_grad():
        prior.fill.copy_(to_float(images).mean(dim=(0, 2, 3)).to(device))
    adam = lambda m: torch.optim.Adam(m.parameters(), lr=p.lr, betas=p.betas)  # noqa: E731
    opt_g, opt_global, opt_local = adam(prior.generator), adam(prior.global_critic), adam(prior.local_critic)
    shuffle, noise, mix, patches = (ctx.generator(k) for k in ("shuffle", "z", "gp", "patch"))
    side = images.shape[-1] // 2
    per_epoch = max(1, len(images) // p.batch_size)
    total = per_epoch * p.epochs if p.max_steps is None else min(per_epoch * p.epochs, p.max_steps)

    def z(n: int) -> torch.Tensor:
        return torch.randn(n, p.z_dim, generator=noise).to(device)

    def patch_pair(real: torch.Tensor, fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        both = random_patch(torch.cat([real, fake]), side, patches)
        return both[: len(real)], both[len(real) :]

    step = 0
    with ctx.reporter.bar("SecretGen inpainting GAN", total) as advance:
        while step < total:
            for idx in iterate_batches(len(images), p.batch_size, generator=shuffle, drop_last=True):
                real = to_float(images[idx], device)
                with torch.no_grad():
                    fake = prior.fill_in(real, z(len(real)))
                _critic_step(prior.local_critic, opt_local, *patch_pair(real, fake), p, mix)
                with torch.no_grad():
                    fake = prior.fill_in(real, z(len(real)))
                _critic_step(prior.global_critic, opt_global, real, fake, p, mix)
                for critic in (prior.local_critic, prior.global_critic):
                    critic.requires_grad_(False)
                z1, z2 = z(len(real)), z(len(real))
                out1, out2 = prior.fill_in(real, z1), prior.fill_in(real, z2)
                _, crop1 = patch_pair(real, out1)
                gan_loss = (-prior.local_critic(crop1).mean() - prior.global_critic(out1).mean()) / 2
                loss = gan_loss
                if p.diversity_weight > 0:
                    difference = (diversity_features(oracle, out1, p) - diversity_features(oracle, out2, p)).abs()
                    loss = loss - p.diversity_weight * difference.mean() / (z1 - z2).abs().mean()
                opt_g.zero_grad(set_to_none=True)
                loss.backward()
                opt_g.step()
                for critic in (prior.local_critic, prior.global_critic):
                    critic.requires_grad_(True)
                step += 1
                advance(1)
                if step >= total:
                    break
    prior.eval()


@ATTACKS.register
class SecretGen(GenerativeAttack):
    """Inpainting of partially known private images with pseudo-labels and a discriminator-guided search."""

    name: ClassVar[str] = "secretgen"
    paper: ClassVar[str] = (
        "Yuan et al., SecretGen: Privacy Recovery on Pre-trained Models via Distribution Discrimination, ECCV 2022"
    )
    official: ClassVar[str | None] = "ffhibnese/Model-Inversion-Attack-ToolBox @ d9ad48f"
    access: ClassVar[Access] = Access.WHITE_BOX
    # 2: stage 1's diversity term reads the train-mode body output (version 1: the eval-mode exposed feature)
    version: ClassVar[int] = 2
    observes_victims: ClassVar[bool] = True
    prior_name: ClassVar[str] = "secretgen-inpainting"
    prior_uses_target: ClassVar[bool] = True  # the diversity term reads the target's features
    Params = SecretGenParams

    def prior_params(self) -> InpaintingGANParams:
        """Only stage 1's settings determine the prior."""
        return self.params.gan

    def build_prior(self, info: DataInfo, name: str | None = None) -> InpaintingPrior:
        """The inpainting generator, its critics and the fill (set in training)."""
        return InpaintingPrior(info, self.params.gan)

    def train_prior(
        self, prior: nn.Module, public: ImageSet, oracle: TargetOracle | None, ctx: RunContext, name: str | None = None
    ) -> None:
        """Stage 1 on the public images, with the target's features for the diversity term."""
        train_inpainting_gan(prior, public, oracle, self.params.gan, ctx)

    def initial_bank(
        self, prior: InpaintingPrior, oracle: TargetOracle, visible: torch.Tensor, victims: torch.Tensor, known, ctx
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(bank of z per victim (n x bank x z_dim), the label each victim is attacked as)."""
        p: SecretGenParams = self.params
        device = ctx.device
        n, dim = len(victims), p.gan.z_dim
        draws = torch.stack(
            [torch.randn(p.init_rounds + p.bank, dim, generator=ctx.generator("init", int(v))) for v in victims]
        )
        rounds, spare = draws[:, : p.init_rounds].clamp(-1, 1), draws[:, p.init_rounds :]
        labels = torch.empty(n, p.init_rounds, dtype=torch.long)
        confidence = torch.empty(n, p.init_rounds)
        averaged = torch.zeros(n, oracle.num_classes)
        with torch.no_grad():
            for r in range(p.init_rounds):
                filled = prior.fill_in(visible, rounds[:, r].to(device))
                probs = oracle.probabilities(filled).cpu()
                confidence[:, r], labels[:, r] = probs.max(dim=1)
                if known is None:
                    averaged += probs + sum(oracle.probabilities(c).cpu() for c in grid_cutouts(filled, prior.fill))
        if known is None:
            seen = torch.zeros(n, oracle.num_classes, dtype=torch.bool).scatter_(1, labels, True)
            target_labels = averaged.masked_fill(~seen, -1.0).argmax(dim=1)
        else:
            target_labels = known
        bank = spare.clone()
        for i in range(n):
            hits = (labels[i] == target_labels[i]).nonzero().squeeze(1)
            best = hits[confidence[i, hits].argsort(descending=True)[: p.bank]]
            bank[i, : len(best)] = rounds[i, best]
        return bank, target_labels

    def invert(self, prior: nn.Module, oracle: TargetOracle, classes: torch.Tensor, ctx: RunContext) -> Reconstructions:
        """Bank, search and composite for every victim of the attacked classes (see module docstring)."""
        p: SecretGenParams = self.params
        device = ctx.device
        prior = freeze(prior).to(device)
        victims = oracle.victim_indices(classes, "train", p.victims_per_class)
        true_labels = oracle.victim_labels(victims)
        images, latents, attacked = [], [], []
        chunks = in_chunks(len(victims), p.batch_size)
        with ctx.reporter.bar("SecretGen search", p.tries * p.iterations * len(chunks)) as advance:
            for c in chunks:
                visible = oracle.victim_partial_images(victims[c], prior.mask.cpu()).to(device)
                known = true_labels[c] if p.labels == "known" else None
                bank, labels = self.initial_bank(prior, oracle, visible, victims[c], known, ctx)
                best_z, best_nll = bank[:, 0].clone(), torch.full((len(bank),), float("inf"))
                for t in range(min(p.tries, p.bank)):
                    z = self.search(prior, oracle, visible, bank[:, t], labels, ctx, t, advance)
                    with torch.no_grad():
                        nll = cross_entropy_identity(
                            oracle.logits(prior.fill_in(visible, z.to(device))), labels.to(device)
                        )
                    better = nll.cpu() < best_nll
                    best_z[better], best_nll[better] = z.cpu()[better], nll.cpu()[better]
                with torch.no_grad():
                    images.append(prior.fill_in(visible, best_z.to(device)).cpu())
                latents.append(best_z)
                attacked.append(labels)
        attacked_as = torch.cat(attacked)
        stats = {
            "target_queries": float(oracle.queries),
            "victims": float(len(victims)),
            "label_agreement": float((attacked_as == true_labels).float().mean()),
        }
        restarts = torch.zeros(len(victims), dtype=torch.long)
        return Reconstructions(torch.cat(images), true_labels, restarts, torch.cat(latents), stats, victims=victims)

    def search(self, prior, oracle, visible, z0, labels, ctx, attempt: int, advance) -> torch.Tensor:
        """GMI's momentum search on the discriminators' and the target's losses (one try of a batch)."""
        p: SecretGenParams = self.params
        side = visible.shape[-1] // 2
        patches = ctx.generator("patch", attempt)  # the same patch sequence for every batch of victims

        def objective(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            filled = prior.fill_in(visible, z)
            realism = -prior.local_critic(random_patch(filled, side, patches)) - prior.global_critic(filled)
            return realism + p.identity_weight * cross_entropy_identity(oracle.logits(filled), y)

        return momentum_search(
            z0.to(ctx.device), labels.to(ctx.device), objective, iterations=p.iterations, lr=p.lr,
            momentum=p.momentum, clip=p.clip, reference_batch=p.reference_batch, advance=advance,
        )  # fmt: skip
