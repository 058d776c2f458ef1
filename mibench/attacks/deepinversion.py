"""DeepInversion: "Dreaming to Distill: Data-free Knowledge Transfer via DeepInversion" (Yin et al., CVPR 2020).

A data-free, white-box synthesis: images are optimised directly (no generator, no public data) so that the target
assigns them the wanted class and so that the batch statistics they induce at every BatchNorm layer match the
running statistics stored there, the prior DeepInversion reads out of the network:

    L = CE(f(x~), y) + r_feature * sum_l w_l (||mu_l(x~) - mu_l||_2 + ||sigma2_l(x~) - sigma2_l||_2)
        + tv_l2 * TV_2(x~) + tv_l1 * TV_1(x~) + l2 * mean_i ||x~_i||_2,

with x~ a randomly rolled (jitter) and flipped copy of the images, w_1 = first_bn_multiplier and w_l = 1 after.
Official code: NVlabs/DeepInversion @ 2413af1 (`deepinversion.py` `DeepInversionFeatureHook`,
`get_image_prior_losses`, `get_images`; `utils/utils.py` `lr_cosine_policy`, `clip`), read for this file; the MI
toolbox (`attack/losses.py` `DeepInversionBatchNormPriorLoss`) uses the same statistics loss. Defaults are the
README's ImageNet command (`--r_feature 0.01 --lr 0.25 --setting_id 0 --do_flip`, tv_l2 1e-4, l2 1e-5, first BN
x10): setting 0 runs 2,000 steps at half resolution (2x2 average pooling of the images) then 1,000 at full
resolution, each phase with Adam (betas 0.5, 0.9) under a cosine schedule with a 100-step warm-up, the images clipped
to the valid range after every step, and the last iterates kept (the command passes no `--store_best_images`; that
flag's global lowest-loss images are `selection: lowest-loss`, and the records say which phase they came from).

In mibench's terms: targets take [0, 1] images, so the optimisation variable is the image itself and the losses that
the official code computes on ImageNet-normalised inputs (TV, L2, the random start N(0, 1)) are computed on the
normalised view (x - mean) / std with ImageNet's statistics, which keeps the official coefficients meaningful. The
jitter is the official 30 px at 224 scaled to the image side. The half-resolution phase pools the images 2x2 as
the official code does, but MI targets take one input size, so the pooled images are shown to the target upsampled
back (nearest, i.e. as 2x2 blocks) where the official ResNet-50 takes the small image itself. Each image gets its
own restart noise from the job's seed; batches interleave classes (restart-major) like the official mixed-class
batches, because the BatchNorm statistics are batch statistics. BatchNorm1d layers are not part of the official
prior (`batchnorm_1d: true` adds them, for targets whose only BatchNorm is 1-d, such as the tiny test CNN); a
target without BatchNorm is an error.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from mibench.api.attack import Attack, Reconstructions
from mibench.api.context import RunContext
from mibench.api.oracle import Access, TargetOracle
from mibench.errors import MibenchError
from mibench.inversion.search import in_chunks
from mibench.params import Params
from mibench.registry import ATTACKS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DeepInversionParams(Params):
    """The official ImageNet command's settings (see module docstring)."""

    restarts: int = Field(5, ge=1, description="images per attacked class")
    iterations: int = Field(3000, ge=1, description="steps in all (setting 0: 2,000 at half resolution, 1,000 full)")
    low_resolution_share: float = Field(2 / 3, ge=0, lt=1, description="setting 0: 2/3; setting 1 (2k full): 0")
    lr: float = Field(0.25, gt=0)
    warmup: int = Field(100, ge=0, description="linear warm-up steps of each phase's cosine schedule")
    r_feature: float = Field(0.01, ge=0, description="weight of the BatchNorm statistics loss")
    first_bn_multiplier: float = Field(10.0, ge=0)
    tv_l2: float = Field(1e-4, ge=0)
    tv_l1: float = Field(0.0, ge=0)
    l2: float = Field(1e-5, ge=0)
    main_loss_multiplier: float = Field(1.0, ge=0)
    jitter: float = Field(30 / 224, ge=0, lt=1, description="random roll, as a fraction of the side (30 px at 224)")
    flip: bool = True
    batch_size: int = Field(84, ge=1, description="images optimised together (their BatchNorm statistics are shared)")
    batchnorm_1d: bool = Field(False, description="also match BatchNorm1d statistics (not in the official prior)")
    selection: Literal["last", "lowest-loss"] = Field(
        "last",
        description="last: the last iterate, what the cited README command keeps; lowest-loss: the global lowest-loss "
        "images over both phases, what --store_best_images writes",
    )


class BatchNormStatistics:
    """Forward hooks on a network's BatchNorm layers; `loss()` is the weighted statistics mismatch of the last pass."""

    def __init__(self, model: nn.Module, first_multiplier: float, include_1d: bool = False):
        kinds = (nn.BatchNorm2d, nn.BatchNorm1d) if include_1d else (nn.BatchNorm2d,)
        # Modules a deployment wraps around the classifier (an output purifier's own decoder) are not its prior.
        outside = {
            id(m) for owner in model.modules() if getattr(owner, "outside_target", False) for m in owner.modules()
        }
        self.layers = [
            m for m in model.modules() if isinstance(m, kinds) and m.running_mean is not None and id(m) not in outside
        ]
        self.weights = [first_multiplier] + [1.0] * (len(self.layers) - 1)
        self.terms: list[torch.Tensor | None] = [None] * len(self.layers)
        self.handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self.layers)]

    def _hook(self, index: int):
        def record(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            self.terms[index] = statistics_mismatch(inputs[0], module.running_mean, module.running_var)

        return record

    def loss(self) -> torch.Tensor:
        """sum_l w_l (||mu_l - running_mean_l|| + ||var_l - running_var_l||) of the last forward pass."""
        return sum(w * t for w, t in zip(self.weights, self.terms, strict=True) if t is not None)

    def close(self) -> None:
        """Remove the hooks."""
        for handle in self.handles:
            handle.remove()


def statistics_mismatch(x: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor) -> torch.Tensor:
    """||mean - running_mean||_2 + ||var - running_var||_2 of a BatchNorm input.

    Mean and (biased, as the official hook) variance are per channel over all other axes.
    """
    channels = x.shape[1]
    flat = x.transpose(0, 1).reshape(channels, -1)
    return torch.linalg.vector_norm(running_var - flat.var(1, unbiased=False)) + torch.linalg.vector_norm(
        running_mean - flat.mean(1)
    )


def image_prior_losses(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepInversion's total variation terms (L1, L2) over horizontal, vertical and both diagonal differences."""
    diffs = (
        x[:, :, :, :-1] - x[:, :, :, 1:],
        x[:, :, :-1, :] - x[:, :, 1:, :],
        x[:, :, 1:, :-1] - x[:, :, :-1, 1:],
        x[:, :, :-1, :-1] - x[:, :, 1:, 1:],
    )
    return sum(d.abs().mean() for d in diffs), sum(torch.linalg.vector_norm(d) for d in diffs)


def cosine_lr(base: float, warmup: int, total: int, step: int) -> float:
    """The official `lr_cosine_policy`: linear warm-up, then half a cosine to zero over the rest of the phase."""
    warmup = min(warmup, max(total - 1, 0))  # short budgets keep a cosine part
    if step < warmup:
        return base * (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1))) * base


@ATTACKS.register
class DeepInversion(Attack):
    """Data-free image optimisation against the class loss and the target's BatchNorm statistics."""

    name: ClassVar[str] = "deepinversion"
    paper: ClassVar[str] = "Yin et al., Dreaming to Distill: Data-free Knowledge Transfer via DeepInversion, CVPR 2020"
    official: ClassVar[str | None] = "NVlabs/DeepInversion @ 2413af1"
    access: ClassVar[Access] = Access.WHITE_BOX
    # 2: the last iterates by default, as the cited command (version 1 kept the lowest-loss images, --store_best_images)
    version: ClassVar[int] = 2
    Params = DeepInversionParams
    needs_batchnorm: ClassVar[bool] = True

    def invert(self, prior, oracle: TargetOracle, classes: torch.Tensor, ctx: RunContext) -> Reconstructions:
        """Optimise `restarts` images per class in mixed-class batches."""
        p: DeepInversionParams = self.params
        model = oracle.model
        hooks = BatchNormStatistics(model, p.first_bn_multiplier, p.batchnorm_1d)
        if not hooks.layers:
            hooks.close()
            kinds = "BatchNorm" if p.batchnorm_1d else "BatchNorm2d"
            raise MibenchError(
                f"deepinversion needs a target with {kinds} layers (their statistics are its prior); "
                f"this target has none" + ("" if p.batchnorm_1d else " (batchnorm_1d: true adds 1-d)")
            )
        labels = classes.repeat(p.restarts)  # restart-major: every batch mixes classes
        restarts = torch.arange(p.restarts).repeat_interleave(len(classes))
        images, losses, half_resolution = [], [], []
        try:
            with ctx.reporter.bar("DeepInversion", math.ceil(len(labels) / p.batch_size) * p.iterations) as advance:
                for chunk in in_chunks(len(labels), p.batch_size):
                    best, loss, factor = self._optimise(
                        oracle, hooks, labels[chunk], restarts[chunk], chunk.start, ctx, advance
                    )
                    images.append(best)
                    losses.append(loss)
                    half_resolution += [factor == 2] * len(best)
        finally:
            hooks.close()
        stats = {
            "mean_best_loss": float(torch.tensor(losses).mean()),
            # the share of images kept from the half-resolution phase (only `lowest-loss` can keep one)
            "kept_from_half_resolution": sum(half_resolution) / max(len(half_resolution), 1),
        }
        return Reconstructions(torch.cat(images), labels, restarts, None, stats)

    def _optimise(self, oracle, hooks, labels, restarts, batch: int, ctx, advance) -> tuple[torch.Tensor, float, int]:
        """One mixed-class batch: each start from (class, restart), the batch's jitter from its position.

        Returns the kept images, their loss and the pooling factor of the phase they come from (2: half resolution).
        """
        p: DeepInversionParams = self.params
        device = ctx.device
        c, h, w = oracle.image_shape
        mean, std = _imagenet_stats(c, device)
        noise = torch.stack(
            [
                torch.randn(c, h, w, generator=ctx.generator("start", int(y), int(r)))
                for y, r in zip(labels, restarts, strict=True)
            ]
        ).to(device)
        x = (mean + std * noise).clamp(0, 1).requires_grad_(True)  # N(0, 1) in the normalised space, then clipped
        y = labels.to(device)
        shifts = ctx.generator("jitter", batch)
        low = round(p.iterations * p.low_resolution_share)
        best, best_loss, best_factor = x.detach().clone(), math.inf, 1
        for steps, factor in ((low, 2), (p.iterations - low, 1)):
            if steps == 0:
                continue
            opt = torch.optim.Adam([x], lr=p.lr, betas=(0.5, 0.9), eps=1e-8)
            limit = int(p.jitter * w) // factor
            for step in range(steps):
                for group in opt.param_groups:
                    group["lr"] = cosine_lr(p.lr, p.warmup, steps, step)
                view = F.avg_pool2d(x, 2) if factor == 2 else x
                dx, dy = (int(v) for v in torch.randint(-limit, limit + 1, (2,), generator=shifts))
                view = torch.roll(view, shifts=(dx, dy), dims=(2, 3))
                if p.flip and bool(torch.rand(1, generator=shifts) < 0.5):
                    view = view.flip(3)
                logits = oracle.logits(view if factor == 1 else F.interpolate(view, size=(h, w), mode="nearest"))
                normalised = (view - mean) / std
                tv_l1, tv_l2 = image_prior_losses(normalised)
                l2 = torch.linalg.vector_norm(normalised.flatten(1), dim=1).mean()
                loss = (
                    p.main_loss_multiplier * F.cross_entropy(logits, y)
                    + p.r_feature * hooks.loss()
                    + p.tv_l2 * tv_l2
                    + p.tv_l1 * tv_l1
                    + p.l2 * l2
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    x.clamp_(0, 1)  # the official `clip` to the valid image range
                if p.selection == "last" or loss.item() < best_loss:
                    best, best_loss, best_factor = x.detach().clone(), loss.item(), factor
                advance(1)
        return best.cpu(), best_loss, best_factor


def _imagenet_stats(channels: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet's per-channel mean and std as (1, C, 1, 1) tensors (their averages for grey images)."""
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    if channels != 3:
        mean, std = mean.mean().repeat(channels), std.mean().repeat(channels)
    return mean.view(1, -1, 1, 1).to(device), std.view(1, -1, 1, 1).to(device)
