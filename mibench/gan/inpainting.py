"""The inpainting GAN of attacks with partial knowledge of the private images (SecretGen, Yuan et al., ECCV 2022).

The generator fills a hidden region of an image: a context encoder reads the visible image (hidden pixels set to the
public mean pixel value) and the mask, an identity generator turns a latent z into features at the same quarter
resolution, and a decoder upsamples their concatenation to an image in [0, 1]; only the hidden region of its output
is used (`composite`). A global critic judges whole images and a local critic a random square patch of half the side.

At 64x64 with the default widths the generator is SecretGen's `InversionNet` (ContextNetwork of ten 3x3/5x5 convs
with two stride-2 steps and dilations 2, 4, 8, 16; IdentityGenerator of a linear layer to 4x4 and two 5x5
transposed convs; two transposed-conv up-blocks and two 3x3 convs ending in a sigmoid), read from
ffhibnese/Model-Inversion-Attack-ToolBox @ d9ad48f (`attack/SecretGen/models.py`, `stage1.py`, `utils.py`). Other
resolutions change the number of identity up-blocks only; tests run it at 16x16.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
    # SecretGen's ContextNetwork applies the ReLU before the BatchNorm (kept).
    pad = dilation * (kernel - 1) // 2
    return [nn.Conv2d(in_ch, out_ch, kernel, stride, pad, dilation), nn.ReLU(), nn.BatchNorm2d(out_ch)]


def _up(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [nn.ConvTranspose2d(in_ch, out_ch, 5, 2, 2, output_padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU()]


class InpaintingGenerator(nn.Module):
    """(visible image with its mask as a fourth channel, z) -> image in [0, 1] at the same resolution."""

    def __init__(self, image_size: int = 64, channels: int = 3, z_dim: int = 100, width: int = 64):
        super().__init__()
        quarter = image_size // 4
        if image_size < 16 or quarter & (quarter - 1):
            raise ValueError(f"inpainting image size must be a power of two >= 16, got {image_size}")
        c = 2 * width  # 128 at width 64
        layers = _conv(channels + 1, width // 2, 5) + _conv(width // 2, width, 3, 2) + _conv(width, width, 3)
        layers += _conv(width, c, 3, 2) + _conv(c, c, 3) + _conv(c, c, 3)
        for dilation in (2, 4, 8, 16):
            layers += _conv(c, c, 3, dilation=dilation)
        self.context = nn.Sequential(*layers)
        self.z_dim = z_dim
        top = 8 * width
        self.identity_project = nn.Sequential(
            nn.Linear(z_dim, top * 16, bias=False), nn.BatchNorm1d(top * 16), nn.ReLU()
        )
        ups, ch = [], top
        for _ in range(int(math.log2(quarter // 4))):  # 4x4 -> quarter resolution, halving channels
            ups += _up(ch, ch // 2)
            ch //= 2
        self.identity_up = nn.Sequential(*ups)
        self.decoder = nn.Sequential(
            *_up(c + ch, c), *_up(c, c // 2),
            nn.Conv2d(c // 2, c // 4, 3, 1, 1), nn.BatchNorm2d(c // 4), nn.ReLU(),
            nn.Conv2d(c // 4, channels, 3, 1, 1), nn.Sigmoid(),
        )  # fmt: skip
        self._top = top

    def forward(self, visible: torch.Tensor, mask: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The generator's full image; `visible` has its hidden pixels already replaced (see `masked_input`)."""
        context = self.context(torch.cat([visible, mask.expand(visible.shape[0], 1, -1, -1)], dim=1))
        identity = self.identity_up(self.identity_project(z).view(z.shape[0], self._top, 4, 4))
        return self.decoder(torch.cat([context, identity], dim=1))


def center_mask(image_size: int) -> torch.Tensor:
    """SecretGen's `center` mask (1 = hidden): the central square from 1/4 to 3/4 of the side, 1 x H x W."""
    mask = torch.zeros(1, image_size, image_size)
    low, high = int(image_size * 0.25), int(image_size * 0.75)
    mask[:, low:high, low:high] = 1
    return mask


def masked_input(images: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """Images with the hidden pixels replaced by the per-channel `fill` (the public mean pixel value)."""
    return images * (1 - mask) + fill.view(1, -1, 1, 1) * mask


def composite(images: torch.Tensor, generated: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The visible pixels of `images` with the hidden region taken from `generated`."""
    return images * (1 - mask) + generated * mask


def grid_cutouts(images: torch.Tensor, fill: torch.Tensor, cells: int = 4) -> list[torch.Tensor]:
    """`cells`^2 copies of the images, each with one cell of a cells x cells grid set to `fill`.

    SecretGen's `define_trans`: 16 cutouts of 16x16 at 64x64, for the pseudo-labels' averaged probabilities.
    """
    side = images.shape[-1] // cells
    out = []
    for i in range(cells):
        for j in range(cells):
            cut = images.clone()
            cut[..., i * side : (i + 1) * side, j * side : (j + 1) * side] = fill.view(1, -1, 1, 1)
            out.append(cut)
    return out


def random_patch(images: torch.Tensor, side: int, generator: torch.Generator) -> torch.Tensor:
    """One random `side` x `side` patch location, the same for the whole batch (SecretGen's `gen_hole_area`)."""
    limit = images.shape[-1] - side
    top, left = (int(v) for v in torch.randint(0, limit + 1, (2,), generator=generator))
    return images[..., top : top + side, left : left + side]
