"""ResNeSt-101 (Zhang et al., "ResNeSt: Split-Attention Networks", CVPR-W 2022), a PPA / Trap-MID Table 19 target.

PPA loads `resnest101` from the authors' torch.hub repository (zhanghang1989/ResNeSt) with ImageNet weights
(`resnest101-22405ba7.pth`). torchvision has no ResNeSt, so mibench rebuilds that network with the same module
names (`conv1.0.weight`, `layer3.22.conv2.fc1.bias`, `layer2.0.downsample.1.weight`, ...) so the released file
loads strictly as `pretrained`:

* deep stem: three 3x3 convolutions (64, 64, 128 channels; the first with stride 2), BN + ReLU between, then BN,
  ReLU, 3x3/2 max-pool;
* bottlenecks [3, 4, 23, 3] with split-attention 3x3 convolutions (radix 2, cardinality 1, reduction 4, at least
  32 attention channels), the stride taken by a 3x3 average pool after the split-attention ("avd"), and
  average-pool shortcuts ("avg_down": AvgPool(stride, ceil_mode, no padding count) then 1x1 conv + BN);
* global average pool, 2048-d features, linear head.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mibench.models.imagenet import _ResNet
from mibench.registry import ARCHITECTURES


class SplitAttentionConv(nn.Module):
    """3x3 convolution into `radix` splits, weighted by a softmax over splits of a squeeze-excitation of their sum."""

    def __init__(self, channels: int, stride: int, radix: int = 2, reduction: int = 4):
        super().__init__()
        inter = max(channels * radix // reduction, 32)
        self.radix = radix
        self.conv = nn.Conv2d(channels, channels * radix, 3, stride, 1, groups=radix, bias=False)
        self.bn0 = nn.BatchNorm2d(channels * radix)
        self.fc1 = nn.Conv2d(channels, inter, 1)
        self.bn1 = nn.BatchNorm2d(inter)
        self.fc2 = nn.Conv2d(inter, channels * radix, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sum over splits of softmax(attention) x split."""
        splits = F.relu(self.bn0(self.conv(x))).chunk(self.radix, dim=1)
        gap = F.adaptive_avg_pool2d(sum(splits), 1)
        attention = self.fc2(F.relu(self.bn1(self.fc1(gap))))  # N x (radix * C) x 1 x 1, split-major
        attention = attention.view(x.shape[0], self.radix, -1).softmax(dim=1)
        return sum(a.view(x.shape[0], -1, 1, 1) * s for a, s in zip(attention.unbind(1), splits, strict=True))


class SplitAttentionBottleneck(nn.Module):
    """1x1 -> split-attention 3x3 -> (3x3 average pool when striding) -> 1x1 (x4), plus the shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None, pool: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = SplitAttentionConv(planes, 1 if pool else stride)
        self.avd_layer = nn.AvgPool2d(3, stride, padding=1) if pool else None
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ReLU(residual + shortcut)."""
        out = self.conv2(F.relu(self.bn1(self.conv1(x))))
        if self.avd_layer is not None:
            out = self.avd_layer(out)
        out = self.bn3(self.conv3(out))
        return F.relu(out + (self.downsample(x) if self.downsample is not None else x))


class ResNeStNet(nn.Module):
    """The ResNeSt body with torchvision-like `fc` (replaced by the classifier's own head)."""

    def __init__(self, layers: tuple[int, ...] = (3, 4, 23, 3), stem_width: int = 64, num_classes: int = 1000):
        super().__init__()
        w = stem_width
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, w, 3, 2, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
            nn.Conv2d(w, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, 1, 1, bias=False),
        )  # fmt: skip
        self.bn1 = nn.BatchNorm2d(2 * w)
        self.inplanes = 2 * w
        stages = []
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            stages.append(self._stage(planes, blocks, stride=1 if i == 0 else 2, first_pools=i > 0))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(2048, num_classes)
        for m in self.modules():  # the official initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, (2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)) ** 0.5)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _stage(self, planes: int, blocks: int, stride: int, first_pools: bool) -> nn.Sequential:
        downsample = nn.Sequential(
            nn.AvgPool2d(stride, stride, ceil_mode=True, count_include_pad=False),
            nn.Conv2d(self.inplanes, planes * 4, 1, bias=False),
            nn.BatchNorm2d(planes * 4),
        )
        layers = [SplitAttentionBottleneck(self.inplanes, planes, stride, downsample, pool=first_pools)]
        self.inplanes = planes * 4
        layers += [SplitAttentionBottleneck(self.inplanes, planes, 1, None, pool=False) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the `fc` head (pooled features when it is an identity)."""
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean(dim=(2, 3)))


@ARCHITECTURES.register
class ResNeSt101(_ResNet):
    """ResNeSt-101 (2048-d features), a Trap-MID Table 19 target; `pretrained`: resnest101-22405ba7.pth."""

    name: ClassVar[str] = "resnest101"
    paper: ClassVar[str] = "Zhang et al., ResNeSt: Split-Attention Networks, CVPR-W 2022 (PPA / Trap-MID Table 19)"

    def build_body(self) -> nn.Module:
        """The split-attention network, randomly initialised."""
        return ResNeStNet()
