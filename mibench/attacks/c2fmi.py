"""C2FMI: "C2FMI: Corse-to-Fine Black-box Model Inversion Attack" (Ye, Luo, Hu, Chen, Zhang; TDSC 2023).

A coarse start from an inversion network in the feature space of a public embedding network, then a black-box
differential evolution on the target's scores. Official code: MiLabHITSZ/2022YeC2FMI @ ca5142a (`main_attack.py`,
`utils/DE.py`, `utils/train_inv.py`, `models/predict2feature.py`), read for this file; the toolbox's version
(`optimize/genetic.py` `C2fGeneticOptimization`, `adapters/c2f.py`) was read too.

* Prior (per target): the embedding network E, a classifier trained on labelled public identities (the official
  uses an InceptionResnetV1 trained on CASIA-WebFace), whose logits are the feature space, and the mapping: an MLP
  K -> 4096 -> 4096 -> dropout 0.25 -> |E classes| (leaky ReLU 0.2) from the target's prediction vector, of which
  only the top `trunc` (1) entries are kept as log(p) + 50 (and L2-normalised), to E's logits, fitted by MSE on
  public images (Adam 1e-3, StepLR 2 x 0.8, batch 128, 20 epochs).
  The target is queried for probabilities on the public images.
* Coarse stage per class: 16 latents, each the mean of two consecutive w of a 10,000-sample pool (a random pair
  among the first ~1,800), 20 Adam steps (lr 0.02) on the MSE between E's logits of the render and the mapping of
  the class's (one-hot-like) prediction vector; no target query; the 10 the target is most confident about go on.
* Fine stage (`mibench.inversion.evolution`): extended to 32 latents, 500 generations of differential evolution
  on p_y; the fittest latent is the reconstruction.

The generator is the style-GAN prior (a released StyleGAN2 or the tiny one), rendered without truncation as the
official `g_ema([w], input_is_latent=True)`. Differences: E is trained on the suite's labelled public identities
(`embedding`) instead of being a released CASIA network (not registered yet), and inside the per-target prior with
the mapping (E does not depend on the target; training it per target costs time, not fidelity); renders reach E at
its input size by mibench's antialiased resize.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from mibench.api.attack import DataInfo, GenerativeAttack, PriorSpec, Reconstructions
from mibench.api.context import RunContext
from mibench.api.oracle import Access, TargetOracle
from mibench.api.recipe import TrainSpec
from mibench.data.base import ImageSet, iterate_batches, resize_images, to_float
from mibench.gan.style_prior import StyleGANParams, StyleGANPrior, render, render_latents, repeat_w, sample_pool
from mibench.inversion.evolution import differential_evolution, extend_population
from mibench.inversion.search import in_chunks
from mibench.models.base import build_classifier, freeze
from mibench.params import Params
from mibench.registry import ATTACKS
from mibench.training.classifier import train_classifier

MAPPING = "c2fmi-mapping"


class EmbeddingParams(Params):
    """The public embedding network, trained on the labelled public identities."""

    architecture: str = "tiny-cnn"
    params: dict[str, Any] = Field(default_factory=dict)
    input_size: int = Field(160, ge=8, description="official: 160 (InceptionResnetV1)")
    train: TrainSpec = Field(default_factory=lambda: TrainSpec(selection="last"))


class C2FMIParams(Params):
    """The official FaceScrub settings (`main_attack.py`, `utils/train_inv.py`, `utils/DE.py`)."""

    gan: StyleGANParams = Field(default_factory=StyleGANParams)
    embedding: EmbeddingParams = Field(default_factory=EmbeddingParams)
    mapping_hidden: int = Field(4096, ge=1)
    trunc: int = Field(1, ge=1, description="prediction entries kept by the mapping")
    mapping_epochs: int = Field(20, ge=1)
    mapping_batch: int = Field(128, ge=1)
    mapping_lr: float = Field(1e-3, gt=0)
    pool: int = Field(10_000, ge=2)
    coarse_latents: int = Field(16, ge=3)
    coarse_steps: int = Field(20, ge=0)
    coarse_lr: float = Field(0.02, gt=0)
    selected: int = Field(10, ge=3, description="coarse latents the target is most confident about")
    population: int = Field(32, ge=3)
    generations: int = Field(500, ge=1)
    keep: int = Field(1, ge=1, description="fittest latents returned per class (official: 1; toolbox: 5)")
    center_crop: float = Field(1.0, gt=0, le=1, description="crop side / render side (official: the whole render)")
    batch_size: int = Field(64, ge=1, description="renders per forward pass (memory only)")
    noise_mode: Literal["random", "const"] = Field(
        "random",
        description="random: fresh per-pixel noise at every render, from the job's stream (the official generator's "
        "randomize_noise default: every fitness is a sample); const: the generator's stored noise",
    )


@torch.no_grad()
def class_confidence(
    generator: nn.Module,
    oracle: TargetOracle,
    w: torch.Tensor,
    labels: torch.Tensor,
    batch: int,
    crop: float,
    noise: torch.Generator | None = None,
) -> torch.Tensor:
    """The target's probability of each latent's class for its (untruncated) render, on the CPU.

    With `noise`, every render draws fresh per-pixel noise from it, so each score is a sample, as the official DE's.
    """
    size, device = oracle.image_shape[-1], next(generator.parameters()).device
    scores = []
    for c in in_chunks(len(w), batch):
        probs = oracle.probabilities(render(generator, repeat_w(generator, w[c].to(device)), size, crop, noise=noise))
        scores.append(probs.gather(1, labels[c].to(device).view(-1, 1)).squeeze(1).cpu())
    return torch.cat(scores)


class PredictionMapping(nn.Module):
    """Target prediction vector -> embedding logits (the official `predict2feature`)."""

    def __init__(self, classes: int, outputs: int, hidden: int, trunc: int):
        super().__init__()
        self.trunc = min(trunc, classes)
        self.net = nn.Sequential(
            nn.Linear(classes, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
            nn.Dropout(0.25), nn.Linear(hidden, outputs),
        )  # fmt: skip

    def forward(self, probs: torch.Tensor) -> torch.Tensor:
        """Keep the top `trunc` entries as log p + 50 (shifted to be >= 0), L2-normalise, map."""
        top, index = probs.topk(self.trunc, dim=1)
        top = top.log().clamp_min(-1000) + 50.0
        top = top + F.relu(-top.min(dim=1, keepdim=True).values)
        x = torch.zeros_like(probs).scatter_(1, index, top)
        return self.net(F.normalize(x, dim=1))


@ATTACKS.register
class C2FMI(StyleGANPrior, GenerativeAttack):
    """Coarse embedding-space start, then differential evolution on the target's scores (see module docstring)."""

    name: ClassVar[str] = "c2fmi"
    paper: ClassVar[str] = "Ye et al., C2FMI: Corse-to-Fine Black-box Model Inversion Attack, IEEE TDSC 2023"
    official: ClassVar[str | None] = "MiLabHITSZ/2022YeC2FMI @ ca5142a"
    access: ClassVar[Access] = Access.PROBABILITIES
    # 2: fresh render noise by default (the official generator's), the evaluator sees a fresh render at its size
    version: ClassVar[int] = 2
    Params = C2FMIParams

    def needs_public_identities(self) -> bool:
        """The embedding network trains on labelled public identities."""
        return True

    def mapping_params(self) -> dict[str, Any]:
        """What determines the embedding and mapping prior."""
        p = self.params
        keys = ("embedding", "mapping_hidden", "trunc", "mapping_epochs", "mapping_batch", "mapping_lr")
        return {k: getattr(p, k) for k in keys}

    def priors(self) -> list[PriorSpec]:
        """The style generator (unless released), then E and the mapping (per target)."""
        return [*super().priors(), PriorSpec(MAPPING, _MappingKey(**self.mapping_params()), uses_target=True)]

    def build_prior(self, info: DataInfo, name: str | None = None) -> nn.Module:
        """E and the mapping (sized when trained or loaded), or the style GAN."""
        if name != MAPPING:
            return super().build_prior(info, name)
        return MappingPrior(self.params, info)

    def train_prior(
        self, prior: nn.Module, public: ImageSet, oracle: TargetOracle | None, ctx: RunContext, name: str | None = None
    ) -> None:
        """E on the labelled public identities, then the mapping from the target's predictions (or the style GAN)."""
        if name != MAPPING:
            return super().train_prior(prior, public, oracle, ctx, name)
        prior.fit(public, oracle, ctx)

    def generative_prior(self, prior):
        """The style GAN inside the dict of priors."""
        return prior[self.prior_name] if isinstance(prior, dict) else prior

    def coarse(
        self, generator, embed, mapping, pool: torch.Tensor, classes: torch.Tensor, oracle, ctx, noise=None
    ) -> torch.Tensor:
        """Classes x selected latents: the embedding-space descent, then the target's most confident."""
        p: C2FMIParams = self.params
        device, k = ctx.device, oracle.num_classes
        gen = ctx.generator("coarse")
        pairs = torch.randint(0, max(0, p.pool // 10 - 100) + 1, (len(classes), p.coarse_latents), generator=gen)
        pairs = pairs.clamp(max=(len(pool) - 2) // 2)
        start = (pool[2 * pairs] + pool[2 * pairs + 1]) / 2  # classes x n x d
        w = start.reshape(-1, pool.shape[1]).to(device).requires_grad_(True)
        labels = classes.repeat_interleave(p.coarse_latents).to(device)
        opt = torch.optim.Adam([w], lr=p.coarse_lr)
        for _ in range(p.coarse_steps):
            prediction = torch.randn(len(labels), k, generator=gen).abs().to(device)
            prediction[torch.arange(len(labels)), labels] = 1e18
            with torch.no_grad():
                wanted = mapping(F.normalize(prediction, dim=1))
            rendered = render(generator, repeat_w(generator, w), p.embedding.input_size, p.center_crop, noise=noise)
            logits = embed(rendered).logits
            loss = F.mse_loss(logits, wanted)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        w = w.detach()
        score = class_confidence(generator, oracle, w, labels, p.batch_size, p.center_crop, noise)
        score = score.view(len(classes), -1)
        top = score.topk(min(p.selected, p.coarse_latents), dim=1).indices.cpu()
        w = w.view(len(classes), p.coarse_latents, -1).cpu()
        return w.gather(1, top.unsqueeze(2).expand(-1, -1, w.shape[2]))

    def invert(self, prior, oracle: TargetOracle, classes: torch.Tensor, ctx: RunContext) -> Reconstructions:
        """Mapping, coarse stage, differential evolution (see module docstring)."""
        p: C2FMIParams = self.params
        device = ctx.device
        generator = self.style_generator(prior, ctx)
        learnt = prior[MAPPING] if isinstance(prior, dict) else prior
        embed, mapping = freeze(learnt.embedding).to(device), freeze(learnt.mapping).to(device)
        pool = sample_pool(generator, p.pool, ctx)
        noise = self.noise_stream(ctx, "render-noise")
        start = self.coarse(generator, embed, mapping, pool, classes, oracle, ctx, noise)
        fresh_gen = ctx.generator("fresh")

        def fresh(n: int) -> torch.Tensor:  # the official `get_rand_w`: the mean of three mapped w
            with torch.no_grad():
                z = torch.randn(n * 3, generator.z_dim, generator=fresh_gen).to(device)
                return generator.mapping(z)[:, 0].view(n, 3, -1).mean(1).cpu()

        population = extend_population(start, p.population, fresh, ctx.generator("extend"))

        def confidence(w: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            return class_confidence(generator, oracle, w, labels, p.batch_size, p.center_crop, noise)

        with ctx.reporter.bar("C2FMI differential evolution", p.generations) as advance:
            final, fitness = differential_evolution(
                population, classes, confidence, generations=p.generations, generator=ctx.generator("de"),
                advance=advance,
            )  # fmt: skip
        keep = min(p.keep, p.population)
        order = fitness.argsort(dim=1, descending=True)[:, :keep]
        latents = final.gather(1, order.unsqueeze(2).expand(-1, -1, final.shape[2])).reshape(-1, final.shape[2])
        to_ws = lambda w: repeat_w(generator, w)  # noqa: E731
        size = oracle.image_shape[-1]
        images = render_latents(generator, latents, to_ws, size, p.center_crop, p.batch_size, device, noise=noise)
        stats = {
            "target_queries": float(oracle.queries),
            "mean_best_confidence": float(fitness.max(dim=1).values.mean()),
        }
        labels, ranks = classes.repeat_interleave(keep), torch.arange(keep).repeat(len(classes))
        return Reconstructions(images.cpu(), labels, ranks, latents, stats)

    def noise_stream(self, ctx: RunContext, name: str) -> torch.Generator | None:
        """The job's stream for fresh render noise (`noise_mode: random`), else None (constant noise)."""
        return ctx.generator(name) if self.params.noise_mode == "random" else None

    def evaluation_images(
        self, prior, reconstructions: Reconstructions, size: int | tuple[int, int], ctx: RunContext
    ) -> torch.Tensor:
        """Fresh clamped renders of the kept latents at the evaluator's input size (the official evaluation).

        The official attack saves its full-resolution render (`utils/DE.py`) and `eva_accuracy.py` resizes that
        to the evaluation model's input, not the target-sized image upsampled; with random noise, another draw.
        """
        p: C2FMIParams = self.params
        generator = self.style_generator(prior, ctx)
        to_ws = lambda w: repeat_w(generator, w)  # noqa: E731
        latents, noise = reconstructions.latents, self.noise_stream(ctx, "evaluation-noise")
        return render_latents(generator, latents, to_ws, size, p.center_crop, p.batch_size, ctx.device, noise=noise)


class _MappingKey(Params):
    """The prior's cache key: the embedding and mapping settings."""

    embedding: EmbeddingParams
    mapping_hidden: int
    trunc: int
    mapping_epochs: int
    mapping_batch: int
    mapping_lr: float


class MappingPrior(nn.Module):
    """E (a classifier of the public identities) and the mapping, built when the identities are known.

    The number of public identities sizes E's head and the mapping's output; it is saved as a buffer, so a cached
    state dict rebuilds the same networks before loading (as `SavedShapeBuffers`).
    """

    def __init__(self, params: C2FMIParams, info: DataInfo):
        super().__init__()
        self.params, self.info = params, info
        self.register_buffer("identities", torch.zeros((), dtype=torch.long))
        self.embedding: nn.Module | None = None
        self.mapping: nn.Module | None = None

    def _build(self, identities: int) -> None:
        p, e = self.params, self.params.embedding
        self.identities.fill_(identities)
        self.embedding = build_classifier(
            e.architecture, e.params, num_classes=identities, in_channels=self.info.channels, image_size=e.input_size
        )
        self.mapping = PredictionMapping(self.info.num_classes, identities, p.mapping_hidden, p.trunc)

    def fit(self, public: ImageSet, oracle: TargetOracle, ctx: RunContext) -> None:
        """E on the labelled public images at its input size, then the mapping by MSE to E's logits."""
        p, e = self.params, self.params.embedding
        device = ctx.device
        labels = torch.unique(public.labels, return_inverse=True)[1]
        self._build(int(labels.max()) + 1)
        small = resize_images(to_float(public.images), e.input_size, antialias=True)
        resized = ImageSet((small.clamp(0, 1) * 255).round().to(torch.uint8), labels)
        train_classifier(self.embedding, resized, resized, e.train, ctx, description="C2FMI embedding")
        embed = freeze(self.embedding).to(device)
        mapping = self.mapping.to(device).train()
        opt = torch.optim.Adam(mapping.parameters(), lr=p.mapping_lr)
        schedule = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.8)
        shuffle, size = ctx.generator("mapping"), oracle.image_shape[-1]
        for _ in range(p.mapping_epochs):
            for idx in iterate_batches(len(public), p.mapping_batch, generator=shuffle, drop_last=True):
                x = to_float(public.images[idx], device)
                with torch.no_grad():
                    probs = oracle.probabilities(resize_images(x, size, antialias=True))
                    wanted = embed(resize_images(x, e.input_size, antialias=True)).logits
                loss = F.mse_loss(mapping(probs), wanted)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            schedule.step()
        mapping.eval()

    def _load_from_state_dict(self, state, prefix, *args, **kwargs):
        saved = state.get(f"{prefix}identities")
        if self.embedding is None and saved is not None and int(saved) > 0:
            self._build(int(saved))
        super()._load_from_state_dict(state, prefix, *args, **kwargs)
