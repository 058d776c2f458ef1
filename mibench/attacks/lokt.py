"""LOKT: "Label-Only Model Inversion Attacks via Knowledge Transfer" (Nguyen et al., NeurIPS 2023).

A label-only attack in three steps, all before any inversion. Defaults follow the authors' repository
(ngoc-nguyen-0/LOKT_neurips2023 @ b751417: `train_tacgan.py`, `create_dataset.py`, `train_surrogate_model.py`,
`plg_tacgan.py`, `models/classifiers/classifier.py`); `preset: toolbox` gives the MI toolbox's FaceScrub scripts
(`gan_training/lokt.py`, `dataset_preprocess/lokt_generation.py`, `classifier_training/lokt_*.py`, `attacks/lokt.py`),
which version 1 followed:

1. A target-aware AC-GAN (T-ACGAN) on the public images: PLG-MI's conditional generator G(z, y) and a spectral-norm
   discriminator with a real/fake head and a class head. Binary cross-entropy for real/fake; after `class_start`
   discriminator steps the class head also learns the target's top-1 labels of the fakes (the only target output
   LOKT uses), and the generator learns to make the class head answer y for G(z, y), both weighted 1.5.
2. Surrogates trained on generated data: `per_class` images G(z, c) for every class c, labelled by the target's
   top-1 label, teach each surrogate network by cross-entropy (SGD, cosine schedule); the authors' surrogates are
   ImageNet DenseNet-121/161/169 bodies whose linear head reads the flattened norm5 map (no ReLU, no pooling).
3. PLG-MI's white-box search on the surrogates instead of the target: Adam on z of G(z, y), the max-margin loss of
   each surrogate on two independently augmented views, summed over surrogates.

The GAN and the surrogates depend on the target, so they form one prior cached per target. The target is queried
only in the prior (labels of fakes while training the GAN, then labels of the generated set); inversion queries it
not at all. Both counts go into the reconstructions' stats.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from mibench.api.attack import DataInfo, GenerativeAttack, Reconstructions
from mibench.api.context import RunContext
from mibench.api.oracle import Access, TargetOracle
from mibench.data.base import ImageSet, endless_batches, iterate_batches, to_device, to_float
from mibench.gan.conditional import (
    ConditionalResNetGenerator,
    SNAuxiliaryClassifierDiscriminator,
    sample_conditional,
)
from mibench.inversion.losses import max_margin_identity
from mibench.inversion.search import adam_conditional_search, in_chunks, per_sample_normal
from mibench.models.base import NetworkSpec, freeze
from mibench.params import Params
from mibench.registry import ATTACKS
from mibench.training.augmentation import PLGAugmentParams, plg_augment


class TACGANParams(Params):
    """The authors' T-ACGAN training (`train_tacgan.py`: batch 128, 20,000 generator, 100,000 discriminator steps)."""

    ch: int = Field(64, ge=1)
    z_dim: int = Field(128, ge=1)
    iterations: int = Field(100_000, ge=1, description="discriminator steps (authors: 20,000 iterations of n_dis)")
    n_dis: int = Field(5, ge=1)
    batch_size: int = Field(128, ge=2)
    lr: float = Field(2e-4, gt=0)
    beta1: float = 0.0
    beta2: float = 0.9
    class_weight: float = Field(1.5, ge=0, description="weight of both class losses (README --alpha=1.5)")
    class_start: int = Field(5000, ge=0, description="the class losses join after this many discriminator steps")
    generator_first: bool = Field(
        True,
        description="true: each iteration is a generator step, then n_dis discriminator steps (the authors'); "
        "false: a discriminator step, and a generator step after every n_dis-th (the toolbox's)",
    )


class SurrogateTrainParams(Params):
    """The authors' surrogate recipe (`train_surrogate_model.py`).

    SGD 0.1, weight decay 5e-4, batch 256, 200 epochs of int(30,000 / 256) batches, a clean and an augmented view of
    each image.
    """

    per_class: int = Field(500, ge=1, description="generated images per class, labelled by the target")
    epochs: int = Field(200, ge=1)
    epoch_images: int | None = Field(
        30_000,
        ge=1,
        description="images per epoch, int(epoch_images / batch_size) batches from an endless shuffled sampler (the "
        "authors' 30,000); null: one pass over the generated set",
    )
    batch_size: int = Field(256, ge=1)
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    two_views: bool = Field(
        True, description="loss 0.5 CE(clean) + 0.5 CE(augmented) (the authors'); false: one view, augmented by chance"
    )
    augment_p: float = Field(1.0, ge=0, le=1, description="one view only: probability that an image is augmented")
    augment: PLGAugmentParams = Field(
        default_factory=lambda: PLGAugmentParams(jitter_p=0.5, rotation_p=0.5),
        description="kornia's pipeline as the authors build it: crop 0.8-1 always, colour jitter, flip and rotation "
        "up to 5 degrees each with p 0.5, drawn per image",
    )
    label_batch: int = Field(200, ge=1, description="images generated and labelled together (memory only)")


def _surrogates(pool: bool) -> list[NetworkSpec]:
    # Unnormalised [0, 1] inputs, as both codes feed the generator's output; ImageNet weights are named in a suite.
    plain = {"input_mean": 0.0, "input_std": 1.0, "pool": pool}
    return [NetworkSpec(architecture=f"densenet{depth}", params=plain) for depth in (121, 161, 169)]


# The MI toolbox's LOKT scripts (FaceScrub examples: `gan_training/lokt.py`, `classifier_training/lokt_*.py`), kept
# as a named preset: `preset: toolbox` fills whatever a suite does not set from these.
TOOLBOX_PRESET: dict[str, Any] = {
    "gan": {"iterations": 105_000, "batch_size": 256, "generator_first": False},
    "surrogate_training": {
        "epochs": 10, "epoch_images": None, "batch_size": 128, "lr": 0.01, "weight_decay": 0.0, "two_views": False,
        "augment_p": 0.5, "augment": {"jitter_p": 0.5, "rotation_p": 1.0},
    },
    "surrogates": [spec.model_dump() for spec in _surrogates(pool=True)],
}  # fmt: skip


class LOKTPriorParams(Params):
    """What determines the prior (with the public data and the target)."""

    gan: TACGANParams
    surrogates: list[NetworkSpec]
    surrogate_training: SurrogateTrainParams


class LOKTParams(Params):
    """The authors' LOKT (ngoc-nguyen-0/LOKT_neurips2023): T-ACGAN, surrogates, PLG-MI's search on them."""

    preset: Literal["authors", "toolbox"] = Field(
        "authors", description="authors: their repository's recipe; toolbox: the MI toolbox's FaceScrub scripts"
    )
    gan: TACGANParams = Field(default_factory=TACGANParams)
    surrogates: list[NetworkSpec] = Field(default_factory=lambda: _surrogates(pool=False), min_length=1)
    surrogate_training: SurrogateTrainParams = Field(default_factory=SurrogateTrainParams)
    iterations: int = Field(600, ge=1)
    lr: float = Field(0.1, gt=0)
    restarts: int = Field(5, ge=1)
    views: int = Field(2, ge=1, description="independently augmented views per surrogate and step")
    augment: PLGAugmentParams = Field(default_factory=PLGAugmentParams)
    batch_size: int = Field(100, ge=1, description="latents optimised together (memory only)")

    @model_validator(mode="before")
    @classmethod
    def _fill_from_preset(cls, data: Any) -> Any:
        """`preset: toolbox` supplies the toolbox's values under whatever the suite sets itself."""
        if not isinstance(data, dict) or data.get("preset") != "toolbox":
            return data
        filled = dict(data)
        for key, value in TOOLBOX_PRESET.items():
            given = filled.get(key)
            if given is None:
                filled[key] = value
            elif isinstance(value, dict) and isinstance(given, dict):
                filled[key] = {**value, **given}
        return filled


class LOKTPrior(nn.Module):
    """The T-ACGAN, the surrogates, and what training them cost and achieved."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, surrogates: list[nn.Module]):
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator
        self.surrogates = nn.ModuleList(surrogates)
        self.register_buffer("target_queries", torch.zeros((), dtype=torch.float64))
        self.register_buffer("label_agreement", torch.zeros((), dtype=torch.float64))


def _real_fake_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
    """Binary cross-entropy of sigmoid(logits) against all-real or all-fake."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(real)))


def train_tacgan(
    generator: nn.Module, discriminator: nn.Module, public: ImageSet, oracle: TargetOracle, p: TACGANParams,
    ctx: RunContext,
) -> None:  # fmt: skip
    """Step 1 in place.

    Counted in discriminator steps. `generator_first` (the authors' `train_tacgan.py`): a generator step, then n_dis
    discriminator steps, the class losses from the class_start-th discriminator step (their iteration n_uncond + 1)
    on. Otherwise the toolbox's `LoktGanTrainer`: a discriminator step per iteration and a generator step after
    every n_dis-th, the class losses after class_start steps (`iters > start`).
    """
    device, k = ctx.device, oracle.num_classes
    g, d = generator.to(device).train(), discriminator.to(device).train()
    opt_g = torch.optim.Adam(g.parameters(), lr=p.lr, betas=(p.beta1, p.beta2))
    opt_d = torch.optim.Adam(d.parameters(), lr=p.lr, betas=(p.beta1, p.beta2))
    gens = {n: ctx.generator(n) for n in ("z", "y", "real")}
    real_batches = endless_batches(len(public), p.batch_size, gens["real"])

    def fake_batch() -> tuple[torch.Tensor, torch.Tensor]:
        return sample_conditional(g, p.batch_size, p.z_dim, k, gens, device)

    def generator_step(with_class: bool) -> None:
        fake, y = fake_batch()
        logit, cls = d(fake)
        g_loss = _real_fake_loss(logit, True)
        if with_class:
            g_loss = g_loss + p.class_weight * F.cross_entropy(cls, y)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()

    with ctx.reporter.bar("T-ACGAN (LOKT)", p.iterations) as advance:
        for step in range(p.iterations):
            with_class = step >= p.class_start if p.generator_first else step > p.class_start
            if p.generator_first and step % p.n_dis == 0:
                generator_step(with_class)
            with torch.no_grad():
                fake, _ = fake_batch()
            fake_logit, fake_class = d(fake)
            real_logit, _ = d(to_float(public.images[next(real_batches)], device))
            d_loss = _real_fake_loss(fake_logit, False) + _real_fake_loss(real_logit, True)
            if with_class:  # the class head learns the target's labels of the fakes, not the labels asked for
                d_loss = d_loss + p.class_weight * F.cross_entropy(fake_class, oracle.labels(fake))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            if not p.generator_first and step % p.n_dis == 0:
                generator_step(with_class)
            advance(1)
    g.eval()
    d.eval()


@torch.no_grad()
def label_generated_set(
    generator: nn.Module, oracle: TargetOracle, p: SurrogateTrainParams, z_dim: int, ctx: RunContext
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Step 2's data (the toolbox's `GeneratorDataset.create`): latents z, the classes c asked for, target labels.

    per_class latents for every class, and the target's top-1 label of G(z, c); images are regenerated from (z, c)
    whenever they are used, as the official loader does.
    """
    device = ctx.device
    asked = torch.arange(oracle.num_classes).repeat_interleave(p.per_class)
    z = torch.randn(len(asked), z_dim, generator=ctx.generator("generated-set"))
    chunks = in_chunks(len(asked), p.label_batch)
    labels = torch.cat([oracle.labels(generator(z[c].to(device), asked[c].to(device))).cpu() for c in chunks])
    return z, asked, labels


def train_surrogate(
    surrogate: nn.Module, generator: nn.Module, data: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    p: SurrogateTrainParams, ctx: RunContext, description: str,
) -> None:  # fmt: skip
    """Step 2: cross-entropy on the target's labels of the regenerated images.

    The authors' recipe: each batch's clean images and an augmented view of each, 0.5 CE + 0.5 CE, SGD with momentum
    and weight decay, epochs of a fixed number of batches from an endless shuffled sampler, the learning rate
    cosine-annealed to 0 over the epochs (stepped per epoch). The toolbox's: one view, augmented with probability
    augment_p, one pass over the generated set per epoch.
    """
    device = ctx.device
    z, asked, labels = data
    model = surrogate.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=p.epochs)
    shuffle, augment = ctx.generator("shuffle"), ctx.generator("augment")
    if p.epoch_images is None:
        per_epoch = -(-len(labels) // p.batch_size)
        epoch_batches = lambda: iterate_batches(len(labels), p.batch_size, generator=shuffle)  # noqa: E731
    else:
        per_epoch = max(1, p.epoch_images // p.batch_size)  # the authors' int(30000 / batch_size)
        endless = endless_batches(len(labels), p.batch_size, shuffle)
        epoch_batches = lambda: (next(endless) for _ in range(per_epoch))  # noqa: E731
    with ctx.reporter.bar(description, p.epochs * per_epoch) as advance:
        for _ in range(p.epochs):
            for idx in epoch_batches():
                y = labels[idx].to(device)
                with torch.no_grad():
                    x = generator(z[idx].to(device), asked[idx].to(device))
                    if p.two_views:
                        views = [x, plg_augment(x, p.augment, augment)]
                    else:
                        chosen = to_device(torch.rand(len(idx), generator=augment) < p.augment_p, device)
                        views = [torch.where(chosen[:, None, None, None], plg_augment(x, p.augment, augment), x)]
                loss = sum(F.cross_entropy(model(v).logits, y) for v in views) / len(views)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                advance(1)
            schedule.step()
    model.eval()


@ATTACKS.register
class LOKT(GenerativeAttack):
    """Label-only: T-ACGAN, surrogates taught by the target's labels of generated images, PLG-MI's search on them."""

    name: ClassVar[str] = "lokt"
    paper: ClassVar[str] = "Nguyen et al., Label-Only Model Inversion Attacks via Knowledge Transfer, NeurIPS 2023"
    official: ClassVar[str | None] = "ngoc-nguyen-0/LOKT_neurips2023 @ b751417"
    access: ClassVar[Access] = Access.LABELS
    # 2: the authors' recipe (T-ACGAN budget and order, surrogate recipe and unpooled heads); preset: toolbox is v1's
    version: ClassVar[int] = 2
    Params = LOKTParams
    prior_name: ClassVar[str] = "lokt"
    prior_uses_target: ClassVar[bool] = True

    def prior_params(self) -> LOKTPriorParams:
        """The GAN and surrogate settings (and the target) determine the prior."""
        p: LOKTParams = self.params
        return LOKTPriorParams(gan=p.gan, surrogates=p.surrogates, surrogate_training=p.surrogate_training)

    def build_prior(self, info: DataInfo, name: str | None = None) -> LOKTPrior:
        """PLG-MI's conditional generator, the auxiliary-classifier discriminator, untrained surrogates."""
        p: LOKTParams = self.params
        shape = {"num_classes": info.num_classes, "in_channels": info.channels, "image_size": info.image_size}
        return LOKTPrior(
            ConditionalResNetGenerator(info.num_classes, info.image_size, info.channels, p.gan.ch, p.gan.z_dim),
            SNAuxiliaryClassifierDiscriminator(info.num_classes, info.image_size, info.channels, p.gan.ch),
            [s.build(**shape) for s in p.surrogates],
        )

    def train_prior(
        self, prior: nn.Module, public: ImageSet, oracle: TargetOracle | None, ctx: RunContext, name: str | None = None
    ) -> None:
        """Steps 1 and 2: the T-ACGAN, the generated set labelled by the target, each surrogate on it."""
        p: LOKTParams = self.params
        train_tacgan(prior.generator, prior.discriminator, public, oracle, p.gan, ctx.child("gan"))
        generator = freeze(prior.generator).to(ctx.device)
        data = label_generated_set(generator, oracle, p.surrogate_training, p.gan.z_dim, ctx)
        for i, surrogate in enumerate(prior.surrogates):
            description = f"LOKT surrogate {i + 1}/{len(prior.surrogates)}"
            train_surrogate(surrogate, generator, data, p.surrogate_training, ctx.child("surrogate", i), description)
            surrogate.cpu()
        prior.target_queries.fill_(oracle.queries)
        prior.label_agreement.fill_((data[1] == data[2]).double().mean())

    def invert(self, prior: Any, oracle: TargetOracle, classes: torch.Tensor, ctx: RunContext) -> Reconstructions:
        """Step 3: PLG-MI's search with the summed max-margin losses of the surrogates; no target query."""
        p: LOKTParams = self.params
        generator = freeze(prior.generator).to(ctx.device)
        surrogates = [freeze(s).to(ctx.device) for s in prior.surrogates]
        labels = classes.repeat(p.restarts)
        restarts = torch.arange(p.restarts).repeat_interleave(classes.numel())
        z0 = per_sample_normal(ctx, [(int(c), int(r)) for c, r in zip(labels, restarts, strict=True)], p.gan.z_dim)
        augment = ctx.generator("augment")

        def step_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            # surrogate by surrogate, each on its own augmented views (the toolbox's loss per surrogate, summed)
            return sum(
                max_margin_identity(s(plg_augment(x, p.augment, augment)).logits, y).mean()
                for s in surrogates
                for _ in range(p.views)
            )

        latents, images = adam_conditional_search(
            generator, z0, labels, step_loss, iterations=p.iterations, lr=p.lr, batch_size=p.batch_size, ctx=ctx,
            description="LOKT latent search on the surrogates",
        )  # fmt: skip
        stats = {
            "target_queries": float(oracle.queries),
            "prior_target_queries": float(prior.target_queries),
            "generated_label_agreement": float(prior.label_agreement),
        }
        # Clamped into the generator's [0, 1] range as PLG-MI's; the raw output kept for the published evaluation.
        return Reconstructions(images.clamp(0, 1), labels, restarts, latents, stats, unclamped=images)
