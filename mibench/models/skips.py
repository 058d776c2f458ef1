"""Scaling or removing the additive skip connections of residual networks (RoLSS / SSF, Koh et al., ECCV 2024).

A residual block computes `post(branch(x) + shortcut(x))`. Koh et al. ("On the Vulnerability of Skip Connections to
Model Inversion Attacks") show that the shortcut lets an inversion's gradient bypass the branch, and that the last
stage's shortcuts matter most. The released code (Pillowkoh/RoLSS @ 304b147,
`models/torchvision/models/resnet.py` `BasicBlock` / `Bottleneck`) multiplies the shortcut by a per-stage factor and
skips it entirely when the factor is 0 (`if self.skip: out += self.skip * identity`, the projection included).

mibench does the same to any block with a `skip_scale` attribute: its own residual blocks (tiny-resnet, the IR
units) read it, and torchvision's two ResNet blocks are switched to subclasses that do (`scale_block`), so state-dict
names stay the same (ImageNet weights, a TTS first stage and cached targets all load unchanged).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck


def with_skip(branch: torch.Tensor, shortcut: nn.Module | None, x: torch.Tensor, scale: float) -> torch.Tensor:
    """`branch + scale * shortcut(x)`; the shortcut is not computed at scale 0, as the official `if self.skip:`."""
    if scale == 0:
        return branch
    identity = x if shortcut is None else shortcut(x)
    return branch + identity if scale == 1 else branch + scale * identity


class _ScaledBasicBlock(BasicBlock):
    """torchvision's BasicBlock with its shortcut multiplied by `skip_scale`."""

    skip_scale: float = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(with_skip(out, self.downsample, x, self.skip_scale))


class _ScaledBottleneck(Bottleneck):
    """torchvision's Bottleneck with its shortcut multiplied by `skip_scale`."""

    skip_scale: float = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(with_skip(out, self.downsample, x, self.skip_scale))


_TORCHVISION = {BasicBlock: _ScaledBasicBlock, Bottleneck: _ScaledBottleneck}


def scale_block(block: nn.Module, scale: float) -> None:
    """Multiply `block`'s shortcut by `scale` (0 removes it); torchvision blocks become their scaled subclasses."""
    scaled = _TORCHVISION.get(type(block))
    if scaled is not None:
        block.__class__ = scaled
    if not hasattr(type(block), "skip_scale"):
        raise TypeError(f"{type(block).__name__} has no scalable skip connection")
    block.skip_scale = float(scale)


def stage_scales_per_block(
    stages: list[list[nn.Module]], scales: list[float], stage3_split: float
) -> list[tuple[nn.Module, float]]:
    """(block, factor) for every block: its stage's factor, with one exception.

    With four or more stages, the blocks of the third from `int(stage3_split * n)` on (never its first) get 0, as
    the released `_make_layer(..., split=0.8)` does for `layer3` of every ResNet.
    """
    pairs = []
    for index, (blocks, scale) in enumerate(zip(stages, scales, strict=True)):
        split = int(stage3_split * len(blocks)) if index == 2 and len(stages) >= 4 else len(blocks)
        pairs += [(block, scale if i < max(split, 1) else 0.0) for i, block in enumerate(blocks)]
    return pairs
