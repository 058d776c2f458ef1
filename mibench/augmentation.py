"""Differentiable per-sample augmentations in plain PyTorch (the kornia ops MI code uses, without kornia).

`random_affine_augment` composes RandomResizedCrop(scale, ratio 1), RandomHorizontalFlip and RandomRotation, each
applied to each sample independently with its own probability, into one affine warp sampled bilinearly with zero
padding. Gradients flow to the images (Trap-MID optimises its triggers through it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field

from mibench.data.base import to_device
from mibench.params import Params


class AffineAugmentParams(Params):
    """Trap-MID's augmentation (spec §4.1.4): crop scale (0.8, 1) ratio 1, flip, rotation +-30 degrees, p = 0.5 each."""

    crop_scale: tuple[float, float] = (0.8, 1.0)
    crop_p: float = Field(0.5, ge=0, le=1)
    flip_p: float = Field(0.5, ge=0, le=1)
    rotation_degrees: float = Field(30.0, ge=0)
    rotation_p: float = Field(0.5, ge=0, le=1)


def random_affine_augment(images: torch.Tensor, p: AffineAugmentParams, generator: torch.Generator) -> torch.Tensor:
    """Augment a batch (N x C x H x W, square images) with independent random crop, flip and rotation per sample."""
    n = images.shape[0]

    def draw(prob: float) -> torch.Tensor:
        return torch.rand(n, generator=generator) < prob

    # Crop: a square of area fraction s in crop_scale at a random position, resized back to full size.
    area = torch.empty(n).uniform_(*p.crop_scale, generator=generator)
    side = torch.where(draw(p.crop_p), area.sqrt(), torch.ones(n))
    centre = (torch.rand(n, 2, generator=generator) * 2 - 1) * (1 - side).unsqueeze(1)
    flip = torch.where(draw(p.flip_p), -torch.ones(n), torch.ones(n))
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(p.rotation_degrees)
    angle = torch.where(draw(p.rotation_p), angle, torch.zeros(n))
    cos, sin = angle.cos(), angle.sin()
    # Output coordinates are rotated, flipped, then mapped into the crop window of the input.
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = side * flip * cos
    theta[:, 0, 1] = -side * sin
    theta[:, 1, 0] = side * flip * sin
    theta[:, 1, 1] = side * cos
    theta[:, :, 2] = centre
    grid = F.affine_grid(to_device(theta, images.device).to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def color_jitter(
    images: torch.Tensor, brightness: float, contrast: float, p: float, generator: torch.Generator
) -> torch.Tensor:
    """kornia-style ColorJitter(brightness, contrast) per sample with probability p, clamped to [0, 1] after each op.

    Factors are drawn from [1 - b, 1 + b] and [1 - c, 1 + c]; brightness scales pixels, contrast blends towards the
    image's mean grey level. kornia applies the two in random order; here brightness comes first. The clamps zero
    the gradient of out-of-range pixels, as kornia's do (spec §2.7).
    """
    n = images.shape[0]
    on = torch.rand(n, generator=generator) < p
    b = torch.empty(n).uniform_(1 - brightness, 1 + brightness, generator=generator)
    c = torch.empty(n).uniform_(1 - contrast, 1 + contrast, generator=generator)
    # one asynchronous copy for all three
    on, b, c = to_device(torch.stack([on.to(b.dtype), b, c]), images.device).to(images.dtype).view(3, n, 1, 1, 1)
    on = on.bool()
    out = (images * b).clamp(0, 1)
    grey = out.mean(dim=(1, 2, 3), keepdim=True)
    out = ((out - grey) * c + grey).clamp(0, 1)
    return torch.where(on, out, images)


class PLGAugmentParams(AffineAugmentParams):
    """PLG-MI's augmentation: RandomResizedCrop(0.8-1, ratio 1, always), ColorJitter(0.2, 0.2), flip, rotation 5."""

    crop_p: float = Field(1.0, ge=0, le=1)
    rotation_degrees: float = Field(5.0, ge=0)
    brightness: float = Field(0.2, ge=0)
    contrast: float = Field(0.2, ge=0)
    jitter_p: float = Field(1.0, ge=0, le=1, description="1.0 in the attack stage, 0.5 in cGAN training")


def plg_augment(images: torch.Tensor, p: PLGAugmentParams, generator: torch.Generator) -> torch.Tensor:
    """Crop, colour jitter, flip and rotation, each drawn per sample."""
    jittered = color_jitter(images, p.brightness, p.contrast, p.jitter_p, generator)
    return random_affine_augment(jittered, p, generator)
