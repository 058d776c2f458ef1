"""EfficientNet-B0/B1/B2: LOMMA's knowledge-distilled student models (Nguyen et al., CVPR 2023; spec §5.2).

torchvision's `features` and average pool, flattened (1280, 1280, 1408 dims), then a new linear head. The inputs are
the [0, 1] images at the data's resolution with no ImageNet normalisation, as in LOMMA's code. LOMMA starts the
students from ImageNet weights; give torchvision's file (`efficientnet_b0_rwightman-7f5810bc.pth`,
`efficientnet_b1_rwightman-bac287d4.pth`, `efficientnet_b2_rwightman-c35c1473.pth`) as `pretrained`: nothing is
downloaded, and without it the students start from random weights.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torchvision
from torch import nn

from mibench.checkpoints import load_part, read_state_dict
from mibench.models.base import Classifier, ClassifierOutput
from mibench.params import Params
from mibench.registry import ARCHITECTURES


class EfficientNetParams(Params):
    """`pretrained`: path to torchvision's ImageNet file for this variant (initialises `features`)."""

    pretrained: str | None = None


class _EfficientNet(Classifier):
    variant: ClassVar[str]
    Params = EfficientNetParams

    def __init__(self, num_classes: int, in_channels: int, image_size: int, params: EfficientNetParams):
        super().__init__(num_classes, in_channels, image_size, params)
        if in_channels != 3:
            raise ValueError(f"{self.name} takes RGB input (expand grey images to 3 channels)")
        body = getattr(torchvision.models, f"efficientnet_{self.variant}")(weights=None)
        self.features = body.features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(body.classifier[1].in_features, num_classes)
        if params.pretrained:
            state = read_state_dict(params.pretrained, what=f"{self.name} ImageNet weights")
            load_part(self, state, ("features.",), params.pretrained)

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        """Pooled features and logits."""
        features = self.pool(self.features(x)).flatten(1)
        return ClassifierOutput(features, self.fc(features))


@ARCHITECTURES.register
class EfficientNetB0(_EfficientNet):
    """EfficientNet-B0 student (1280-d features)."""

    name: ClassVar[str] = "efficientnet-b0"
    paper: ClassVar[str] = "Tan & Le, EfficientNet, ICML 2019 (LOMMA student)"
    variant: ClassVar[str] = "b0"


@ARCHITECTURES.register
class EfficientNetB1(_EfficientNet):
    """EfficientNet-B1 student (1280-d features)."""

    name: ClassVar[str] = "efficientnet-b1"
    paper: ClassVar[str] = "Tan & Le, EfficientNet, ICML 2019 (LOMMA student)"
    variant: ClassVar[str] = "b1"


@ARCHITECTURES.register
class EfficientNetB2(_EfficientNet):
    """EfficientNet-B2 student (1408-d features)."""

    name: ClassVar[str] = "efficientnet-b2"
    paper: ClassVar[str] = "Tan & Le, EfficientNet, ICML 2019 (LOMMA student)"
    variant: ClassVar[str] = "b2"
