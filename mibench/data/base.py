"""In-memory image sets and the dataset plug-in interface.

Images are kept as uint8 tensors (N, C, H, W) so that a 30k-image 64x64 set costs 370 MB rather than 1.5 GB, and are
turned into float [0, 1] batches on the device. No mean/std normalisation happens here: every model in the 64x64
family takes [0, 1] RGB, and a model that expects otherwise normalises inside its own forward.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from mibench.params import Params

UNLABELLED = -1


@dataclass(frozen=True)
class ImageSet:
    """Images (uint8, N x C x H x W) with integer labels (`UNLABELLED` for public data)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            shape = tuple(self.images.shape)
            raise ValueError(f"ImageSet images must be uint8 N x C x H x W, got {self.images.dtype} {shape}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("ImageSet labels must have one entry per image")

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, mask_or_index: torch.Tensor) -> ImageSet:
        """The images selected by a boolean mask or an index tensor."""
        return ImageSet(self.images[mask_or_index], self.labels[mask_or_index])

    def of_classes(self, classes: torch.Tensor) -> ImageSet:
        """The images whose label is in `classes`."""
        return self.subset(torch.isin(self.labels, classes))


def select_private(train: ImageSet, test: ImageSet, indices: torch.Tensor) -> ImageSet:
    """The images at `indices` of the private training set followed by the test set, without concatenating them.

    The order `Reconstructions.victims` and `TargetOracle.victim_indices` use.
    """
    in_train = indices < len(train)
    images = torch.empty(len(indices), *train.images.shape[1:], dtype=torch.uint8)
    labels = torch.empty(len(indices), dtype=torch.long)
    images[in_train], labels[in_train] = train.images[indices[in_train]], train.labels[indices[in_train]]
    rest = indices[~in_train] - len(train)
    images[~in_train], labels[~in_train] = test.images[rest], test.labels[rest]
    return ImageSet(images, labels)


@dataclass(frozen=True)
class DataBundle:
    """What one suite's `data:` section yields: identity-disjoint private and public parts at one resolution."""

    private_train: ImageSet
    private_test: ImageSet
    public: ImageSet
    num_classes: int
    name: str
    # Identity labels of the public images, for a defender that pre-trains on them (TL-DMI's public pre-training);
    # attacks never see them (`public.labels` stays unlabelled). None when the dataset does not know them.
    public_identities: torch.Tensor | None = None

    @property
    def channels(self) -> int:
        """Image channels."""
        return self.private_train.images.shape[1]

    @property
    def image_size(self) -> int | tuple[int, int]:
        """Side of square images, or (height, width) of rectangular ones (what `build_classifier` takes)."""
        height, width = self.private_train.images.shape[-2:]
        return width if height == width else (height, width)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        c, h, w = self.private_train.images.shape[1:]
        return (c, h, w)


class Dataset(ABC):
    """A registered dataset: turns a root folder, a resolution and its `Params` into a `DataBundle`.

    Implementations must be deterministic: the same arguments give the same tensors, because cache keys hash the
    arguments, not the data.
    """

    name: ClassVar[str]
    paper: ClassVar[str]
    version: ClassVar[int] = 1
    Params: ClassVar[type[Params]]
    needs_root: ClassVar[bool] = True
    rectangular: ClassVar[bool] = False  # whether `image_size` may be (height, width)

    @classmethod
    def class_count(cls, params: Params) -> int | None:
        """How many private classes these parameters give, when known without reading data (validation)."""
        return None

    def __init__(self, params: Params):
        self.params = params

    @abstractmethod
    def load(self, root: Path | None, image_size: int, cache_dir: Path) -> DataBundle:
        """Build the bundle; `cache_dir` may hold preprocessed tensors between runs."""

    def load_public(self, root: Path | None, image_size: int, cache_dir: Path) -> ImageSet:
        """Only the public part, when this dataset serves as another suite's auxiliary data (e.g. FFHQ)."""
        return self.load(root, image_size, cache_dir).public


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """`t.to(device)` for a per-step CPU tensor (noise, indices, augmentation parameters) without stalling CUDA.

    A copy from pageable memory synchronises the stream, so a loop that draws on the CPU each step would wait for the
    GPU every step; staged through pinned memory the copy is asynchronous. Elsewhere this is `t.to(device)`.
    """
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def to_float(images: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
    """uint8 [0, 255] to float32 [0, 1] on `device`."""
    return images.to(device=device, non_blocking=True).float().div_(255.0)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float [0, 1] to uint8 with rounding (the inverse of `to_float` up to quantisation)."""
    return images.clamp(0, 1).mul(255).round().to(torch.uint8)


def height_width(size: int | tuple[int, int]) -> tuple[int, int]:
    """(height, width) of a square side or a (height, width) pair."""
    return (size, size) if isinstance(size, int) else (size[0], size[1])


def resize_images(images: torch.Tensor, size: int | tuple[int, int], antialias: bool = False) -> torch.Tensor:
    """Bilinear resize of float images to size x size, or to (height, width) (no-op when already that size).

    This is mibench's one evaluation resize for every attack (the PLG-MI convention: bilinear on float tensors,
    no 8-bit round trip; GMI/KED-MI's PIL `low2high` quantises first, which shifts AA by a fraction of a point).
    `antialias` low-pass filters when shrinking, as torchvision's Resize does (PPA's renders, feature extractors).
    """
    height, width = height_width(size)
    if images.shape[-2] == height and images.shape[-1] == width:
        return images
    return F.interpolate(images, size=(height, width), mode="bilinear", align_corners=False, antialias=antialias)


def iterate_batches(
    n: int, batch_size: int, *, generator: torch.Generator | None = None, drop_last: bool = False
) -> Iterator[torch.Tensor]:
    """Index batches over range(n); shuffled when a generator is given."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]


def endless_batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Index batches over range(n) without end: shuffled passes, one after another, a batch may span two passes.

    An infinite random sampler behind a batching loader (the GAN trainers of the MI toolbox iterate this way).
    """
    pending = torch.zeros(0, dtype=torch.long)
    while True:
        while len(pending) < batch_size:
            pending = torch.cat([pending, torch.randperm(n, generator=generator)])
        yield pending[:batch_size]
        pending = pending[batch_size:]


def identity_batches(
    labels: torch.Tensor, batch_size: int, per_identity: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """One epoch of identity-balanced index batches: batch_size / per_identity identities x per_identity images each.

    The RandomIdentitySampler of BiDO's official code (Peng et al., KDD 2022; spec §1): each identity's images are
    shuffled (drawn with replacement up to `per_identity` when it has fewer) and cut into groups of `per_identity`
    (a remainder is dropped); while at least batch_size / per_identity identities have groups left, that many are
    drawn at random and each gives its next group. The groups, concatenated, are cut into batches of `batch_size`
    (a remainder is dropped, as the official loader's drop_last).
    """
    per_batch = batch_size // per_identity
    if per_batch < 1:
        raise ValueError(f"batch_size {batch_size} is smaller than images_per_identity {per_identity}")
    groups: dict[int, list[torch.Tensor]] = {}
    for identity in torch.unique(labels).tolist():
        idx = (labels == identity).nonzero().squeeze(1)
        if len(idx) < per_identity:
            idx = idx[torch.randint(len(idx), (per_identity,), generator=generator)]
        idx = idx[torch.randperm(len(idx), generator=generator)]
        groups[identity] = list(idx[: len(idx) - len(idx) % per_identity].split(per_identity))
    available = sorted(groups)
    if len(available) < per_batch:
        raise ValueError(
            f"the identity sampler needs at least {per_batch} identities for batch_size {batch_size} with "
            f"{per_identity} images each; the data has {len(available)}"
        )
    order: list[torch.Tensor] = []
    while len(available) >= per_batch:
        chosen = [available[i] for i in torch.randperm(len(available), generator=generator)[:per_batch].tolist()]
        for identity in chosen:
            order.append(groups[identity].pop(0))
            if not groups[identity]:
                available.remove(identity)
    flat = torch.cat(order)
    return list(flat[: len(flat) - len(flat) % batch_size].split(batch_size))
