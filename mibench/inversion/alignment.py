"""AlignMI's gradient alignment: the identity loss's image gradient averaged over perturbed or transformed copies.

"Generative Model Inversion Through the Lens of the Manifold Hypothesis" (Peng et al., NeurIPS 2025): an
inversion's loss gradient in image space is mostly off the generator's manifold; averaging it over nearby copies of
the image keeps the part that lies along the manifold, and generative attacks climb faster. Official code:
AlanPeng0897/AlignMI @ 3f7fff9 (`low_resolution/attacks/optimize.py`: `gmi_optimize_paa`, `gmi_optimize_taa`,
`kedmi_optimize_paa`, `kedmi_optimize_taa`, `build_transformations`):

* PAA (perturbation-averaged alignment): 50 copies x + sigma eps, sigma = 0.003 (max x - min x) over the batch,
  eps ~ N(0, I) per copy and pixel;
* TAA (transformation-averaged alignment): 30 copies through RandomResizedCrop(64, scale (0.9, 1), ratio
  (0.9, 1.1)), a horizontal flip with p 0.5 and a rotation of up to 3 degrees (bilinear), each drawn per copy;
* every copy is min-max normalised over the batch (its min and max as constants, `.item()`), the identity loss is
  taken on it, and its gradient with respect to the clean image x is averaged over the copies; that average replaces
  the loss's own image gradient, and flows back to the latents through the generator.

`aligned_loss` wraps any per-sample identity loss so: its value is the loss of the clean images, its gradient the
aligned one, so every white-box search that calls an identity loss (GMI's momentum search, KED-MI's distributional
one) gets it unchanged. The attack's other terms (GMI's critic) keep their own gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torchvision.transforms.functional as TF
from pydantic import Field
from torchvision.transforms import InterpolationMode

from mibench.params import Params

# identity(images, labels) -> per-sample losses (N,)
IdentityLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class AlignmentParams(Params):
    """AlignMI's plug-in: off, PAA or TAA, with the official sample counts and spread."""

    mode: Literal["none", "paa", "taa"] = Field("none", description="paa: perturbations; taa: transformations")
    samples: int | None = Field(None, ge=1, description="copies per step; default the official 50 (PAA) / 30 (TAA)")
    spread: float = Field(0.003, ge=0, description="PAA's noise std as a share of the batch's pixel range")
    crop_scale: tuple[float, float] = (0.9, 1.0)
    crop_ratio: tuple[float, float] = (0.9, 1.1)
    flip: float = Field(0.5, ge=0, le=1)
    degrees: float = Field(3.0, ge=0)

    @property
    def copies(self) -> int:
        """The number of copies averaged per step."""
        return self.samples or (50 if self.mode == "paa" else 30)


def min_max(x: torch.Tensor) -> torch.Tensor:
    """(x - min) / (max - min) over the whole batch, min and max taken as constants (the official `.item()`)."""
    low, high = x.min().detach(), x.max().detach()
    return (x - low) / (high - low)


def perturbed_copy(x: torch.Tensor, spread: float, generator: torch.Generator) -> torch.Tensor:
    """X + sigma eps with sigma = spread (max x - min x), then min-max normalised (PAA)."""
    sigma = spread * float(x.detach().max() - x.detach().min())
    noise = torch.randn(x.shape, generator=generator).to(x.device)
    return min_max(x + noise * sigma)


def transformed_copy(x: torch.Tensor, p: AlignmentParams, generator: torch.Generator) -> torch.Tensor:
    """One draw of TAA's crop, flip and rotation applied to the whole batch, then min-max normalised.

    torchvision's transforms draw once per call, so the official pipeline moves every image of the batch alike.
    """
    height, width = x.shape[-2:]
    area = height * width
    top, left, h, w = 0, 0, height, width
    log_ratio = torch.log(torch.tensor(p.crop_ratio))
    for _ in range(10):  # RandomResizedCrop.get_params, its draws from `generator`
        target = area * float(torch.empty(1).uniform_(*p.crop_scale, generator=generator))
        aspect = float(torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= width and 0 < ch <= height:
            top = int(torch.randint(0, height - ch + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - cw + 1, (1,), generator=generator))
            h, w = ch, cw
            break
    out = TF.resized_crop(x, top, left, h, w, [height, width], antialias=True)
    if float(torch.rand(1, generator=generator)) < p.flip:
        out = TF.hflip(out)
    angle = float(torch.empty(1).uniform_(-p.degrees, p.degrees, generator=generator))
    # fill given per channel, as RandomRotation passes it (its border blending differs from fill=None)
    out = TF.rotate(out, angle, interpolation=InterpolationMode.BILINEAR, fill=[0.0] * x.shape[1])
    return min_max(out)


def aligned_gradient(
    images: torch.Tensor, labels: torch.Tensor, identity: IdentityLoss, p: AlignmentParams, generator: torch.Generator
) -> torch.Tensor:
    """The gradient of sum_i identity_i with respect to `images`, averaged over the aligned copies."""
    x = images.detach().requires_grad_(True)
    total = torch.zeros_like(x)
    with torch.enable_grad():
        for _ in range(p.copies):
            copy = perturbed_copy(x, p.spread, generator) if p.mode == "paa" else transformed_copy(x, p, generator)
            (grad,) = torch.autograd.grad(identity(copy, labels).sum(), x)
            total += grad
    return total / p.copies


class _AlignedIdentity(torch.autograd.Function):
    """Forward: the identity loss of the clean images; backward: the aligned image gradient, times the output's."""

    @staticmethod
    def forward(ctx, images, labels, identity, p, generator):
        ctx.save_for_backward(images, labels)
        ctx.identity, ctx.p, ctx.generator = identity, p, generator
        with torch.no_grad():
            return identity(images, labels)

    @staticmethod
    def backward(ctx, grad_output):
        images, labels = ctx.saved_tensors
        weighted = lambda x, y: ctx.identity(x, y) * grad_output  # noqa: E731 - chain rule for weighted sums
        return aligned_gradient(images, labels, weighted, ctx.p, ctx.generator), None, None, None, None


def aligned_loss(identity: IdentityLoss, p: AlignmentParams, generator: torch.Generator) -> IdentityLoss:
    """`identity` with AlignMI's aligned gradient (unchanged when `p.mode` is none)."""
    if p.mode == "none":
        return identity
    return lambda images, labels: _AlignedIdentity.apply(images, labels, identity, p, generator)
