"""PLG-MI's conditional SNGAN (spec §2.4), at any power-of-two size.

A ResNet generator with categorical conditional batch norm and a spectral-norm ResNet discriminator with a
projection head (Miyato & Koyama, ICLR 2018).

At 64x64 with ch = 64 they are the official `ResNetGenerator` (1024 -> 512 -> 256 -> 128 -> 64) and
`SNResNetProjectionDiscriminator` (64 -> 128 -> 256 -> 512 -> 1024). The generator ends in tanh but is trained on
[0, 1] images, so it learns to emit [0, 1]; its output goes to D and the target raw, as in the official code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from mibench.data.base import to_device


class CategoricalConditionalBatchNorm(nn.Module):
    """BatchNorm2d without affine, then class-specific gamma_y and beta_y (initialised to 1 and 0)."""

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.gamma = nn.Embedding(num_classes, num_features)
        self.beta = nn.Embedding(num_classes, num_features)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Normalise, then scale and shift by class."""
        return self.gamma(y)[:, :, None, None] * self.bn(x) + self.beta(y)[:, :, None, None]


def upsample2x_bilinear(x: torch.Tensor) -> torch.Tensor:
    """Exactly `F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)`, as blends of shifted copies.

    Output row 2i is 0.75 x[i] + 0.25 x[i-1] and row 2i+1 is 0.75 x[i] + 0.25 x[i+1] (edges replicated), then the same
    along columns. PyTorch's CUDA kernel for NCHW parallelises over output pixels and loops over batch x channels, so
    at the generator's small, wide maps (1024 x 4 x 4) it took 60% of a PLG-MI cGAN step on an H100; this form is
    plain elementwise work (benchmarks/profile_prior.py).
    """

    def along(t: torch.Tensor, dim: int) -> torch.Tensor:
        n = t.shape[dim]
        before = torch.cat([t.narrow(dim, 0, 1), t.narrow(dim, 0, n - 1)], dim)
        after = torch.cat([t.narrow(dim, 1, n - 1), t.narrow(dim, n - 1, 1)], dim)
        pair = torch.stack([0.75 * t + 0.25 * before, 0.75 * t + 0.25 * after], dim + 1)
        return pair.flatten(dim, dim + 1)

    return along(along(x, 2), 3)


class UpBlock(nn.Module):
    """CBN, ReLU, bilinear x2, conv3x3, CBN, ReLU, conv3x3; shortcut bilinear x2 then conv1x1."""

    def __init__(self, c_in: int, c_out: int, num_classes: int):
        super().__init__()
        self.b1 = CategoricalConditionalBatchNorm(c_in, num_classes)
        self.c1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.b2 = CategoricalConditionalBatchNorm(c_out, num_classes)
        self.c2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.c_sc = nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Twice the resolution."""
        h = upsample2x_bilinear(F.relu(self.b1(x, y)))
        h = self.c2(F.relu(self.b2(self.c1(h), y)))
        return self.c_sc(upsample2x_bilinear(x)) + h


class ConditionalResNetGenerator(nn.Module):
    """(z, y) -> image; Linear to (ch 2^n) x 4 x 4, n up-blocks halving channels, BN, ReLU, conv1x1, tanh."""

    def __init__(self, num_classes: int, image_size: int = 64, channels: int = 3, ch: int = 64, z_dim: int = 128):
        super().__init__()
        n = int(math.log2(image_size)) - 2
        if 4 * 2**n != image_size:
            raise ValueError(f"generator image size must be a power of two >= 8, got {image_size}")
        self.z_dim, self.num_classes = z_dim, num_classes
        top = ch * 2**n
        self.l1 = nn.Linear(z_dim, top * 16)
        self.blocks = nn.ModuleList(UpBlock(top // 2**i, top // 2 ** (i + 1), num_classes) for i in range(n))
        self.b_out = nn.BatchNorm2d(ch)
        self.conv_out = nn.Conv2d(ch, channels, 1)
        self._top = top

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Images of classes y from latents z."""
        h = self.l1(z).view(z.shape[0], self._top, 4, 4)
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.conv_out(F.relu(self.b_out(h))))


def sample_conditional(
    generator: nn.Module, batch_size: int, z_dim: int, num_classes: int, draws: dict[str, torch.Generator],
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """(G(z, y), y) for z ~ N(0, I) from draws["z"] and classes y uniform from draws["y"] (the cGAN trainers' fakes)."""
    z = to_device(torch.randn(batch_size, z_dim, generator=draws["z"]), device)
    y = to_device(torch.randint(0, num_classes, (batch_size,), generator=draws["y"]), device)
    return generator(z, y), y


def _sn_conv(c_in: int, c_out: int, k: int, gain: float) -> nn.Module:
    conv = nn.Conv2d(c_in, c_out, k, padding=k // 2)
    nn.init.xavier_uniform_(conv.weight, gain)
    nn.init.zeros_(conv.bias)
    return spectral_norm(conv)


class DownBlock(nn.Module):
    """Residual ReLU, conv3x3, ReLU, conv3x3, avgpool (or the optimized first block without the leading ReLU)."""

    def __init__(self, c_in: int, c_out: int, first: bool = False):
        super().__init__()
        self.first = first
        self.c1 = _sn_conv(c_in, c_out if first else c_in, 3, math.sqrt(2))
        self.c2 = _sn_conv(c_out if first else c_in, c_out, 3, math.sqrt(2))
        self.c_sc = _sn_conv(c_in, c_out, 1, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Half the resolution."""
        h = x if self.first else F.relu(x)
        h = F.avg_pool2d(self.c2(F.relu(self.c1(h))), 2)
        shortcut = self.c_sc(F.avg_pool2d(x, 2)) if self.first else F.avg_pool2d(self.c_sc(x), 2)
        return shortcut + h


def sn_resnet_trunk(image_size: int, channels: int, ch: int) -> tuple[nn.Sequential, int]:
    """The spectral-norm ResNet body down to 2x2 (optimized first block, then halving blocks) and its output width."""
    n = int(math.log2(image_size)) - 1  # halvings down to 2x2
    widths = [ch * 2**i for i in range(n)]
    blocks = [DownBlock(channels, widths[0], first=True)]
    blocks += [DownBlock(widths[i], widths[i + 1]) for i in range(n - 1)]
    return nn.Sequential(*blocks), widths[-1]


class SNProjectionDiscriminator(nn.Module):
    """Spectral-norm ResNet discriminator with global sum pooling and a class projection: l(h) + <embed_y, h>."""

    def __init__(self, num_classes: int, image_size: int = 64, channels: int = 3, ch: int = 64):
        super().__init__()
        self.blocks, width = sn_resnet_trunk(image_size, channels, ch)
        self.l_out = nn.Linear(width, 1)
        self.embed = nn.Embedding(num_classes, width)
        nn.init.xavier_uniform_(self.l_out.weight)
        nn.init.xavier_uniform_(self.embed.weight)
        self.l_out, self.embed = spectral_norm(self.l_out), spectral_norm(self.embed)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One unbounded score per (image, class)."""
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))
        return self.l_out(h).squeeze(1) + (self.embed(y) * h).sum(1)


class SNAuxiliaryClassifierDiscriminator(nn.Module):
    """The same spectral-norm trunk with two plain linear heads: a real/fake logit and class logits (an AC-GAN).

    LOKT's T-ACGAN discriminator (the MI toolbox's `LoktDiscriminator64`): the heads are xavier-initialised and not
    spectrally normalised; the official squashes the real/fake head with a sigmoid, mibench returns its logit and
    trains with the equivalent logit form of the binary cross-entropy.
    """

    def __init__(self, num_classes: int, image_size: int = 64, channels: int = 3, ch: int = 64):
        super().__init__()
        self.blocks, width = sn_resnet_trunk(image_size, channels, ch)
        self.l_out = nn.Linear(width, 1)
        self.l_class = nn.Linear(width, num_classes)
        nn.init.xavier_uniform_(self.l_out.weight)
        nn.init.xavier_uniform_(self.l_class.weight)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(real/fake logit per image, class logits per image)."""
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))
        return self.l_out(h).squeeze(1), self.l_class(h)
