"""DCGAN-style generator and WGAN critic of the GMI lineage, generalised to any power-of-two resolution.

At image_size 64 and width 64 they are exactly GMI's G64 and DGWGAN (spec §2.1, §2.2; used by GMI, KED-MI, LOMMA
and BREP-MI). Smaller sizes drop stages, so tests run the same code at 16x16.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _stages(image_size: int) -> int:
    """Number of 2x resolution steps between 4x4 and `image_size`."""
    n = math.log2(image_size)
    if image_size < 8 or n != int(n):
        raise ValueError(f"GAN image size must be a power of two >= 8, got {image_size}")
    return int(n) - 2


class DCGANGenerator(nn.Module):
    """z in R^{z_dim} -> image in [0, 1] (sigmoid output).

    Linear(z -> top x 4 x 4, no bias) + BN1d + ReLU, then transposed-conv up-blocks (k5, s2, p2, op1, BN, ReLU)
    halving the channels, then a final transposed conv to `channels` with bias and a sigmoid. `top` = width x 2^(n-1)
    for n upsampling steps, i.e. 512 at 64x64 with width 64.
    """

    def __init__(self, z_dim: int = 100, image_size: int = 64, channels: int = 3, width: int = 64):
        super().__init__()
        n = _stages(image_size)
        top = width * 2 ** (n - 1)
        self.z_dim = z_dim
        self.project = nn.Sequential(nn.Linear(z_dim, top * 16, bias=False), nn.BatchNorm1d(top * 16), nn.ReLU())
        blocks: list[nn.Module] = []
        ch = top
        for _ in range(n - 1):
            blocks += [
                nn.ConvTranspose2d(ch, ch // 2, 5, 2, padding=2, output_padding=1, bias=False),
                nn.BatchNorm2d(ch // 2),
                nn.ReLU(),
            ]
            ch //= 2
        blocks += [nn.ConvTranspose2d(ch, channels, 5, 2, padding=2, output_padding=1), nn.Sigmoid()]
        self.up = nn.Sequential(*blocks)
        self._top = top

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Images for latents `z` (N x z_dim)."""
        return self.up(self.project(z).view(z.shape[0], self._top, 4, 4))


class WGANCritic(nn.Module):
    """GMI's WGAN-GP critic: strided 5x5 convs with InstanceNorm(affine) standing in for LayerNorm, LeakyReLU(0.2).

    The first conv has no normalisation; channels double per step from `width`; a final 4x4 valid conv gives one
    unbounded score per image (no sigmoid).
    """

    def __init__(self, image_size: int = 64, channels: int = 3, width: int = 64):
        super().__init__()
        n = _stages(image_size)
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 5, 2, 2), nn.LeakyReLU(0.2)]
        ch = width
        for _ in range(n - 1):
            layers += [nn.Conv2d(ch, ch * 2, 5, 2, 2), nn.InstanceNorm2d(ch * 2, affine=True), nn.LeakyReLU(0.2)]
            ch *= 2
        layers.append(nn.Conv2d(ch, 1, 4))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """One score per image (N,)."""
        return self.net(x).flatten()
