"""Style-based generators for PPA: z -> w (mapping, with truncation) -> image (synthesis), behind one interface.

PPA searches the W space of a pre-trained StyleGAN2 (Struppek et al., ICML 2022). The interface is what the attack
needs: `mapping(z, psi, cutoff)` giving per-layer styles (N x num_ws x w_dim), `synthesis(w)` giving images in
[-1, 1], and `forward(z)` giving [0, 1] images so the shared GAN loops can train a small one on public data.

`TinyStyleGenerator` is a small style-based network for tests and smoke runs: a mapping MLP, a learned 4x4 constant,
and per-layer style modulation (AdaIN: instance-normalised features scaled and shifted by an affine map of that
layer's w). Its `w_avg` (the truncation centre) is kept as a running mean of mapped w during training, as StyleGAN's.
The released StyleGAN2 generator is `mibench.gan.stylegan2`; both expose the blockwise synthesis IF-GMI steps through
(`num_blocks`, `block_features`, `synthesis_from`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class TinyStyleGenerator(nn.Module):
    """z (z_dim) -> w (num_ws x w_dim) -> image (channels x resolution^2)."""

    def __init__(self, resolution: int = 16, channels: int = 3, z_dim: int = 32, w_dim: int = 32, width: int = 32):
        super().__init__()
        stages = int(math.log2(resolution)) - 2
        if stages < 1 or 4 * 2**stages != resolution:
            raise ValueError(f"style generator resolution must be a power of two >= 8, got {resolution}")
        self.z_dim, self.w_dim, self.resolution = z_dim, w_dim, resolution
        self.num_ws = stages + 1  # the constant's layer, then one per up-stage
        self.mapping_net = nn.Sequential(nn.Linear(z_dim, w_dim), nn.LeakyReLU(0.2), nn.Linear(w_dim, w_dim))
        self.const = nn.Parameter(torch.randn(width, 4, 4))
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in range(self.num_ws))
        self.styles = nn.ModuleList(nn.Linear(w_dim, 2 * width) for _ in range(self.num_ws))
        for (
            style
        ) in self.styles:  # modulation around scale 1, shift 0 (StyleGAN's bias init), w-dependent from the start
            nn.init.constant_(style.bias[:width], 1.0)
            nn.init.zeros_(style.bias[width:])
        self.to_rgb = nn.Conv2d(width, channels, 1)
        self.register_buffer("w_avg", torch.zeros(w_dim))
        self.w_avg_beta = 0.995

    def mapping(self, z: torch.Tensor, psi: float = 1.0, cutoff: int | None = None) -> torch.Tensor:
        """Styles for every layer; truncation pulls the first `cutoff` layers (all if None) towards `w_avg` by psi."""
        w = self.mapping_net(z)
        if self.training:
            self.w_avg.copy_(w.detach().mean(0).lerp(self.w_avg, self.w_avg_beta))
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        if psi != 1:
            layers = slice(0, cutoff)
            ws[:, layers] = self.w_avg.lerp(ws[:, layers], psi)
        return ws

    @property
    def num_blocks(self) -> int:
        """Synthesis blocks: the constant's layer, then one per up-stage (one style each)."""
        return self.num_ws

    def block_features(self, ws: torch.Tensor, block: int, features: torch.Tensor | None) -> torch.Tensor:
        """Output features of block `block` fed `features` (block - 1's output; the constant at block 0)."""
        if block == 0:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
        else:
            x = F.interpolate(features, scale_factor=2, mode="nearest")
        scale, shift = self.styles[block](ws[:, block]).chunk(2, dim=1)
        x = F.instance_norm(self.convs[block](x)) * scale[:, :, None, None] + shift[:, :, None, None]
        return F.leaky_relu(x, 0.2)

    def synthesis_from(self, ws: torch.Tensor, block: int, features: torch.Tensor | None) -> torch.Tensor:
        """Images in [-1, 1] from block `block` on, fed `features` (None at block 0)."""
        x = features
        for i in range(block, self.num_blocks):
            x = self.block_features(ws, i, x)
        return torch.tanh(self.to_rgb(x))

    def synthesis(self, ws: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] from styles (N x num_ws x w_dim)."""
        return self.synthesis_from(ws, 0, None)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """[0, 1] images (the convention of mibench's GAN loops)."""
        return (self.synthesis(self.mapping(z)) + 1) / 2
