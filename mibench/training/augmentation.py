"""Differentiable per-sample augmentations in plain PyTorch (the kornia ops MI code uses, without kornia).

`random_affine_augment` composes RandomResizedCrop(scale, ratio 1), RandomHorizontalFlip and RandomRotation, each
applied to each sample independently with its own probability, into one affine warp sampled bilinearly with zero
padding. Gradients flow to the images (Trap-MID optimises its triggers through it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pydantic import Field

from mibench.data.base import to_device
from mibench.params import Params


class AffineAugmentParams(Params):
    """Trap-MID's augmentation (spec §4.1.4): crop scale (0.8, 1) ratio 1, flip, rotation +-30 degrees, p = 0.5 each."""

    crop_scale: tuple[float, float] = (0.8, 1.0)
    crop_ratio: tuple[float, float] = Field(
        (1.0, 1.0), description="width/height range, log-uniform as torchvision's RandomResizedCrop (1: square)"
    )
    crop_p: float = Field(0.5, ge=0, le=1)
    flip_p: float = Field(0.5, ge=0, le=1)
    rotation_degrees: float = Field(30.0, ge=0)
    rotation_p: float = Field(0.5, ge=0, le=1)


def random_affine_augment(
    images: torch.Tensor, p: AffineAugmentParams, generator: torch.Generator, shared: bool = False
) -> torch.Tensor:
    """Augment a batch (N x C x H x W, square images) with random crop, flip and rotation.

    Independent draws per sample, or with `shared` one draw for the whole batch (a torchvision transform applied to
    a batch tensor, as IF-GMI's attack transformations are).
    """
    batch = images.shape[0]
    n = 1 if shared else batch

    def draw(prob: float) -> torch.Tensor:
        return torch.rand(n, generator=generator) < prob

    # Crop: a window of area fraction s in crop_scale and aspect ratio r (width/height) at a random position,
    # resized back to full size; sides beyond the image are clipped to it. The ratio is drawn only when it can vary,
    # so that square crops consume the generator as before.
    area = torch.empty(n).uniform_(*p.crop_scale, generator=generator)
    ratio = torch.ones(n)
    if p.crop_ratio[0] != p.crop_ratio[1] or p.crop_ratio[0] != 1:
        ratio = torch.empty(n).uniform_(*map(math.log, p.crop_ratio), generator=generator).exp()
    cropped = draw(p.crop_p)
    width = torch.where(cropped, (area * ratio).sqrt().clamp(max=1), torch.ones(n))
    height = torch.where(cropped, (area / ratio).sqrt().clamp(max=1), torch.ones(n))
    centre = (torch.rand(n, 2, generator=generator) * 2 - 1) * (1 - torch.stack([width, height], 1))
    flip = torch.where(draw(p.flip_p), -torch.ones(n), torch.ones(n))
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(p.rotation_degrees)
    angle = torch.where(draw(p.rotation_p), angle, torch.zeros(n))
    cos, sin = angle.cos(), angle.sin()
    # Output coordinates are rotated, flipped, then mapped into the crop window of the input.
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = width * flip * cos
    theta[:, 0, 1] = -width * sin
    theta[:, 1, 0] = height * flip * sin
    theta[:, 1, 1] = height * cos
    theta[:, :, 2] = centre
    theta = theta.expand(batch, -1, -1)
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


GREY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


def _grey(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    return (GREY[0] * r + GREY[1] * g + GREY[2] * b).unsqueeze(1)


def shift_hue(images: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate each RGB image's hue by `shift` (N, fraction of a turn) through HSV, as torchvision's adjust_hue."""
    r, g, b = images.unbind(1)
    maxc, minc = images.amax(1), images.amin(1)
    delta = maxc - minc
    grey = delta == 0
    sat = torch.where(grey, torch.zeros_like(maxc), delta / torch.where(grey, torch.ones_like(maxc), maxc))
    d = torch.where(grey, torch.ones_like(delta), delta)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(grey, torch.zeros_like(hue), (hue / 6.0) % 1.0)
    hue = (hue + shift.view(-1, 1, 1)) % 1.0
    i = torch.floor(hue * 6.0)
    f = hue * 6.0 - i
    i = i.long() % 6
    v = maxc
    p, q, t = v * (1 - sat), v * (1 - sat * f), v * (1 - sat * (1 - f))
    # (r, g, b) for the six hue sectors
    table = torch.stack([torch.stack(c) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))])
    return table.gather(0, i[None, None].expand(1, 3, *i.shape)).squeeze(0).transpose(0, 1)


def adjust_colors(
    images: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor, saturation: torch.Tensor, hue: torch.Tensor
) -> torch.Tensor:
    """The adjust_brightness, _contrast, _saturation and _hue of torchvision, one factor per image, in that order.

    Brightness scales, contrast blends towards the image's mean grey level, saturation towards its grey image; each
    result is clamped to [0, 1]; hue rotates in HSV.
    """
    view = (-1, 1, 1, 1)
    x = (images * brightness.view(view)).clamp(0, 1)
    mean = _grey(x).mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * contrast.view(view) + mean).clamp(0, 1)
    grey = _grey(x)
    x = ((x - grey) * saturation.view(view) + grey).clamp(0, 1)
    return shift_hue(x, hue)


def random_color_jitter(
    images: torch.Tensor, strength: tuple[float, float, float, float], generator: torch.Generator
) -> torch.Tensor:
    """ColorJitter(brightness, contrast, saturation, hue) as torchvision, drawn per image (PPA target training).

    Factors are uniform in [max(0, 1 - s), 1 + s] and the hue shift in [-h, h]. torchvision applies the four in a
    random order per image; here the order is fixed (brightness, contrast, saturation, hue).
    """
    n = images.shape[0]
    b, c, s, h = strength
    draws = [torch.empty(n).uniform_(max(0.0, 1 - v), 1 + v, generator=generator) for v in (b, c, s)]
    draws.append(torch.empty(n).uniform_(-h, h, generator=generator))
    factors = to_device(torch.stack(draws), images.device).to(images.dtype)  # one asynchronous copy
    return adjust_colors(images, *factors)


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


def random_erasing(
    images: torch.Tensor,
    p: float,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    fill: Sequence[float],
    generator: torch.Generator,
) -> torch.Tensor:
    """Torchvision's `RandomErasing`, drawn per image in its order (the same draws give the same pixels).

    With probability p, a rectangle of area share s ~ U(scale) and aspect ratio r ~ logU(ratio)
    (h = round(sqrt(s A r)), w = round(sqrt(s A / r))) at a uniform position where it fits (h < H and w < W; up to
    10 tries, else the image is kept) is set to `fill` (one value per channel; grey images take the mean).
    """
    out = images.clone()
    n, c, height, width = images.shape
    values = torch.tensor(list(fill), dtype=images.dtype)
    values = values.mean().view(1) if c == 1 and len(values) != 1 else values
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for k in range(n):
        if float(torch.rand((), generator=generator)) >= p:
            continue
        for _ in range(10):
            area = height * width * float(torch.empty(()).uniform_(*scale, generator=generator))
            aspect = math.exp(float(torch.empty(()).uniform_(*log_ratio, generator=generator)))
            h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if h < height and w < width:
                i = int(torch.randint(0, height - h + 1, (), generator=generator))
                j = int(torch.randint(0, width - w + 1, (), generator=generator))
                out[k, :, i : i + h, j : j + w] = values.to(images.device).view(-1, 1, 1)
                break
    return out
