"""IR18: the ResNet-18 target of Trap-MID's MNIST setting (ntuaislab/Trap-MID @ HEAD, `classify.py` `IR18`).

torchvision's ResNet-18 body (ImageNet weights in the official code: `resnet18(pretrained=True)`), its global
average pool as the 512-d feature, and a new `fc_layer`. Inputs are [0, 1] images with no normalisation, as the
official MNIST loader gives them (grey digits expanded to three channels at 64x64). BiDO's variant (`IR18_BiDO`)
regularises the outputs of the four residual stages, not the pooled feature.
"""

from __future__ import annotations

from typing import ClassVar

import torchvision
from torch import nn

from mibench.checkpoints import load_part, read_state_dict
from mibench.models.base import Classifier, ClassifierOutput
from mibench.params import Params
from mibench.registry import ARCHITECTURES


class IR18Params(Params):
    """`pretrained`: path to torchvision's `resnet18-f37072fd.pth` (ImageNet), as the official `pretrained=True`."""

    pretrained: str | None = None


@ARCHITECTURES.register
class IR18(Classifier):
    """ResNet-18 body, 512-d pooled feature, linear head (Trap-MID's MNIST target)."""

    name: ClassVar[str] = "ir18"
    paper: ClassVar[str] = "He et al., ResNet-18 (CVPR 2016); the MNIST target of Trap-MID (Liu & Chen, NeurIPS 2024)"
    Params = IR18Params
    rectangular_input: ClassVar[bool] = True  # adaptive average pooling
    dependency_on_feature: ClassVar[bool] = False  # IR18_BiDO: the four stages only

    def __init__(self, num_classes: int, in_channels: int, image_size: int, params: IR18Params):
        super().__init__(num_classes, in_channels, image_size, params)
        if in_channels != 3:
            raise ValueError("ir18 takes RGB input (expand grey images to 3 channels, as the official MNIST loader)")
        self.body = torchvision.models.resnet18(weights=None)
        if params.pretrained:
            state = read_state_dict(params.pretrained, what="ResNet-18 ImageNet weights")
            load_part(self.body, state, ("conv1.", "bn1.", "layer"), params.pretrained)
        self.body.fc = nn.Identity()
        self.fc_layer = nn.Linear(512, num_classes)

    def hidden_layers(self) -> list[nn.Module]:
        """The four residual stages (`IR18_BiDO`'s hiddens)."""
        return [self.body.layer1, self.body.layer2, self.body.layer3, self.body.layer4]

    def transfer_layers(self) -> list[nn.Module]:
        """Stem modules, then the four stages (TL-DMI publishes no split for it)."""
        b = self.body
        return [b.conv1, b.bn1, b.layer1, b.layer2, b.layer3, b.layer4]

    def forward(self, x):
        """512-d pooled features and logits."""
        features = self.body(x)
        return ClassifierOutput(features, self.fc_layer(features))
