"""The 64x64 face-recognition targets and the 112x112 evaluation model of the GMI/KED-MI/PLG-MI/Trap-MID lineage.

Module names mirror the official code (KED-MI `classify.py`, face.evoLVe `model_irse.py`), so released checkpoints
(`VGG16_88.26.tar`, `FaceNet64_88.50.tar`, `IR152_91.16.tar`, `FaceNet_95.88.tar`) load strictly once their
`module.` prefixes are stripped (`mibench.checkpoints`). Backbones can be initialised from a local ImageNet or
MS-Celeb-1M file (`pretrained:`); nothing is ever downloaded.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torchvision
from pydantic import Field
from torch import nn

from mibench.checkpoints import load_part, read_state_dict
from mibench.models.base import Classifier, ClassifierOutput
from mibench.models.skips import with_skip
from mibench.params import Params
from mibench.registry import ARCHITECTURES


class VGG16Params(Params):
    """`pretrained`: path to torchvision's `vgg16_bn-6c64b313.pth` (ImageNet) to initialise the conv body."""

    pretrained: str | None = None


@ARCHITECTURES.register
class VGG16(Classifier):
    """VGG16-BN body, flatten (2048-d at 64x64), BatchNorm1d with its bias frozen at 0, Linear (spec §2.1).

    The feature is the BN1d output. Hidden layers (BiDO) are the outputs of the first four pooled blocks.
    """

    name: ClassVar[str] = "vgg16"
    paper: ClassVar[str] = "Simonyan & Zisserman 2015; KED-MI/Trap-MID 64x64 head (Chen et al., ICCV 2021)"
    Params = VGG16Params
    transfer_split: ClassVar[int | None] = 26  # TL-DMI classify.json: "freeze_layers": 26 (children 0..26 frozen)

    def __init__(self, num_classes: int, in_channels: int, image_size: int, params: VGG16Params):
        super().__init__(num_classes, in_channels, image_size, params)
        if in_channels != 3:
            raise ValueError("vgg16 takes RGB input (expand grey images to 3 channels)")
        if image_size % 32:
            raise ValueError(f"vgg16 needs an image size divisible by 32 (five 2x poolings), got {image_size}")
        self.feature = torchvision.models.vgg16_bn(weights=None).features
        dim = 512 * (image_size // 32) ** 2
        self.bn = nn.BatchNorm1d(dim)
        self.bn.bias.requires_grad_(False)  # "no shift", as in the official head
        self.fc_layer = nn.Linear(dim, num_classes)
        if params.pretrained:
            load_part(
                self,
                _as_prefixed(
                    read_state_dict(params.pretrained, what="VGG16 ImageNet weights"), "features.", "feature."
                ),
                ("feature.",),
                params.pretrained,
            )

    def transfer_layers(self) -> list[nn.Module]:
        """The 44 children of the VGG16-BN body (13 conv-BN-ReLU triples and 5 max-pools), as TL-DMI counts them."""
        return list(self.feature.children())

    def hidden_layers(self) -> list[nn.Module]:
        """Outputs of the first four max-pool layers."""
        pools = [m for m in self.feature if isinstance(m, nn.MaxPool2d)]
        return pools[:4]

    def bottleneck_input(self, x: torch.Tensor) -> torch.Tensor:
        """The raw flattened 2,048-d body output, before the BN1d: what the official `VGG16_vib` bottleneck reads."""
        return self.feature(x).flatten(1)

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        """BN1d features and logits."""
        features = self.bn(self.feature(x).flatten(1))
        return ClassifierOutput(features, self.fc_layer(features))


def _as_prefixed(state: dict[str, torch.Tensor], old: str, new: str) -> dict[str, torch.Tensor]:
    return {new + k.removeprefix(old): v for k, v in state.items() if k.startswith(old)}


class BottleneckIR(nn.Module):
    """face.evoLVe's IR unit: BN, conv3x3, PReLU, conv3x3 (stride s), BN; shortcut max-pool or conv1x1 + BN."""

    skip_scale: float = 1.0  # the shortcut's factor (RoLSS / SSF: `mibench.models.skips`)

    def __init__(self, in_channels: int, depth: int, stride: int):
        super().__init__()
        if in_channels == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shortcut (times `skip_scale`) plus residual."""
        return with_skip(self.res_layer(x), self.shortcut_layer, x, self.skip_scale)


IR_UNITS = {50: (3, 4, 14, 3), 152: (3, 8, 36, 3)}


class IRBackbone(nn.Module):
    """face.evoLVe IR-50/IR-152 backbone.

    Input layer, four stages (64/128/256/512 channels, first unit of each with stride 2), output layer
    BN2d -> Dropout -> Flatten -> Linear(512 r^2, 512) -> BN1d with r = image_size / 16 (4 at 64, 7 at 112).
    """

    def __init__(self, depth: int, image_size: int, dropout: float = 0.5):
        super().__init__()
        if image_size % 16:
            raise ValueError(f"IR backbones need an image size divisible by 16, got {image_size}")
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units, channels = [], 64
        for width, count in zip((64, 128, 256, 512), IR_UNITS[depth], strict=True):
            units += [BottleneckIR(channels, width, 2)] + [BottleneckIR(width, width, 1) for _ in range(count - 1)]
            channels = width
        self.body = nn.Sequential(*units)
        r = image_size // 16
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512), nn.Dropout(dropout), nn.Flatten(), nn.Linear(512 * r * r, 512), nn.BatchNorm1d(512)
        )
        for m in self.modules():  # official init: xavier for convs and linears, BN weight 1 bias 0
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The 512-d feature."""
        return self.output_layer(self.body(self.input_layer(x)))


class IRParams(Params):
    """Optional MS-Celeb-1M initialisation and the head's dropout.

    `pretrained` names a face.evoLVe backbone file (e.g. `backbone_ir50_ms1m_epoch120.pth`): its input layer and
    body initialise ours, and its output layer too when the resolution matches (112x112).
    """

    pretrained: str | None = None
    dropout: float = Field(0.5, ge=0, lt=1)


class IRNet(Classifier):
    """IR backbone (512-d feature) and `fc_layer` Linear(512, K), as KED-MI's FaceNet64 / IR152 / FaceNet."""

    depth: ClassVar[int] = 50
    Params = IRParams
    vib_bottleneck: ClassVar[int | None] = 512  # Trap-MID App. C.6: "bottleneck size of 512" for the IR targets
    dependency_on_feature: ClassVar[bool] = False  # BiDO on "the four major ResNet blocks" (App. C.6)

    def __init__(self, num_classes: int, in_channels: int, image_size: int, params: IRParams):
        super().__init__(num_classes, in_channels, image_size, params)
        if in_channels != 3:
            raise ValueError(f"{self.name} takes RGB input (expand grey images to 3 channels)")
        self.feature = IRBackbone(self.depth, image_size, params.dropout)
        self.fc_layer = nn.Linear(512, num_classes)
        if params.pretrained:
            state = _as_prefixed(read_state_dict(params.pretrained, what="IR backbone"), "", "feature.")
            prefixes = ("feature.input_layer.", "feature.body.")
            if image_size == 112:
                prefixes += ("feature.output_layer.",)
            load_part(self, state, prefixes, params.pretrained)

    @classmethod
    def from_official_names(cls, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """KED-MI's FaceNet64 and IR152 keep the output layer beside the backbone (`output_layer.*`), mibench inside it.

        (Its 112x112 FaceNet evaluator keeps it inside, as mibench does: those names pass unchanged.)
        """
        return {f"feature.{k}" if k.startswith("output_layer.") else k: v for k, v in state.items()}

    def transfer_layers(self) -> list[nn.Module]:
        """The IR body's bottleneck units, as TL-DMI counts them."""
        return list(self.feature.body.children())

    def transfer_stem(self) -> nn.Module | None:
        """The input layer (conv, BN, PReLU) before the body."""
        return self.feature.input_layer

    def residual_stages(self) -> list[list[nn.Module]]:
        """The IR units of each of the four stages."""
        units, start = list(self.feature.body.children()), 0
        stages = []
        for count in IR_UNITS[self.depth]:
            stages.append(units[start : start + count])
            start += count
        return stages

    def hidden_layers(self) -> list[nn.Module]:
        """The last unit of each of the four stages."""
        return [stage[-1] for stage in self.residual_stages()]

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        """512-d features and logits."""
        features = self.feature(x)
        return ClassifierOutput(features, self.fc_layer(features))


@ARCHITECTURES.register
class FaceNet64(IRNet):
    """IR-50 at 64x64, the "FaceNet64" / Face.evoLVe target (spec §2.2; `FaceNet64_88.50.tar`)."""

    name: ClassVar[str] = "facenet64"
    paper: ClassVar[str] = "Deng et al., ArcFace IR-50 (face.evoLVe); MI target of KED-MI/PLG-MI/Trap-MID"
    transfer_split: ClassVar[int | None] = 5  # TL-DMI classify.json: FaceNet64 "freeze_layers": 5


@ARCHITECTURES.register
class IR152(IRNet):
    """IR-152 at 64x64, the "IR152" / ResNet-152 target (spec §2.3; `IR152_91.16.tar`)."""

    name: ClassVar[str] = "ir152"
    paper: ClassVar[str] = "Deng et al., ArcFace IR-152 (face.evoLVe); MI target of KED-MI/PLG-MI/Trap-MID"
    transfer_split: ClassVar[int | None] = 46  # TL-DMI classify.json: IR152 "freeze_layers": 46
    depth: ClassVar[int] = 152


@ARCHITECTURES.register
class FaceNet(IRNet):
    """IR-50 at 112x112, the evaluation model "FaceNet" (spec §2.4; `FaceNet_95.88.tar`); set input_size: 112."""

    name: ClassVar[str] = "facenet"
    paper: ClassVar[str] = "Deng et al., ArcFace IR-50 (face.evoLVe); MI evaluation model since GMI (CVPR 2020)"
