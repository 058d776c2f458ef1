"""StyleGAN2 generator (Karras et al., CVPR 2020, config F) in plain PyTorch, for PPA's released-weights prior.

PPA (Struppek et al., ICML 2022) searches the W space of NVIDIA's pre-trained StyleGAN2-ADA generators (`ffhq.pkl`,
1024x1024). This module rebuilds that generator with the parameter and buffer names of NVIDIA's
`stylegan2-ada-pytorch` networks (`mapping.fc0.weight`, `synthesis.b64.conv0.affine.bias`, ...) so that a converted
state dict loads strictly, and without NVIDIA's custom CUDA ops: every operation is the reference formulation of
the official code.

* Mapping: z is normalised by its second moment, then `mapping_layers` equalised-lr fully connected layers
  (lr multiplier 0.01, leaky ReLU with gain sqrt 2); truncation lerps the first `cutoff` styles towards `w_avg`.
* Synthesis, 'skip' architecture: a learned 4x4 constant, then per resolution a block of two modulated 3x3
  convolutions (the first upsamples by 2 with a transposed convolution and the [1, 3, 3, 1] FIR filter) with
  weight demodulation, per-pixel noise (`noise_mode='const'` uses the stored noise maps, as PPA does), bias, leaky
  ReLU x sqrt 2 and a clamp at +-`conv_clamp`; a modulated 1x1 `torgb` (no demodulation) adds to the upsampled
  running image.
* Modulated convolutions use the unfused formulation (scale the input by the style, plain convolution, scale the
  output by the demodulation coefficient): the same function as the grouped-convolution form, but it batches well.
* Always float32 (PPA renders with `force_fp32=True`); NVIDIA's fp16 pre-normalisation is a numerical guard of the
  fp16 path only and does not change the function.

Checkpoints (`mibench.gan.stylegan2_files`): `load_stylegan2` reads either a converted file
(`{'config': ..., 'state_dict': ...}` or a bare state dict, with `torch.load(weights_only=True)`) or NVIDIA's network
pickle directly through `mibench.gan.nvidia_pickle`, which extracts tensors and constructor arguments without
executing the code stored in the pickle. Parity with NVIDIA's own code: `tests/goldens/stylegan2.pt`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from mibench.errors import CheckpointError

NoiseMode = Literal["const", "random", "none"]
LRELU_GAIN = math.sqrt(2)


def setup_filter(taps: list[float]) -> torch.Tensor:
    """Separable FIR low-pass filter as a normalised 2-D kernel (outer product of the taps, summing to 1)."""
    f = torch.tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, pad: tuple[int, int, int, int] = (0, 0, 0, 0), gain: float = 1
) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative crops; order x0, x1, y0, y1), convolve with `kernel` x gain.

    The reference form of NVIDIA's `upfirdn2d` op (no downsampling, which the generator never uses).
    """
    n, c, h, w = x.shape
    if up > 1:
        x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    x0, x1, y0, y1 = pad
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0) : x.shape[2] - max(-y1, 0), max(-x0, 0) : x.shape[3] - max(-x1, 0)]
    k = (kernel * gain).flip([0, 1]).to(x.dtype)  # convolution, not correlation
    return F.conv2d(x, k[None, None].expand(c, 1, -1, -1), groups=c)


def upsample2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """2x upsampling of the running RGB image (zero insertion, FIR filter with gain 4, output exactly 2x)."""
    taps = kernel.shape[-1]
    return upfirdn2d(x, kernel, up=2, pad=((taps + 1) // 2, (taps - 2) // 2, (taps + 1) // 2, (taps - 2) // 2), gain=4)


def bias_act(x: torch.Tensor, bias: torch.Tensor, lrelu: bool, gain: float, clamp: float | None) -> torch.Tensor:
    """Add a per-channel bias, optional leaky ReLU (0.2), scale by gain, clamp to +-clamp (NVIDIA's `bias_act`)."""
    x = x + bias.to(x.dtype).reshape(1, -1, *([1] * (x.ndim - 2)))
    if lrelu:
        x = F.leaky_relu(x, 0.2)
    if gain != 1:
        x = x * gain
    return x.clamp(-clamp, clamp) if clamp is not None else x


class FullyConnectedLayer(nn.Module):
    """Equalised-learning-rate linear layer: weight x lr_mult/sqrt(in), bias x lr_mult, optional lrelu x sqrt 2."""

    def __init__(
        self, in_features: int, out_features: int, lrelu: bool = False, lr_multiplier: float = 1.0, bias_init=0.0
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.lrelu = lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x in -> N x out."""
        x = x.matmul((self.weight * self.weight_gain).t())
        return bias_act(x, self.bias * self.bias_gain, self.lrelu, LRELU_GAIN if self.lrelu else 1, None)


class MappingNetwork(nn.Module):
    """z -> w (Sec. 2 of StyleGAN): second-moment normalisation, then `num_layers` FC layers; `w_avg` for truncation."""

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, num_layers: int = 8, lr_multiplier: float = 0.01):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, w_dim, num_ws, num_layers
        for i in range(num_layers):
            layer = FullyConnectedLayer(z_dim if i == 0 else w_dim, w_dim, lrelu=True, lr_multiplier=lr_multiplier)
            setattr(self, f"fc{i}", layer)
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, psi: float = 1.0, cutoff: int | None = None) -> torch.Tensor:
        """Styles N x num_ws x w_dim; with psi != 1 the first `cutoff` (all if None) are pulled towards `w_avg`."""
        x = z.float()
        x = x * (x.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if psi != 1:
            ws[:, :cutoff] = self.w_avg.lerp(ws[:, :cutoff], psi)
        return ws


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    *,
    demodulate: bool,
    up: bool = False,
    kernel: torch.Tensor | None = None,
) -> torch.Tensor:
    """StyleGAN2's modulated convolution (Eqs. 1-3), unfused: conv(x * s) * d with d = 1/||w * s|| per output channel.

    With `up`, the transposed stride-2 convolution followed by the FIR filter (gain 4, pad 1 on each side), which
    is how the official op upsamples inside a 3x3 convolution; the output is exactly twice the input size.
    """
    x = x * styles.to(x.dtype)[:, :, None, None]
    w = weight.to(x.dtype)
    if up:
        x = F.conv_transpose2d(x, w.transpose(0, 1), stride=2)
        x = upfirdn2d(x, kernel, pad=(1, 1, 1, 1), gain=4)
    else:
        x = F.conv2d(x, w, padding=weight.shape[-1] // 2)
    if demodulate:
        # sum_{i,k} (w_oik s_i)^2 = sum_i s_i^2 sum_k w_oik^2: no N x O x I x k x k tensor per layer and step
        d = (styles.square() @ weight.square().sum(dim=[2, 3]).T + 1e-8).rsqrt()
        x = x * d.to(x.dtype)[:, :, None, None]
    return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally upsampling), noise, bias, lrelu x sqrt 2, clamp."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool, conv_clamp):
        super().__init__()
        self.resolution, self.up, self.conv_clamp = resolution, up, conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("resample_filter", setup_filter([1, 3, 3, 1]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: NoiseMode = "const") -> torch.Tensor:
        """Features at this layer's resolution from the previous ones and this layer's style w (N x w_dim)."""
        x = modulated_conv2d(x, self.weight, self.affine(w), demodulate=True, up=self.up, kernel=self.resample_filter)
        if noise_mode == "const":
            x = x + self.noise_const * self.noise_strength
        elif noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype)
            x = x + noise * self.noise_strength
        return bias_act(x, self.bias, True, LRELU_GAIN, self.conv_clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 convolution to RGB, without demodulation (style scaled by 1/sqrt(in_channels))."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """RGB contribution of this resolution."""
        x = modulated_conv2d(x, self.weight, self.affine(w) * self.weight_gain, demodulate=False)
        return bias_act(x, self.bias, False, 1, self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution: (constant | upsampling conv0), conv1, torgb added to the upsampled running image."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int, conv_clamp):
        super().__init__()
        self.in_channels = in_channels
        self.register_buffer("resample_filter", setup_filter([1, 3, 3, 1]))
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, True, conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, False, conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2

    def forward(self, x, img, ws: torch.Tensor, noise_mode: NoiseMode) -> tuple[torch.Tensor, torch.Tensor]:
        """`ws`: the block's num_conv + 1 styles (the torgb style is the next block's first)."""
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
        else:
            x = self.conv0(x, ws[:, 0], noise_mode)
        x = self.conv1(x, ws[:, self.num_conv - 1], noise_mode)
        y = self.torgb(x, ws[:, self.num_conv])
        return x, y if img is None else upsample2d(img, self.resample_filter) + y


class SynthesisNetwork(nn.Module):
    """Styles (N x num_ws x w_dim) -> images in [-1, 1] (N x C x R x R), skip architecture."""

    def __init__(self, w_dim: int, resolution: int, img_channels: int, channel_base: int, channel_max: int, conv_clamp):
        super().__init__()
        self.resolutions = [2**i for i in range(2, int(math.log2(resolution)) + 1)]
        channels = {r: min(channel_base // r, channel_max) for r in self.resolutions}
        self.num_ws = 0
        for r in self.resolutions:
            block = SynthesisBlock(channels[r // 2] if r > 4 else 0, channels[r], w_dim, r, img_channels, conv_clamp)
            setattr(self, f"b{r}", block)
            self.num_ws += block.num_conv
        self.num_ws += 1  # the last block's torgb

    def forward(self, ws: torch.Tensor, noise_mode: NoiseMode = "const") -> torch.Tensor:
        """Each block takes its convolutions' styles and the next style for torgb (shared with the next block)."""
        return self.run_blocks(ws, noise_mode=noise_mode)[1]

    def run_blocks(
        self,
        ws: torch.Tensor,
        start: int = 0,
        stop: int | None = None,
        x: torch.Tensor | None = None,
        img: torch.Tensor | None = None,
        noise_mode: NoiseMode = "const",
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(features, running image) after blocks start..stop-1.

        `x` is block start-1's output (unused by the constant block 0); `img` the running RGB image (None: a new one).
        """
        offset = sum(getattr(self, f"b{r}").num_conv for r in self.resolutions[:start])
        for r in self.resolutions[start:stop]:
            block = getattr(self, f"b{r}")
            x, img = block(x, img, ws[:, offset : offset + block.num_conv + 1].float(), noise_mode)
            offset += block.num_conv
        return x, img


@dataclass(frozen=True)
class StyleGAN2Config:
    """Constructor arguments of NVIDIA's Generator (unconditional, skip architecture).

    Defaults are the FFHQ 1024x1024 config F released with StyleGAN2-ADA (channel_base 32768, i.e. 512 channels up
    to 64x64 then halving to 32 at 1024; conv_clamp 256 as ADA trained it).
    """

    z_dim: int = 512
    w_dim: int = 512
    resolution: int = 1024
    img_channels: int = 3
    mapping_layers: int = 8
    channel_base: int = 32768
    channel_max: int = 512
    conv_clamp: float | None = 256
    mapping_lr_multiplier: float = 0.01


class StyleGAN2Generator(nn.Module):
    """z -> `mapping` -> w (N x num_ws x w_dim) -> `synthesis` -> images in [-1, 1]; the PPA generator interface."""

    has_noise_inputs = True  # `synthesis(ws, noise_mode="random")` draws fresh per-pixel noise

    def __init__(self, config: StyleGAN2Config = StyleGAN2Config()):
        super().__init__()
        if config.resolution < 4 or config.resolution & (config.resolution - 1):
            raise ValueError(f"StyleGAN2 resolution must be a power of two >= 4, got {config.resolution}")
        self.config = config
        self.z_dim, self.w_dim, self.resolution = config.z_dim, config.w_dim, config.resolution
        self.synthesis = SynthesisNetwork(
            config.w_dim, config.resolution, config.img_channels, config.channel_base, config.channel_max,
            config.conv_clamp,
        )  # fmt: skip
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(
            config.z_dim, config.w_dim, self.num_ws, config.mapping_layers, config.mapping_lr_multiplier
        )

    def forward(self, z: torch.Tensor, psi: float = 1.0, cutoff: int | None = None) -> torch.Tensor:
        """[0, 1] images (mibench's convention), constant noise."""
        return (self.synthesis(self.mapping(z, psi, cutoff)) + 1) / 2

    @property
    def w_avg(self) -> torch.Tensor:
        """The truncation centre (the mapping's running mean of w)."""
        return self.mapping.w_avg

    @property
    def num_blocks(self) -> int:
        """Synthesis blocks (one per resolution, 4x4 first): the layers IF-GMI steps through."""
        return len(self.synthesis.resolutions)

    def synthesis_from(self, ws: torch.Tensor, block: int, features: torch.Tensor | None) -> torch.Tensor:
        """Images in [-1, 1] from block `block` on, fed `features` (block - 1's output; None at block 0).

        The running RGB image restarts at `block`: the skip branches of the earlier blocks are not added, as
        IF-GMI's intermediate synthesis (`layer_in` with `img=None`).
        """
        return self.synthesis.run_blocks(ws, block, None, features)[1]

    def block_features(self, ws: torch.Tensor, block: int, features: torch.Tensor | None) -> torch.Tensor:
        """Output features of block `block` fed `features`."""
        return self.synthesis.run_blocks(ws, block, block + 1, features)[0]


# What released StyleGAN2-ADA networks use, with headroom; a pickle asking for more is refused before allocation.
CONFIG_BOUNDS = {
    "z_dim": 4096, "w_dim": 4096, "img_channels": 4, "mapping_layers": 32, "channel_max": 2048,
    "channel_base": 1 << 17, "resolution": 4096,
}  # fmt: skip


def check_config_bounds(config: StyleGAN2Config) -> None:
    """Refuse configurations no released network has (a crafted file could ask for gigabytes per layer).

    Checked before any network is built, for NVIDIA's pickles and converted `.pt` files alike.
    """
    too_large = [f"{k}={getattr(config, k)} (at most {v})" for k, v in CONFIG_BOUNDS.items() if getattr(config, k) > v]
    too_small = [f"{k}={getattr(config, k)}" for k in CONFIG_BOUNDS if getattr(config, k) < 1]
    resolution = config.resolution
    if resolution < 4 or resolution & (resolution - 1):
        too_small.append(f"resolution={resolution} (a power of two >= 4)")
    if too_large or too_small:
        problems = ", ".join(too_large + too_small)
        raise CheckpointError(f"the file's StyleGAN2 configuration is out of range: {problems}")


def infer_config(state: Mapping[str, torch.Tensor], conv_clamp: float | None = 256) -> StyleGAN2Config:
    """The architecture a state dict describes (resolution, widths, mapping depth); conv_clamp is not in it."""
    try:
        z_dim = state["mapping.fc0.weight"].shape[1]
        w_dim = state["mapping.w_avg"].shape[0]
        layers = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"mapping\.fc(\d+)\.weight$", k)))
        resolution = max(int(m.group(1)) for k in state if (m := re.match(r"synthesis\.b(\d+)\.", k)))
        img_channels = state[f"synthesis.b{resolution}.torgb.weight"].shape[0]
        top = state["synthesis.b4.const"].shape[0]
        last = state[f"synthesis.b{resolution}.conv1.weight"].shape[0]
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"not a StyleGAN2 generator state dict (missing {exc})") from None
    # channels(r) = min(base // r, max): the top width is the max, the last resolution's width fixes the base.
    return StyleGAN2Config(z_dim, w_dim, resolution, img_channels, layers, last * resolution, top, conv_clamp)
