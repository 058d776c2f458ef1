"""Mirror, white-box: "MIRROR: Model Inversion for Deep Learning Based Face Recognition Models" (An et al., NDSS 2022).

Gradient descent on w through StyleGAN and the target. Official code: njuaplusplus/mirror @ 2730a14
(`my_whitebox_mirror.py`, `my_whitebox_mirror_helper.py`, `scripts/run_*_whitebox.sh`, genforce's StyleGAN forward),
read for this file; the pool, renderer and bounds are the black-box variant's (`mibench/attacks/mirror.py`).

As the official code with its run scripts' flags (`--bs=8 --do_flip --lr 0.25 --loss_class_ce=10 --use_cache`):

* each class starts from its `per_class` (8) pool members the target is most confident about (the pool of untruncated
  w, rendered with truncation psi 0.7 on the first 8 layers, as in every render);
* Adam (betas 0.9, 0.999) on w for `steps` (20,000) steps; the learning rate follows StyleGAN's projector schedule:
  lr x min(1, t / 0.05) x (0.5 - 0.5 cos(pi min(1, (1 - t) / 0.25))) with t = step / steps;
* each step renders the batch (one coin per step flips all images horizontally with probability 0.5), and the loss
  is 10 x the mean cross-entropy of the target's logits; after the step w is clipped to the p-space bounds (the pool's
  p mean +- 1 std, mapped back through the leaky ReLU);
* the kept latents are those of the step with the lowest loss, the whole batch together; the official code pairs the
  loss computed before a step with the latents after it (kept).

A batch of the official code is one class (`--target`); mibench runs every class at once with the loss summed over
classes (Adam is elementwise, so each class's update is its own run's), keeps the best step per class, and returns
all `per_class` latents of it. Differences: flips are drawn from the job's generator, one coin per step for every
class; the tiny style generator (tests, smoke) has no final leaky ReLU, so `latent_space: w` bounds W directly.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field

from mibench.api.attack import GenerativeAttack, Reconstructions
from mibench.api.context import RunContext
from mibench.api.oracle import Access, TargetOracle
from mibench.attacks.mirror import MirrorEvaluationRenders, mirror_renderer, p_space_bounds, pool_log_confidence
from mibench.gan.style_prior import StyleGANParams, sample_pool
from mibench.inversion.losses import cross_entropy_identity
from mibench.inversion.search import zero_nonfinite_grads
from mibench.params import Params
from mibench.registry import ATTACKS


class MirrorWhiteParams(Params):
    """The official white-box run scripts' settings (see module docstring)."""

    gan: StyleGANParams = Field(default_factory=StyleGANParams)
    pool: int = Field(100_000, ge=1, description="w sampled once; each class starts from its most confident")
    per_class: int = Field(8, ge=1, description="latents optimised per class (the scripts' --bs 8, one target each)")
    steps: int = Field(20_000, ge=1)
    lr: float = Field(0.25, gt=0, description="the scripts' 0.25 (the argument's default is 0.2)")
    betas: tuple[float, float] = (0.9, 0.999)
    rampdown: float = Field(0.25, gt=0, le=1)
    rampup: float = Field(0.05, gt=0, le=1)
    class_weight: float = Field(10.0, gt=0, description="--loss_class_ce")
    flip: bool = Field(True, description="--do_flip: a coin per step flips the batch")
    p_std_ce: float = Field(1.0, ge=0, description="bounds: mean +- this many stds of the pool; 0: unbounded")
    truncation_psi: float = Field(0.7, gt=0, le=1)
    truncation_cutoff: int | None = Field(8, ge=1)
    latent_space: Literal["p", "w"] = "p"
    center_crop: float = Field(1.0, gt=0, le=1)
    batch_size: int = Field(64, ge=1, description="renders scored together in the pool search (memory only)")


def projector_lr(lr: float, step: int, steps: int, rampdown: float, rampup: float) -> float:
    """StyleGAN's projector schedule (`adjust_lr`): linear warm-up, cosine ramp-down over the last `rampdown`."""
    t = step / steps
    ramp = 0.5 - 0.5 * math.cos(min(1.0, (1 - t) / rampdown) * math.pi)
    return lr * ramp * min(1.0, t / rampup)


@ATTACKS.register
class MirrorWhiteBox(MirrorEvaluationRenders, GenerativeAttack):
    """Adam on W from the pool's most confident latents, p-space clipped (see module docstring)."""

    name: ClassVar[str] = "mirror-w"
    paper: ClassVar[str] = (
        "An et al., MIRROR: Model Inversion for Deep Learning Based Face Recognition Models, NDSS 2022"
    )
    official: ClassVar[str | None] = "njuaplusplus/mirror @ 2730a14"
    access: ClassVar[Access] = Access.WHITE_BOX
    version: ClassVar[int] = 2  # 2: the evaluator sees a fresh render at its input size (the official evaluation)
    Params = MirrorWhiteParams

    def invert(self, prior, oracle: TargetOracle, classes: torch.Tensor, ctx: RunContext) -> Reconstructions:
        """Pool selection, the scheduled Adam search, the best step per class."""
        p: MirrorWhiteParams = self.params
        device = ctx.device
        generator = self.style_generator(prior, ctx)
        draw = mirror_renderer(generator, oracle.image_shape[-1], p)
        pool = sample_pool(generator, p.pool, ctx)
        scores = pool_log_confidence(
            pool, classes.to(device), lambda w: oracle.probabilities(draw(w.to(device))), p.batch_size
        )
        n = min(p.per_class, p.pool)
        start = pool[scores.topk(n, dim=0).indices.T.flatten()].to(device)  # class-major, n per class
        labels = classes.repeat_interleave(n).to(device)
        low, high, _ = p_space_bounds(pool, p.latent_space, p.p_std_ce)
        low, high = low.to(device), high.to(device)
        w = start.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=p.lr, betas=p.betas)
        coins = ctx.generator("flip")
        best = start.clone()
        best_loss = torch.full((len(classes),), float("inf"))
        with ctx.reporter.bar("Mirror white-box search", p.steps) as advance:
            for step in range(1, p.steps + 1):
                for group in opt.param_groups:
                    group["lr"] = projector_lr(p.lr, step, p.steps, p.rampdown, p.rampup)
                images = draw(w)
                if p.flip and bool(torch.rand((), generator=coins) > 0.5):
                    images = images.flip(-1)
                per_class = cross_entropy_identity(oracle.logits(images), labels).view(len(classes), n).mean(1)
                loss = p.class_weight * per_class
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()  # each class's mean loss, as its own official run
                zero_nonfinite_grads([w])
                opt.step()
                with torch.no_grad():
                    if p.p_std_ce > 0:
                        w.copy_(torch.maximum(torch.minimum(w, high), low))
                    better = loss.detach().cpu() < best_loss  # the pre-step loss with the post-step w (official)
                    best_loss[better] = loss.detach().cpu()[better]
                    rows = better.repeat_interleave(n).to(device)
                    best[rows] = w[rows]
                advance(1)
        images = self.renders(generator, best, oracle.image_shape[-1], device)
        stats = {"target_queries": float(oracle.queries), "mean_best_loss": float(best_loss.mean())}
        restarts = torch.arange(n).repeat(len(classes))
        return Reconstructions(images, labels.cpu(), restarts, best.cpu(), stats)
