"""Shallow targets of Fredrikson et al. (CCS 2015), the setting MI-Face and the MIDAS defense were evaluated in.

`softmax-regression`: one linear layer on the flattened image (the feature is the image itself). `mlp`: one hidden
layer of sigmoid units (3,000 in the paper), then a linear softmax layer; `activation: none, hidden: 1000,
init: xavier-normal` is the MIDAS shallow notebook's `mlp` (10304 -> 1000 -> 40 with no nonlinearity, Xavier-normal
weights and zero biases from its `weights_init`). Both take rectangular images (AT&T's 112x92).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

from mibench.models.base import Classifier, ClassifierOutput, pixel_count
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
    rectangular_input: ClassVar[bool] = True

    def __init__(
        self, num_classes: int, in_channels: int, image_size: int | tuple[int, int], params: SoftmaxRegressionParams
    ):
        super().__init__(num_classes, in_channels, image_size, params)
        self.fc = nn.Linear(in_channels * pixel_count(image_size), num_classes)

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        """The pixels are the features."""
        features = x.flatten(1)
        return ClassifierOutput(features, self.fc(features))


class MLPParams(Params):
    """Hidden width and activation (3,000 sigmoid units in Fredrikson et al.; 1,000 linear units in MIDAS's)."""

    hidden: int = Field(3000, ge=1)
    activation: Literal["sigmoid", "none"] = "sigmoid"
    init: Literal["torch", "xavier-normal"] = Field("torch", description="xavier-normal: MIDAS's weights_init")


@ARCHITECTURES.register
class MLP(Classifier):
    """One sigmoid hidden layer and a linear softmax layer."""

    name: ClassVar[str] = "mlp"
    paper: ClassVar[str] = "Fredrikson et al., Model Inversion Attacks that Exploit Confidence Information, CCS 2015"
    Params = MLPParams
    rectangular_input: ClassVar[bool] = True

    def __init__(self, num_classes: int, in_channels: int, image_size: int | tuple[int, int], params: MLPParams):
        super().__init__(num_classes, in_channels, image_size, params)
        activation = nn.Sigmoid() if params.activation == "sigmoid" else nn.Identity()
        self.hidden = nn.Sequential(
            nn.Flatten(), nn.Linear(in_channels * pixel_count(image_size), params.hidden), activation
        )
        self.fc = nn.Linear(params.hidden, num_classes)
        if params.init == "xavier-normal":
            for layer in (self.hidden[1], self.fc):
                nn.init.xavier_normal_(layer.weight)
                nn.init.zeros_(layer.bias)

    def hidden_layers(self) -> list[nn.Module]:
        """The sigmoid layer."""
        return [self.hidden]

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        """Sigmoid features and logits."""
        features = self.hidden(x)
        return ClassifierOutput(features, self.fc(features))
