"""PPA: Plug & Play Attacks (Struppek et al., ICML 2022; spec §9), W-space search on a style-based generator.

1. Candidates: a pool of z ~ N(0, I) mapped with truncation (psi 0.5, cutoff 8), rendered (centre crop, resize to the
   target's resolution); each class takes the `candidates` pool members the target is most confident about (mean of
   the softmax of the image and of its mirror image). Classes share the pool.
2. Optimisation: Adam (lr 0.005, betas (0.1, 0.1)) on each candidate's w (one w broadcast to every layer,
   `single_w`), minimising the Poincaré loss of the target's logits on a random resized crop (scale 0.9-1) of the
   render, for `iterations` steps; all (class, candidate) pairs in batches (Adam is elementwise, so batching does not
   change the result).
3. Final selection by transformation robustness: each class keeps the `select` candidates with the highest mean
   target confidence over `selection_transforms` random crops (scale 0.5-0.9) and flips.

The generator is pluggable (`gan.generator`):

* `stylegan2`: NVIDIA's pre-trained StyleGAN2-ADA (e.g. FFHQ 1024, `gan.checkpoint` naming `ffhq.pkl` or a converted
  file; `mibench.gan.stylegan2`), as in the paper. Nothing is trained; the file enters the cache key by its SHA-256.
* `tiny-style` (tests, smoke runs): a small style-based GAN trained with the shared WGAN-GP loop on the public data.

mibench's classifiers take [0, 1] images, so renders are mapped from [-1, 1] (the official code feeds [-1, 1] to
targets normalised with mean = std = 0.5: the same function). As the official CelebA_FFHQ configuration
(LukasStruppek/Plug-and-Play-Attacks @ 3087a4f): only the candidate search clamps its renders (`find_initial_w`'s
default `clip=True`); the 70-step search (`clip: false`) and the robustness selection see unclamped renders, so
out-of-range pixels keep their gradients; the stored reconstructions are clamped to [0, 1]. The evaluation model gets
a fresh render of each kept latent (`evaluation_images`): synthesis at the generator's resolution, the centre crop,
one antialiased resize to the evaluator's input (1024 -> 800 -> 299 for Table 19), unclamped, as the official
`create_image(..., resize=299)`; not the target-sized render upsampled.

Crops, flips and resizing use mibench's shared differentiable affine augmentation (bilinear sampling of the crop
window) in place of torchvision's RandomResizedCrop with antialiasing.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from mibench.api.attack import GenerativeAttack, Reconstructions
from mibench.api.context import RunContext
from mibench.api.oracle import Access, TargetOracle
from mibench.gan.style_prior import (
    StyleGANParams,
    StyleGANPrior,
    initial_candidates,
    render,
    render_latents,
    repeat_w,
)
from mibench.inversion.losses import poincare_identity
from mibench.inversion.search import in_chunks
from mibench.params import Params
from mibench.registry import ATTACKS
from mibench.training.augmentation import AffineAugmentParams, random_affine_augment


class PPAParams(Params):
    """PPA's CelebA configuration (spec §9): 5000-pool, 200 candidates, 70 Adam steps, 50 kept per class."""

    gan: StyleGANParams = Field(default_factory=StyleGANParams)
    pool: int = Field(5000, ge=1, description="z drawn once for the candidate search")
    candidates: int = Field(200, ge=1, description="optimised latents per class")
    select: int = Field(50, ge=1, description="reconstructions kept per class by transformation robustness")
    iterations: int = Field(70, ge=1)
    lr: float = Field(0.005, gt=0, description="sized for StyleGAN2's W; tiny generators need about 0.05")
    betas: tuple[float, float] = (0.1, 0.1)
    truncation_psi: float = Field(0.5, gt=0, le=1)
    truncation_cutoff: int | None = Field(8, ge=1)
    single_w: bool = True
    center_crop: float = Field(800 / 1024, gt=0, le=1, description="crop side / image side (800 of 1024 for faces)")
    attack_crop_scale: tuple[float, float] = (0.9, 1.0)
    selection_crop_scale: tuple[float, float] = (0.5, 0.9)
    selection_crop_ratio: tuple[float, float] = (0.8, 1.2)
    selection_transforms: int = Field(100, ge=1)
    batch_size: int = Field(25, ge=1, description="latents rendered or optimised together (memory only)")


@ATTACKS.register
class PPA(StyleGANPrior, GenerativeAttack):
    """Plug & Play Attack: candidate search, Poincaré W-space optimisation, robustness selection."""

    name: ClassVar[str] = "ppa"
    paper: ClassVar[str] = (
        "Struppek et al., Plug & Play Attacks: Towards Robust and Flexible Model Inversion, ICML 2022"
    )
    official: ClassVar[str | None] = "LukasStruppek/Plug-and-Play-Attacks @ 3087a4f"
    access: ClassVar[Access] = Access.WHITE_BOX
    version: ClassVar[int] = 2  # 2: unclamped search and selection renders, evaluator re-render
    published_pipeline: ClassVar[str | None] = "ppa"
    Params = PPAParams

    def evaluation_images(
        self, prior: nn.Module | None, reconstructions: Reconstructions, size: int | tuple[int, int], ctx: RunContext
    ) -> torch.Tensor:
        """Fresh unclamped renders of the kept latents at the evaluator's input size (the official evaluation)."""
        generator = self.style_generator(prior, ctx)
        p = self.params
        return render_latents(
            generator, reconstructions.latents, lambda w: self._ws(generator, w), size, p.center_crop, p.batch_size,
            ctx.device, clip=False,
        )  # fmt: skip

    def _ws(self, generator: nn.Module, w: torch.Tensor) -> torch.Tensor:
        return repeat_w(generator, w) if self.params.single_w else w

    def candidates(
        self, generator: nn.Module, oracle: TargetOracle, classes: torch.Tensor, size: int, ctx: RunContext
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(w of each class's candidates, their classes): the pool members the target is most confident about."""
        p: PPAParams = self.params
        chosen, labels = initial_candidates(
            generator, oracle, classes, size, pool=p.pool, count=p.candidates, psi=p.truncation_psi,
            cutoff=p.truncation_cutoff, crop=p.center_crop, batch_size=p.batch_size, rng=ctx.generator("pool"),
            device=ctx.device,
        )  # fmt: skip
        return (chosen[:, 0] if p.single_w else chosen), labels

    def robustness(self, generator: nn.Module, oracle: TargetOracle, w: torch.Tensor, y: torch.Tensor, size: int, ctx):
        """Mean target confidence in y over random crops (scale 0.5-0.9) and flips of each render."""
        p: PPAParams = self.params
        aug = AffineAugmentParams(
            crop_scale=p.selection_crop_scale, crop_ratio=p.selection_crop_ratio, crop_p=1.0, flip_p=0.5, rotation_p=0.0
        )
        gen = ctx.generator("selection")
        scores = []
        with torch.no_grad():
            for c in in_chunks(len(w), p.batch_size):
                x = render(generator, self._ws(generator, w[c].to(ctx.device)), size, p.center_crop, clip=False)
                labels = y[c].to(ctx.device)
                total = torch.zeros(len(labels), device=ctx.device)
                for _ in range(p.selection_transforms):
                    probs = oracle.probabilities(random_affine_augment(x, aug, gen))
                    total += probs.gather(1, labels.view(-1, 1)).squeeze(1)
                scores.append((total / p.selection_transforms).cpu())
        return torch.cat(scores)

    def invert(self, prior: nn.Module, oracle: TargetOracle, classes: torch.Tensor, ctx: RunContext) -> Reconstructions:
        """Candidates, optimisation, selection (see module docstring)."""
        p: PPAParams = self.params
        generator = self.style_generator(prior, ctx)
        size = oracle.image_shape[-1]
        w0, labels = self.candidates(generator, oracle, classes, size, ctx)
        aug = AffineAugmentParams(crop_scale=p.attack_crop_scale, crop_p=1.0, flip_p=0.0, rotation_p=0.0)
        gen = ctx.generator("augment")
        latents = torch.empty_like(w0)
        chunks = in_chunks(len(w0), p.batch_size)
        with ctx.reporter.bar("PPA W-space search", p.iterations * len(chunks)) as advance:
            for c in chunks:
                w = w0[c].clone().requires_grad_(True)
                y = labels[c].to(ctx.device)
                opt = torch.optim.Adam([w], lr=p.lr, betas=p.betas)
                for _ in range(p.iterations):
                    x = render(generator, self._ws(generator, w), size, p.center_crop, clip=False)  # clip: false
                    loss = poincare_identity(oracle.logits(random_affine_augment(x, aug, gen)), y).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    advance(1)
                latents[c] = w.detach()
        score = self.robustness(generator, oracle, latents, labels, size, ctx)
        keep, ranks = [], []
        for cls in classes.tolist():
            idx = (labels == cls).nonzero().squeeze(1)
            best = idx[score[idx].argsort(descending=True)[: p.select]]
            keep.append(best)
            ranks.append(torch.arange(len(best)))
        keep_idx, rank = torch.cat(keep), torch.cat(ranks)
        with torch.no_grad():
            images = torch.cat(
                [
                    render(generator, self._ws(generator, latents[keep_idx[c]].to(ctx.device)), size, p.center_crop)
                    for c in in_chunks(len(keep_idx), p.batch_size)
                ]
            ).cpu()
        stats = {"target_queries": float(oracle.queries), "mean_robustness": float(score[keep_idx].mean())}
        return Reconstructions(images, labels[keep_idx], rank, latents[keep_idx].cpu(), stats)
