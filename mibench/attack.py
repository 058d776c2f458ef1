"""The Attack interface: declared access, an optional cached prior, and inversion of chosen classes.

An attack is configured by its `Params` (constructor) and receives data in its calls (Foolbox's split):

* `access`: what it needs of the target (white-box, probabilities, labels); the runner enforces it.
* `build_prior` / `train_prior`: an artifact learnt before inversion (a GAN, pseudo-labels, students). The runner
  caches it under a key of `prior_name`, `prior_version`, `prior_params()`, the public data and, only when
  `prior_uses_target`, the target. Attacks naming the same prior share it (GMI, LOMMA-GMI and BREP-MI share GMI's GAN).
* `invert`: reconstructions for the given classes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from mibench.context import RunContext
from mibench.data.base import ImageSet
from mibench.oracle import Access, TargetOracle
from mibench.params import Params


@dataclass(frozen=True)
class DataInfo:
    """Shape facts an attack needs to build its networks."""

    channels: int
    image_size: int
    num_classes: int


@dataclass
class Reconstructions:
    """What an attack returns: images in [0, 1] with the class each one was meant to reveal.

    Attributes:
        images: N x C x H x W float in [0, 1], at the target's resolution.
        labels: N intended classes.
        restarts: N restart (or sample) indices within a class.
        latents: Optional N x d latent codes.
        stats: Scalars the attack measured about itself (target queries, iterations, ...).
    """

    images: torch.Tensor
    labels: torch.Tensor
    restarts: torch.Tensor
    latents: torch.Tensor | None = None
    stats: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.labels.shape != (n,) or self.restarts.shape != (n,):
            raise ValueError("Reconstructions need one label and one restart index per image")

    def save(self, path: Path) -> None:
        """Write to a tensor file (loadable with weights_only=True)."""
        torch.save(
            {
                "images": self.images.cpu(),
                "labels": self.labels.cpu(),
                "restarts": self.restarts.cpu(),
                "latents": None if self.latents is None else self.latents.cpu(),
                "stats": dict(self.stats),
            },
            path,
        )

    @classmethod
    def load(cls, path: Path) -> Reconstructions:
        """Read what `save` wrote."""
        d = torch.load(path, map_location="cpu", weights_only=True)
        return cls(d["images"], d["labels"], d["restarts"], d["latents"], d["stats"])


class Attack(ABC):
    """Base class of registered attacks. Subclasses set `name`, `paper`, `access`, `Params` and `version`."""

    name: ClassVar[str]
    paper: ClassVar[str]
    version: ClassVar[int] = 1
    access: ClassVar[Access]
    Params: ClassVar[type[Params]]
    prior_name: ClassVar[str | None] = None
    prior_version: ClassVar[int] = 1
    prior_uses_target: ClassVar[bool] = False

    def __init__(self, params: Params):
        self.params = params

    def prior_params(self) -> Params | None:
        """The part of `params` that determines the prior (its cache key); None when there is no prior."""
        return None

    def build_prior(self, info: DataInfo) -> nn.Module | None:
        """An untrained prior module (its state dict is what the cache stores)."""
        return None

    def train_prior(self, prior: nn.Module, public: ImageSet, oracle: TargetOracle | None, ctx: RunContext) -> None:
        """Fit the prior in place on the public data (and the target, when `prior_uses_target`)."""
        raise NotImplementedError(f"attack {self.name!r} declares a prior but does not train it")

    @abstractmethod
    def invert(
        self, prior: nn.Module | None, oracle: TargetOracle, classes: torch.Tensor, ctx: RunContext
    ) -> Reconstructions:
        """Reconstruct images of `classes` from the target behind `oracle`."""
