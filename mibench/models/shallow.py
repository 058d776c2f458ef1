"""Shallow targets of Fredrikson et al. (CCS 2015), the setting MI-Face and the MIDAS defense were evaluated in.

`softmax-regression`: one linear layer on the flattened image (the feature is the image itself). `mlp`: one hidden
layer of sigmoid units (3,000 in the paper), then a linear softmax layer.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from mibench.models.base import Classifier, ClassifierOutput
from mibench.params import Params
from mibench.registry import ARCHITECTURES


class SoftmaxRegressionParams(Params):
    """No settings."""


@ARCHITECTURES.register
class SoftmaxRegression(Classifier):
    """Linear softmax classifier on raw pixels."""

    name: ClassVar[str] = "softmax-regression"
    paper: ClassVar[str] = "Fredrikson et al., Model Inversion Attacks that Exploit Confidence Information, CCS 2015"
    Params = SoftmaxRegressionParams

    def __init__(self, num_classes: int, in_channels: int, image_size: int, params: SoftmaxRegressionParams):
        super().__init__(num_classes, in_channels, image_size, params)
        self.fc = nn.Linear(in_channels * image_size * image_size, num_classes)

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        """The pixels are the features."""
        features = x.flatten(1)
        return ClassifierOutput(features, self.fc(features))


class MLPParams(Params):
    """Hidden width (3,000 sigmoid units in Fredrikson et al.)."""

    hidden: int = Field(3000, ge=1)


@ARCHITECTURES.register
class MLP(Classifier):
    """One sigmoid hidden layer and a linear softmax layer."""

    name: ClassVar[str] = "mlp"
    paper: ClassVar[str] = "Fredrikson et al., Model Inversion Attacks that Exploit Confidence Information, CCS 2015"
    Params = MLPParams

    def __init__(self, num_classes: int, in_channels: int, image_size: int, params: MLPParams):
        super().__init__(num_classes, in_channels, image_size, params)
        self.hidden = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, params.hidden), nn.Sigmoid())
        self.fc = nn.Linear(params.hidden, num_classes)

    def hidden_layers(self) -> list[nn.Module]:
        """The sigmoid layer."""
        return [self.hidden]

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        """Sigmoid features and logits."""
        features = self.hidden(x)
        return ClassifierOutput(features, self.fc(features))
