"""torchvision ImageNet architectures as MI targets and evaluation models at 224x224 (PPA's setting).

PPA (Struppek et al., ICML 2022) attacks ResNet-18/101/152, DenseNet-121/169 and ResNeSt targets trained on
224x224 CelebA crops, and evaluates with an Inception-v3 trained on the same identities at 299x299; Trap-MID's
Table 19 uses ResNet-152, DenseNet-169 and ResNeSt-101 (not in torchvision: `mibench.models.resnest`). Each
network is torchvision's body with its ImageNet head replaced by a new linear layer over the pooled features (2048-d
for ResNet-101/152 and Inception-v3, 512 for ResNet-18, 1024/1664 for DenseNet-121/169).

Inputs: mibench passes [0, 1] images; PPA normalises with mean = std = 0.5 (inputs in [-1, 1], StyleGAN's range), so
`input_mean` / `input_std` default to 0.5. `pretrained` names torchvision's ImageNet file (e.g.
`resnet152-394f9c45.pth`, `densenet169-b2777c0a.pth`, `inception_v3_google-0cc3c7bd.pth`) to initialise the body, as
PPA trains from ImageNet weights; nothing is downloaded, and DenseNet files in the old key format are remapped.
"""

from __future__ import annotations

import re
from typing import ClassVar

import torch
import torchvision
from pydantic import Field
from torch import nn

from mibench.checkpoints import load_part, read_state_dict
from mibench.models.base import Classifier, ClassifierOutput
from mibench.params import Params
from mibench.registry import ARCHITECTURES

# torchvision's DenseNet files predate its module names: `denselayer1.norm.1.weight` is now `denselayer1.norm1.weight`.
_OLD_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)


class ImageNetParams(Params):
    """Input normalisation (PPA's mean = std = 0.5 by default) and an optional torchvision ImageNet file."""

    pretrained: str | None = Field(None, description="torchvision ImageNet weights file for the body")
    input_mean: float = 0.5
    input_std: float = Field(0.5, gt=0)


class _TorchvisionClassifier(Classifier):
    """torchvision body (head removed) -> pooled features -> new linear head."""

    Params = ImageNetParams
    builder: ClassVar[str]
    head: ClassVar[str]  # the attribute holding torchvision's classifier
    min_size: ClassVar[int] = 32

    def __init__(self, num_classes: int, in_channels: int, image_size: int, params: ImageNetParams):
        super().__init__(num_classes, in_channels, image_size, params)
        if in_channels != 3:
            raise ValueError(f"{self.name} takes RGB input (expand grey images to 3 channels)")
        if image_size < self.min_size:
            raise ValueError(f"{self.name} needs inputs of at least {self.min_size}x{self.min_size}, got {image_size}")
        self.body = self.build_body()
        old_head = getattr(self.body, self.head)
        setattr(self.body, self.head, nn.Identity())
        self.fc = nn.Linear(old_head.in_features, num_classes)
        if params.pretrained:
            state = read_state_dict(params.pretrained, what=f"{self.name} ImageNet weights")
            state = {"body." + _OLD_DENSENET_KEY.sub(r"\1\2", k): v for k, v in state.items()}
            load_part(self, state, ("body.",), params.pretrained, exclude=self.new_heads)

    # Submodules of the body replaced for the new classes (not initialised from ImageNet files).
    new_heads: ClassVar[tuple[str, ...]] = ()

    def build_body(self) -> nn.Module:
        """The torchvision network, randomly initialised."""
        return getattr(torchvision.models, self.builder)(weights=None)

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        """Pooled body features and logits of [0, 1] images (and auxiliary logits where the body gives them)."""
        p: ImageNetParams = self.params
        out = self.body((x - p.input_mean) / p.input_std)
        if isinstance(out, torchvision.models.InceptionOutputs):  # training with the auxiliary classifier
            return ClassifierOutput(out.logits, self.fc(out.logits), out.aux_logits)
        return ClassifierOutput(out, self.fc(out))


class _ResNet(_TorchvisionClassifier):
    head: ClassVar[str] = "fc"

    def hidden_layers(self) -> list[nn.Module]:
        """The four residual stages."""
        return [self.body.layer1, self.body.layer2, self.body.layer3, self.body.layer4]

    def residual_stages(self) -> list[list[nn.Module]]:
        """The blocks of `layer1` .. `layer4`."""
        return [list(stage) for stage in self.hidden_layers()]


class DenseNetParams(ImageNetParams):
    """ImageNetParams, and whether the head reads the pooled feature or the flattened feature map."""

    pool: bool = Field(
        True,
        description="false: a linear head on the flattened norm5 map (no final ReLU, no global pooling), as LOKT's "
        "authors' surrogates (`nn.Sequential(*children()[:-1])`, 4096-d for DenseNet-121 at 64x64)",
    )


def densenet_map_side(image_size: int) -> int:
    """Side of a DenseNet's last feature map: conv0 (7x7, stride 2, pad 3), max-pool (3x3, 2, 1), 3 x avg-pool 2."""
    side = (image_size - 1) // 2 + 1
    side = (side - 1) // 2 + 1
    for _ in range(3):
        side //= 2
    return side


class _DenseNet(_TorchvisionClassifier):
    Params = DenseNetParams
    head: ClassVar[str] = "classifier"

    def __init__(self, num_classes: int, in_channels: int, image_size: int, params: DenseNetParams):
        super().__init__(num_classes, in_channels, image_size, params)
        if not params.pool:
            channels = self.fc.in_features
            self.fc = nn.Linear(channels * densenet_map_side(image_size) ** 2, num_classes)

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        """Pooled features (or, with `pool: false`, the flattened norm5 map) and logits of [0, 1] images."""
        p: DenseNetParams = self.params
        if p.pool:
            return super().forward(x)
        features = self.body.features((x - p.input_mean) / p.input_std).flatten(1)
        return ClassifierOutput(features, self.fc(features))

    def hidden_layers(self) -> list[nn.Module]:
        """The four dense blocks."""
        f = self.body.features
        return [f.denseblock1, f.denseblock2, f.denseblock3, f.denseblock4]


@ARCHITECTURES.register
class ResNet18(_ResNet):
    """ResNet-18 (512-d features)."""

    name: ClassVar[str] = "resnet18"
    paper: ClassVar[str] = "He et al., Deep Residual Learning, CVPR 2016 (PPA target)"
    builder: ClassVar[str] = "resnet18"


@ARCHITECTURES.register
class ResNet101(_ResNet):
    """ResNet-101 (2048-d features)."""

    name: ClassVar[str] = "resnet101"
    paper: ClassVar[str] = "He et al., Deep Residual Learning, CVPR 2016 (PPA target)"
    builder: ClassVar[str] = "resnet101"


@ARCHITECTURES.register
class ResNet152(_ResNet):
    """ResNet-152 (2048-d features), a Trap-MID Table 19 target."""

    name: ClassVar[str] = "resnet152"
    paper: ClassVar[str] = "He et al., Deep Residual Learning, CVPR 2016 (PPA / Trap-MID Table 19 target)"
    builder: ClassVar[str] = "resnet152"


@ARCHITECTURES.register
class DenseNet121(_DenseNet):
    """DenseNet-121 (1024-d features)."""

    name: ClassVar[str] = "densenet121"
    paper: ClassVar[str] = "Huang et al., Densely Connected Convolutional Networks, CVPR 2017 (PPA target)"
    builder: ClassVar[str] = "densenet121"


@ARCHITECTURES.register
class DenseNet161(_DenseNet):
    """DenseNet-161 (2208-d features), one of LOKT's surrogates."""

    name: ClassVar[str] = "densenet161"
    paper: ClassVar[str] = "Huang et al., Densely Connected Convolutional Networks, CVPR 2017 (LOKT surrogate)"
    builder: ClassVar[str] = "densenet161"


@ARCHITECTURES.register
class DenseNet169(_DenseNet):
    """DenseNet-169 (1664-d features), a Trap-MID Table 19 target."""

    name: ClassVar[str] = "densenet169"
    paper: ClassVar[str] = "Huang et al., Densely Connected Convolutional Networks, CVPR 2017 (Trap-MID Table 19)"
    builder: ClassVar[str] = "densenet169"


class InceptionParams(ImageNetParams):
    """PPA trains its Inception-v3 evaluator with the auxiliary classifier (its loss added with weight 1)."""

    aux_logits: bool = True


@ARCHITECTURES.register
class InceptionV3(_TorchvisionClassifier):
    """Inception-v3 at 299x299 (2048-d features), PPA's evaluation model, with its auxiliary classifier in training."""

    name: ClassVar[str] = "inception-v3"
    paper: ClassVar[str] = "Szegedy et al., Rethinking the Inception Architecture, CVPR 2016 (PPA evaluation model)"
    Params = InceptionParams
    head: ClassVar[str] = "fc"
    min_size: ClassVar[int] = 75
    new_heads: ClassVar[tuple[str, ...]] = ("body.AuxLogits.fc.",)

    def __init__(self, num_classes: int, in_channels: int, image_size: int, params: InceptionParams):
        if params.aux_logits and image_size < 299:
            raise ValueError(
                f"inception-v3's auxiliary classifier needs 299x299 inputs, got {image_size}; "
                "set params: {aux_logits: false} for smaller ones"
            )
        super().__init__(num_classes, in_channels, image_size, params)

    def build_body(self) -> nn.Module:
        """Without torchvision's input transform; the auxiliary classifier gets a head for the new classes.

        Normalisation is `input_mean` / `input_std`; the auxiliary classifier is active in training mode only.
        """
        aux = self.params.aux_logits
        body = torchvision.models.inception_v3(weights=None, aux_logits=aux, init_weights=True, transform_input=False)
        if aux:
            body.AuxLogits.fc = nn.Linear(body.AuxLogits.fc.in_features, self.num_classes)
        return body

    def hidden_layers(self) -> list[nn.Module]:
        """The last block of each grid size."""
        return [self.body.Mixed_5d, self.body.Mixed_6e, self.body.Mixed_7c]
