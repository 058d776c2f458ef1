"""IF-GMI (Qiu et al., ECCV 2024): intermediate-feature search through the blocks of a StyleGAN.

"A Closer Look at GAN Priors: Exploiting Intermediate Features for Enhanced Model Inversion Attacks".

PPA's pipeline with a search that walks down the StyleGAN synthesis network one block at a time. Official code:
final-solution/IF-GMI @ e792ef1 (`intermediate_attack.py`, `attacks/optimize.py`, `utils/stylegan.py`,
`configs/ffhq_celeba/*.yaml`), read for this file.

1. Candidates: PPA's search (`initial_candidates`): a 5,000 pool mapped with truncation 0.5 (cutoff 8), each class
   takes its 50 most confident pool members (render and mirror averaged); one w per candidate (`single_w`).
2. Stage 0 optimises w through the whole generator; stage k >= 1 starts the synthesis at block `start + k`, fed the
   features f that block `start + k - 1` produced at the end of stage k - 1, and optimises f and w together. Each
   stage runs `steps[k]` Adam steps (lr 0.005, betas (0.1, 0.1), a fresh optimiser per stage) on the Poincaré loss of
   the target's logits on a random resized crop (scale 0.9-1, ratio 1) of the centre-cropped, resized, unclamped
   render. After every step, the change of w and of f since the stage began is projected onto an L1 ball
   (`radius_w[k]`, `radius_features[k]`; stage 0 bounds w only).
3. Official steps [70, 25, 25, 25, 25]: blocks 0 to 4 of a 1024 StyleGAN2 (4x4 ... 64x64), i.e. the inputs of the
   8x8 to 64x64 blocks are searched.

As the official code, a stage that starts at block k > 0 starts a new running RGB image there: the skip branches of
blocks before k are not added (`synthesis_from`). There is no final selection: every candidate is a reconstruction.

Differences: the official script evaluates every stage's images and reports the stage with the highest
*evaluation-model* accuracy; an attacker has no evaluation model, so mibench returns the stage `output_stage`
(default: the last) and records every stage's mean target confidence (one scoring query per candidate and stage,
counted in `target_queries`). The official images are the renders of a stage's last forward pass (before its last
update); mibench renders the final w and features. The stored reconstructions are target-sized renders (the
evaluation model sees them resized; official: 1024 renders cropped and resized to 299), since the searched features
are too large to keep for a later re-render.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field, model_validator
from torch import nn

from mibench.api.attack import GenerativeAttack, Reconstructions
from mibench.api.context import RunContext
from mibench.api.oracle import Access, TargetOracle
from mibench.data.base import resize_images
from mibench.gan.style_prior import StyleGANParams, StyleGANPrior, initial_candidates, repeat_w, to_target
from mibench.inversion.constraints import project_l1_ball
from mibench.inversion.losses import poincare_identity
from mibench.inversion.search import in_chunks, zero_nonfinite_grads
from mibench.params import Params
from mibench.registry import ATTACKS
from mibench.training.augmentation import AffineAugmentParams, random_affine_augment


class IFGMIParams(Params):
    """The official FFHQ -> CelebA configuration (`configs/ffhq_celeba/main-*.yaml`)."""

    gan: StyleGANParams = Field(default_factory=StyleGANParams)
    pool: int = Field(5000, ge=1, description="z drawn once for the candidate search")
    candidates: int = Field(50, ge=1, description="optimised latents per class, all kept")
    steps: list[int] = Field(default_factory=lambda: [70, 25, 25, 25, 25], min_length=1)
    start_block: int = Field(0, ge=0, description="the block the first stage starts at (official: 0)")
    radius_w: list[float] = Field(default_factory=lambda: [1000, 2000, 3000, 4000, 5000, 6000, 8000, 8000])
    radius_features: list[float] = Field(default_factory=lambda: [1000, 2000, 3000, 4000, 5000, 6000, 8000, 8000])
    lr: float = Field(0.005, gt=0)
    betas: tuple[float, float] = (0.1, 0.1)
    truncation_psi: float = Field(0.5, gt=0, le=1)
    truncation_cutoff: int | None = Field(8, ge=1)
    center_crop: float = Field(800 / 1024, gt=0, le=1)
    attack_crop_scale: tuple[float, float] = (0.9, 1.0)
    output_stage: int | None = Field(None, ge=0, description="the stage whose images are returned (None: the last)")
    batch_size: int = Field(
        12, ge=1, description="candidates optimised together (official: 4 per GPU x the 3 GPUs the script pins)"
    )

    @model_validator(mode="after")
    def _one_radius_per_stage(self) -> IFGMIParams:
        stages = len(self.steps)
        if len(self.radius_w) < stages or len(self.radius_features) < stages:
            raise ValueError(f"radius_w and radius_features need a value per stage ({stages} steps)")
        if self.output_stage is not None and self.output_stage >= stages:
            raise ValueError(f"output_stage {self.output_stage} is past the last of {stages} stages")
        return self


def _render(generator: nn.Module, w: torch.Tensor, block: int, features, size: int, crop: float) -> torch.Tensor:
    """[0, 1] (unclamped) render from `block` on: centre crop, antialiased resize to the target's size."""
    return to_target(generator.synthesis_from(repeat_w(generator, w), block, features), size, crop, clip=False)


@ATTACKS.register
class IFGMI(StyleGANPrior, GenerativeAttack):
    """Intermediate-feature search through the blocks of a style generator (see module docstring)."""

    name: ClassVar[str] = "if-gmi"
    paper: ClassVar[str] = (
        "Qiu et al., A Closer Look at GAN Priors: Exploiting Intermediate Features for Enhanced Model Inversion "
        "Attacks, ECCV 2024"
    )
    official: ClassVar[str | None] = "final-solution/IF-GMI @ e792ef1"
    access: ClassVar[Access] = Access.WHITE_BOX
    # 2: unclamped evaluation renders, one crop per batch, the official effective batch of 12
    version: ClassVar[int] = 2
    published_pipeline: ClassVar[str | None] = "ppa"  # IF-GMI's evaluation is PPA's
    Params = IFGMIParams

    def stage(
        self, generator: nn.Module, oracle: TargetOracle, w: torch.Tensor, features, y: torch.Tensor, k: int, ctx
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stage k: Adam on w (and the features fed to block start + k), L1-bounded; returns the updated pair."""
        p: IFGMIParams = self.params
        block = p.start_block + k
        size = oracle.image_shape[-1]
        aug = AffineAugmentParams(
            crop_scale=p.attack_crop_scale, crop_ratio=(1.0, 1.0), crop_p=1.0, flip_p=0.0, rotation_p=0.0
        )
        w0, f0 = w.detach(), None if features is None else features.detach()
        w = w0.clone().requires_grad_(True)
        variables = [w]
        if f0 is not None:
            features = f0.clone().requires_grad_(True)
            variables.append(features)
        opt = torch.optim.Adam(variables, lr=p.lr, betas=p.betas)
        gen = ctx.generator("augment", k)
        for _ in range(p.steps[k]):
            x = _render(generator, w, block, features, size, p.center_crop)
            # one crop for the whole batch: the official torchvision transform is applied to the batch tensor
            loss = poincare_identity(oracle.logits(random_affine_augment(x, aug, gen, shared=True)), y).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            zero_nonfinite_grads(variables)
            opt.step()
            with torch.no_grad():
                if f0 is not None and p.radius_features[k] > 0:
                    features.copy_(f0 + project_l1_ball(features - f0, p.radius_features[k]))
                if p.radius_w[k] > 0:
                    w.copy_(w0 + project_l1_ball(w - w0, p.radius_w[k]))
        return w.detach(), None if features is None else features.detach()

    def invert(self, prior: nn.Module, oracle: TargetOracle, classes: torch.Tensor, ctx: RunContext) -> Reconstructions:
        """Candidates, then the stages over each batch of candidates (see module docstring)."""
        p: IFGMIParams = self.params
        generator = self.style_generator(prior, ctx)
        if p.start_block + len(p.steps) > generator.num_blocks:
            raise ValueError(
                f"IF-GMI: start_block {p.start_block} + {len(p.steps)} stages exceed the generator's "
                f"{generator.num_blocks} synthesis blocks"
            )
        size = oracle.image_shape[-1]
        ws, labels = initial_candidates(
            generator, oracle, classes, size, pool=p.pool, count=p.candidates, psi=p.truncation_psi,
            cutoff=p.truncation_cutoff, crop=p.center_crop, batch_size=p.batch_size, rng=ctx.generator("pool"),
            device=ctx.device,
        )  # fmt: skip
        w_all = ws[:, 0]
        out = len(p.steps) - 1 if p.output_stage is None else p.output_stage
        images, unclamped, latents = [], [], []
        confidence = torch.zeros(len(p.steps))
        chunks = in_chunks(len(w_all), p.batch_size)
        with ctx.reporter.bar("IF-GMI intermediate search", sum(p.steps) * len(chunks)) as advance:
            for c in chunks:
                w, features, y = w_all[c], None, labels[c].to(ctx.device)
                with torch.no_grad():  # a later first block starts from the features the fixed earlier blocks give
                    for block in range(p.start_block):
                        features = generator.block_features(repeat_w(generator, w), block, features)
                for k in range(len(p.steps)):
                    block = p.start_block + k
                    w, features = self.stage(generator, oracle, w, features, y, k, ctx)
                    advance(p.steps[k])
                    with torch.no_grad():
                        raw = _render(generator, w, block, features, size, p.center_crop)
                        x = raw.clamp(0, 1)
                        confidence[k] += oracle.probabilities(x).gather(1, y.view(-1, 1)).sum().cpu()
                        if k == out:
                            images.append(x.cpu())
                            unclamped.append(raw.cpu())
                            latents.append(w.cpu())
                        features = generator.block_features(repeat_w(generator, w), block, features)
        rank = torch.arange(len(labels) // len(classes)).repeat(len(classes))
        stats = {"target_queries": float(oracle.queries)}
        stats |= {f"stage{k}_mean_confidence": float(confidence[k] / len(labels)) for k in range(len(p.steps))}
        return Reconstructions(
            torch.cat(images), labels, rank, torch.cat(latents), stats, unclamped=torch.cat(unclamped)
        )

    def evaluation_images(
        self, prior, reconstructions: Reconstructions, size: int | tuple[int, int], ctx: RunContext
    ) -> torch.Tensor | None:
        """The unclamped renders, resized to the evaluator's input.

        The official evaluation crops and resizes the raw render (`metrics/classification_acc.py` on `origin_imgs`).
        The searched features are too large to keep for a fresh render at the evaluator's size, so the target-sized
        render is resized.
        """
        if reconstructions.unclamped is None:
            return None
        return resize_images(reconstructions.unclamped, size, antialias=True)
