"""Tiny networks for CPU tests and the smoke suite.

The target (`tiny-cnn`) and the evaluation model (`tiny-resnet`) deliberately differ in architecture, as the MI
protocol requires the evaluator to be a separate, different network (GMI, Zhang et al. CVPR 2020, Sec. 4).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from mibench.models.base import Classifier, ClassifierOutput
from mibench.models.skips import with_skip
from mibench.params import Params
from mibench.registry import ARCHITECTURES


class TinyCNNParams(Params):
    """Width of the tiny CNN."""

    width: int = Field(16, ge=1)
    feature_dim: int = Field(64, ge=1)


@ARCHITECTURES.register
class TinyCNN(Classifier):
    """Two conv-pool stages and a linear feature layer; the smoke suite's target."""

    name: ClassVar[str] = "tiny-cnn"
    paper: ClassVar[str] = "mibench test model (no paper)"
    Params = TinyCNNParams
    transfer_split: ClassVar[int | None] = 2

    def __init__(self, num_classes: int, in_channels: int, image_size: int, params: TinyCNNParams):
        super().__init__(num_classes, in_channels, image_size, params)
        w = params.width
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        flat = 2 * w * (image_size // 4) ** 2
        self.feature = nn.Sequential(nn.Linear(flat, params.feature_dim), nn.BatchNorm1d(params.feature_dim), nn.ReLU())
        self.head = nn.Linear(params.feature_dim, num_classes)

    def transfer_layers(self) -> list[nn.Module]:
        """conv, ReLU, pool, conv, ReLU, pool, flatten (TL-DMI freezes the first stage: mibench's split)."""
        return list(self.body.children())

    def hidden_layers(self) -> list[nn.Module]:
        """The two pooled conv stages."""
        return [self.body[2], self.body[5]]

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        """Features after the linear layer, then logits."""
        features = self.feature(self.body(x))
        return ClassifierOutput(features, self.head(features))


class TinyResNetParams(Params):
    """Width, depth and feature size of the tiny residual network."""

    width: int = Field(16, ge=1)
    blocks: int = Field(2, ge=1)
    feature_dim: int = Field(64, ge=1)


class _ResidualBlock(nn.Module):
    skip_scale: float = 1.0  # the shortcut's factor (RoLSS / SSF: `mibench.models.skips`)

    def __init__(self, channels: int):
        super().__init__()
        self.branch = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.PReLU(channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return with_skip(self.branch(x), None, x, self.skip_scale)


@ARCHITECTURES.register
class TinyResNet(Classifier):
    """IR-style residual blocks and an IR-50-like output layer; the smoke suite's evaluation model.

    Stem (conv stride 2, BN, PReLU), residual blocks, a strided conv to a 4x4 map, then BN2d -> flatten ->
    Linear -> BN1d as the feature (the shape of FaceNet's output layer, spec §2.2), then the classifier.
    """

    name: ClassVar[str] = "tiny-resnet"
    paper: ClassVar[str] = "mibench test model (no paper)"
    Params = TinyResNetParams
    rectangular_input: ClassVar[bool] = True  # the adaptive pooling takes any height and width
    transfer_split: ClassVar[int | None] = 0

    def __init__(self, num_classes: int, in_channels: int, image_size: int, params: TinyResNetParams):
        super().__init__(num_classes, in_channels, image_size, params)
        w = params.width
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.PReLU(w))
        self.blocks = nn.Sequential(*[_ResidualBlock(w) for _ in range(params.blocks)])
        self.reduce = nn.AdaptiveAvgPool2d(4)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(w), nn.Flatten(), nn.Linear(w * 16, params.feature_dim), nn.BatchNorm1d(params.feature_dim)
        )
        self.head = nn.Linear(params.feature_dim, num_classes)

    def transfer_layers(self) -> list[nn.Module]:
        """The stem, then each residual block (TL-DMI freezes the stem: mibench's split)."""
        return [self.stem, *self.blocks]

    def residual_stages(self) -> list[list[nn.Module]]:
        """One stage: every residual block (no downsampling between them)."""
        return [list(self.blocks)]

    def hidden_layers(self) -> list[nn.Module]:
        """The stem and every residual block."""
        return [self.stem, *self.blocks]

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        """Output-layer features, then logits."""
        features = self.output_layer(self.reduce(self.blocks(self.stem(x))))
        return ClassifierOutput(features, self.head(features))
