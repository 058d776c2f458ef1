"""The Attack interface: declared access, an optional cached prior, and inversion of chosen classes.

An attack is configured by its `Params` (constructor) and receives data in its calls (Foolbox's split):

* `access`: what it needs of the target (white-box, probabilities, labels); the runner enforces it.
* `priors` / `build_prior` / `train_prior`: artifacts learnt before inversion (a GAN, pseudo-labels, students).
  Most attacks have one, described by the class attributes `prior_name`, `prior_version`, `prior_uses_target` and
  by `prior_params()`. An add-on attack may declare several (LOMMA: its base attack's GAN plus distilled
  students). The runner caches each under a key of its name, version, params, the public data and, only when it
  uses the target, the target; attacks naming the same prior share it (GMI, LOMMA-GMI and BREP-MI share GMI's GAN).
* `invert`: reconstructions for the given classes, given the trained prior (a dict of them, by name, when the
  attack declares several).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from mibench.api.context import RunContext
from mibench.api.oracle import Access, TargetOracle
from mibench.data.base import ImageSet
from mibench.params import Params


@dataclass(frozen=True)
class PriorSpec:
    """One cached artifact an attack learns before inversion.

    Attributes:
        name: Cache namespace; attacks declaring the same name, version and params share the artifact.
        params: What determines it (its cache key, with the data and, if `uses_target`, the target).
        uses_target: Whether training it queries the target (then it is cached per target).
        version: Bumped when its training code changes meaning.
    """

    name: str
    params: Params | None
    uses_target: bool = False
    version: int = 1


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
        victims: For attacks that reconstruct given images from the target's outputs on them (the inversion
            network, Yang et al. 2019): N indices of the private image each one reconstructs, counting the private
            training set first and then the test set (`TargetOracle.victim_indices`).
        unclamped: The generator's raw output before clamping to [0, 1], where the official evaluation feeds it to
            the evaluation model (PLG-MI's tanh output; the `published` protocol reads it).
        failed: N flags of reconstructions the attack itself declares failed (BREP-MI's classes without an accepted
            radius expansion, which its official accuracy counts as misses); attack accuracy counts them as misses.
    """

    images: torch.Tensor
    labels: torch.Tensor
    restarts: torch.Tensor
    latents: torch.Tensor | None = None
    stats: dict[str, float] = field(default_factory=dict)
    victims: torch.Tensor | None = None
    failed: torch.Tensor | None = None
    unclamped: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.labels.shape != (n,) or self.restarts.shape != (n,):
            raise ValueError("Reconstructions need one label and one restart index per image")
        if self.victims is not None and self.victims.shape != (n,):
            raise ValueError("Reconstructions need one victim index per image when victims are given")
        if self.failed is not None and self.failed.shape != (n,):
            raise ValueError("Reconstructions need one failure flag per image when failures are given")
        if self.unclamped is not None and self.unclamped.shape != self.images.shape:
            raise ValueError("Reconstructions' unclamped images must have the shape of the images")

    def save(self, path: Path) -> None:
        """Write to a tensor file (loadable with weights_only=True)."""
        torch.save(
            {
                "images": self.images.cpu(),
                "labels": self.labels.cpu(),
                "restarts": self.restarts.cpu(),
                "latents": None if self.latents is None else self.latents.cpu(),
                "stats": dict(self.stats),
                "victims": None if self.victims is None else self.victims.cpu(),
                "failed": None if self.failed is None else self.failed.cpu(),
                "unclamped": None if self.unclamped is None else self.unclamped.cpu(),
            },
            path,
        )

    @classmethod
    def load(cls, path: Path) -> Reconstructions:
        """Read what `save` wrote."""
        return cls.from_state(torch.load(path, map_location="cpu", weights_only=True))

    @classmethod
    def from_state(cls, d: dict) -> Reconstructions:
        """Rebuild from the dict `save` writes (loaded by the caller, e.g. through the store's verified read)."""
        return cls(
            d["images"],
            d["labels"],
            d["restarts"],
            d["latents"],
            d["stats"],
            d.get("victims"),
            d.get("failed"),
            d.get("unclamped"),
        )


class Attack(ABC):
    """Base class of registered attacks. Subclasses set `name`, `paper`, `access`, `Params` and `version`."""

    name: ClassVar[str]
    paper: ClassVar[str]
    # The official implementation mibench follows, "owner/repository @ commit" (FIDELITY.md's section names the
    # same; a test holds them together); None where none was released.
    official: ClassVar[str | None] = None
    version: ClassVar[int] = 1
    access: ClassVar[Access]
    Params: ClassVar[type[Params]]
    prior_name: ClassVar[str | None] = None
    prior_version: ClassVar[int] = 1
    prior_uses_target: ClassVar[bool] = False
    # Adaptive attacks (PLG-MI++) are told about the defense through `oracle.defender`.
    knows_defense: ClassVar[bool] = False
    # Attacks whose prior is the target's BatchNorm statistics (DeepInversion); validation refuses defenses that
    # remove BatchNorm (DP-SGD's GroupNorm).
    needs_batchnorm: ClassVar[bool] = False
    # Attacks that reconstruct private images from the target's outputs on them (Yang et al.'s inversion network)
    # observe those outputs through `oracle.victim_probabilities`.
    observes_victims: ClassVar[bool] = False
    # The official metric pipeline behind the paper's rows for this attack (`protocol: published`, see
    # mibench.metrics.published.PIPELINES); None: no published pipeline, measured as `standard`.
    published_pipeline: ClassVar[str | None] = None

    def __init__(self, params: Params):
        self.params = params

    def prior_params(self) -> Params | None:
        """The part of `params` that determines the prior (its cache key); None when there is no prior."""
        return None

    def evaluation_images(
        self, prior: Any, reconstructions: Reconstructions, size: int | tuple[int, int], ctx: RunContext
    ) -> torch.Tensor | None:
        """Images the evaluation model should see at its resolution `size`, when the attack renders its own.

        Default None: the evaluator sees the stored reconstructions resized. PPA re-renders its kept latents at the
        generator's resolution, as the official code does, instead of upsampling its target-sized renders.
        """
        return None

    def priors(self) -> list[PriorSpec]:
        """The priors to train before inversion, in order (default: the one the class attributes describe)."""
        if self.prior_name is None:
            return []
        return [PriorSpec(self.prior_name, self.prior_params(), self.prior_uses_target, self.prior_version)]

    def needs_public_identities(self) -> bool:
        """Whether `train_prior` gets the public images with their identity labels (default: unlabelled).

        For priors that train a classifier on a labelled public set (C2FMI's embedding network, which its paper
        trains on another labelled face dataset).
        """
        return False

    def external_files(self) -> dict[str, str]:
        """Files the attack reads from outside the cache (released weights), by params key; keyed by content."""
        return {}

    def build_prior(self, info: DataInfo, name: str | None = None) -> nn.Module | None:
        """An untrained prior module named `name` (its state dict is what the cache stores)."""
        return None

    def train_prior(
        self,
        prior: nn.Module,
        public: ImageSet,
        oracle: TargetOracle | None,
        ctx: RunContext,
        name: str | None = None,
    ) -> None:
        """Fit the prior `name` in place on the public data (and the target, when it uses the target)."""
        raise NotImplementedError(f"attack {self.name!r} declares a prior but does not train it")

    @abstractmethod
    def invert(self, prior: Any, oracle: TargetOracle, classes: torch.Tensor, ctx: RunContext) -> Reconstructions:
        """Reconstruct images of `classes` from the target behind `oracle`.

        `prior` is the trained prior module, None without one, or a dict {name: module} when `priors()` has several.
        """


# identity(images, labels) -> per-sample identity loss (N,); the search driver decides the reduction.
IdentityLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class GenerativeAttack(Attack):
    """An attack that searches the latent space of a generator under an identity loss (GMI, KED-MI, PLG-MI, ...).

    Add-ons such as LOMMA change only the pieces below: the identity loss and where the generator comes from.
    """

    def generative_prior(self, prior: Any) -> nn.Module:
        """The GAN (generator and discriminator) inside what `invert` was given."""
        return prior[self.prior_name] if isinstance(prior, dict) else prior

    def identity_loss(self, oracle: TargetOracle, prior: Any, ctx: RunContext) -> IdentityLoss:
        """Per-sample identity loss of generated images (default: cross-entropy of the target's logits)."""
        # The same per-sample loss as `mibench.inversion.losses.cross_entropy_identity` (GMI, KED-MI).
        return lambda images, labels: F.cross_entropy(oracle.logits(images), labels, reduction="none")
