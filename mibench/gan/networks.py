"""DCGAN-style generator and WGAN critic of the GMI lineage, generalised to any power-of-two resolution.

At image_size 64 and width 64 they are exactly GMI's G64 and DGWGAN (spec §2.1, §2.2; used by GMI, KED-MI, LOMMA
and BREP-MI). Smaller sizes drop stages, so tests run the same code at 16x16.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class GANPrior(nn.Module):
    """A generator and its discriminator, cached together as an attack's prior."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module):
        super().__init__()
        self.generator = generator
        self.discriminator = discriminator


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


class MinibatchDiscrimination(nn.Module):
    """Salimans et al. 2016 minibatch features: o_i,b = sum_j exp(-|M_i,b - M_j,b|_1) - 1 (self term removed).

    `group_size` makes a batch of k x group_size samples behave as k independent batches, so that batching many
    classes at once reproduces the official per-60-class statistics (spec §4.6).
    """

    def __init__(self, in_features: int, kernels: int = 64, kernel_dim: int = 50):
        super().__init__()
        self.kernels, self.kernel_dim = kernels, kernel_dim
        self.T = nn.Parameter(torch.randn(in_features, kernels * kernel_dim))

    def forward(self, x: torch.Tensor, group_size: int | None = None) -> torch.Tensor:
        """Features of every sample against the others of its group (N x kernels)."""
        m = (x @ self.T).view(-1, self.kernels, self.kernel_dim)
        size = group_size or m.shape[0]
        out = []
        for start in range(0, m.shape[0], size):
            g = m[start : start + size]
            l1 = (g.unsqueeze(0) - g.unsqueeze(1)).abs().sum(3)  # G x G x kernels
            out.append(torch.exp(-l1).sum(1) - 1)
        return torch.cat(out)


class KEDMIDiscriminator(nn.Module):
    """KED-MI's discriminator (spec §2.3) with minibatch discrimination and K class logits.

    Conv blocks with InstanceNorm(affine) and LeakyReLU(0.2) go down to 4x4; real/fake is implicit,
    D_real(x) = sigmoid(logsumexp(l(x))).

    At 64x64 and width 64 the blocks are (3->64, k5) (64->128, k5) (128->256, k5) (256->256, k3 s2 p1), giving the
    4096-d feature f(x). Returns (f(x), logits).
    """

    def __init__(self, num_classes: int, image_size: int = 64, channels: int = 3, width: int = 64):
        super().__init__()
        n = _stages(image_size)
        layers: list[nn.Module] = []
        ch = channels
        for i in range(n):
            out = min(width * 2**i, 4 * width)
            kernel, pad = (3, 1) if i == n - 1 and n > 1 else (5, 2)
            layers += [nn.Conv2d(ch, out, kernel, 2, pad), nn.InstanceNorm2d(out, affine=True), nn.LeakyReLU(0.2)]
            ch = out
        self.features = nn.Sequential(*layers, nn.Flatten())
        dim = ch * 16
        self.minibatch = MinibatchDiscrimination(dim)
        self.classifier = nn.Linear(dim + self.minibatch.kernels, num_classes)

    def forward(self, x: torch.Tensor, group_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(4096-d features before minibatch discrimination, class logits)."""
        f = self.features(x)
        return f, self.classifier(torch.cat([f, self.minibatch(f, group_size)], dim=1))
