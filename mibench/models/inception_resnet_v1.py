"""Inception-ResNet-v1 face embedding (Szegedy et al., AAAI 2017; FaceNet, Schroff et al., CVPR 2015) for δ_face.

PPA and MIBench measure reconstructions by their distance to the private images in the embedding of
facenet-pytorch's `InceptionResnetV1(pretrained='vggface2')` (spec §6.5). facenet-pytorch pins its own torch, so
mibench rebuilds the network with the same module names (`conv2d_1a.conv.weight`, `repeat_1.0.branch2.2.bn.weight`,
..., `last_linear.weight`, `last_bn.running_var`) and loads the released state dict (`20180402-114759-vggface2.pt`)
strictly with `weights_only=True`; its 8,631-identity `logits.*` head is not needed and is dropped.

Layout: stem (3x3/2, 3x3, 3x3, max-pool, 1x1, 3x3, 3x3/2 with BatchNorm eps 1e-3 and ReLU), 5 x Block35
(scale 0.17), Mixed_6a, 10 x Block17 (0.10), Mixed_7a, 5 x Block8 (0.20), a Block8 without ReLU, global average
pool, Linear(1792 -> 512, no bias), BatchNorm1d, L2 normalisation. Inputs: 160x160 faces standardised to [-1, 1].
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from mibench.checkpoints import load_strict, read_state_dict


class BasicConv2d(nn.Module):
    """Convolution (no bias), BatchNorm (eps 1e-3, TensorFlow's), ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Convolution, batch norm, ReLU."""
        return F.relu(self.bn(self.conv(x)))


def _chain(*convs: tuple) -> nn.Sequential:
    return nn.Sequential(*(BasicConv2d(*c) for c in convs))


class Reduction(nn.Module):
    """Parallel branches `branch0`, `branch1`, ... whose outputs are concatenated.

    Used alone for Mixed_6a / Mixed_7a (strided branches and a 3x3/2 max-pool).
    """

    def __init__(self, branches: list[nn.Module]):
        super().__init__()
        for i, branch in enumerate(branches):
            setattr(self, f"branch{i}", branch)
        self.num_branches = len(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenated branch outputs."""
        return torch.cat([getattr(self, f"branch{i}")(x) for i in range(self.num_branches)], 1)


class ResidualInception(Reduction):
    """Block35/17/8: the concatenated branches, 1x1 conv (with bias), scaled residual, optional ReLU."""

    def __init__(self, channels: int, branches: list[nn.Module], mixed: int, scale: float, relu: bool = True):
        super().__init__(branches)
        self.scale, self.relu = scale, relu
        self.conv2d = nn.Conv2d(mixed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The input plus the scaled 1x1 projection of the concatenated branches."""
        out = self.conv2d(super().forward(x)) * self.scale + x
        return F.relu(out) if self.relu else out


def block35(scale: float = 0.17) -> ResidualInception:
    """35x35 grid (256 channels)."""
    branches = [
        BasicConv2d(256, 32, 1),
        _chain((256, 32, 1), (32, 32, 3, 1, 1)),
        _chain((256, 32, 1), (32, 32, 3, 1, 1), (32, 32, 3, 1, 1)),
    ]
    return ResidualInception(256, branches, 96, scale)


def block17(scale: float = 0.10) -> ResidualInception:
    """17x17 grid (896 channels), factorised 7x7."""
    branches = [
        BasicConv2d(896, 128, 1),
        _chain((896, 128, 1), (128, 128, (1, 7), 1, (0, 3)), (128, 128, (7, 1), 1, (3, 0))),
    ]
    return ResidualInception(896, branches, 256, scale)


def block8(scale: float = 0.20, relu: bool = True) -> ResidualInception:
    """8x8 grid (1792 channels), factorised 3x3."""
    branches = [
        BasicConv2d(1792, 192, 1),
        _chain((1792, 192, 1), (192, 192, (1, 3), 1, (0, 1)), (192, 192, (3, 1), 1, (1, 0))),
    ]
    return ResidualInception(1792, branches, 384, scale, relu)


class InceptionResnetV1(nn.Module):
    """160x160 faces in [-1, 1] -> L2-normalised 512-d embeddings (eval mode: no dropout, BN running stats)."""

    def __init__(self):
        super().__init__()
        self.conv2d_1a = BasicConv2d(3, 32, 3, 2)
        self.conv2d_2a = BasicConv2d(32, 32, 3)
        self.conv2d_2b = BasicConv2d(32, 64, 3, 1, 1)
        self.maxpool_3a = nn.MaxPool2d(3, 2)
        self.conv2d_3b = BasicConv2d(64, 80, 1)
        self.conv2d_4a = BasicConv2d(80, 192, 3)
        self.conv2d_4b = BasicConv2d(192, 256, 3, 2)
        self.repeat_1 = nn.Sequential(*(block35() for _ in range(5)))
        self.mixed_6a = Reduction(
            [
                BasicConv2d(256, 384, 3, 2),
                _chain((256, 192, 1), (192, 192, 3, 1, 1), (192, 256, 3, 2)),
                nn.MaxPool2d(3, 2),
            ]
        )
        self.repeat_2 = nn.Sequential(*(block17() for _ in range(10)))
        self.mixed_7a = Reduction(
            [
                _chain((896, 256, 1), (256, 384, 3, 2)),
                _chain((896, 256, 1), (256, 256, 3, 2)),
                _chain((896, 256, 1), (256, 256, 3, 1, 1), (256, 256, 3, 2)),
                nn.MaxPool2d(3, 2),
            ]
        )
        self.repeat_3 = nn.Sequential(*(block8() for _ in range(5)))
        self.block8 = block8(scale=1.0, relu=False)
        self.last_linear = nn.Linear(1792, 512, bias=False)
        self.last_bn = nn.BatchNorm1d(512, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-length 512-d embeddings."""
        for name in ("conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "conv2d_4b"):
            x = getattr(self, name)(x)
        x = self.block8(self.repeat_3(self.mixed_7a(self.repeat_2(self.mixed_6a(self.repeat_1(x))))))
        x = self.last_bn(self.last_linear(x.mean(dim=(2, 3))))
        return F.normalize(x, p=2, dim=1)


def load_facenet_embedding(path: str | Path) -> InceptionResnetV1:
    """The released VGGFace2 embedding network (classification head dropped), strictly loaded, in eval mode."""
    state = read_state_dict(path, what="FaceNet (InceptionResnetV1, VGGFace2) weights")
    state = {k: v for k, v in state.items() if not k.startswith("logits.")}
    model = InceptionResnetV1()
    load_strict(model, state, str(path))
    return model.eval()
