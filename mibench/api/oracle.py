"""Target access: what an attack may see of the target model, enforced, and counted.

An attack declares its `access`; the runner hands it an oracle that exposes exactly that and nothing more:

* `Access.WHITE_BOX`: the frozen model itself (features, logits, input gradients), plus everything below.
* `Access.PROBABILITIES`: softmax scores, no gradients (black-box; Yang et al. 2019, MIDAS's threat model).
* `Access.LABELS`: the top-1 label only (BREP-MI's label-only threat model).

Every query is counted in images, so tables can report query budgets (Trap-MID Table 18). The model is kept behind
a name-mangled attribute and every path to it, the internal one included, checks the access level: the point is to
make an attack that oversteps its declaration fail loudly, not to stop a determined programmer (a test scans
`attacks/` for private oracle use).

Victims: an attack that reconstructs given private images from the target's outputs on them (the inversion network,
Yang et al. 2019) observes those outputs through `victim_probabilities`, never the images: the oracle holds the
private images (training set first, then test set) and answers with the deployed target's prediction vectors, so an
inference-time defense (MIDAS) reaches the attack. An attack with partial knowledge of the private images (SecretGen)
gets them with a region removed (`victim_partial_images`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from mibench.data.base import ImageSet, select_private, to_float
from mibench.errors import AccessDenied, QueryBudgetExceeded
from mibench.models.base import ClassifierOutput


class Access(StrEnum):
    """How much of the target an attack may use, from most to least."""

    WHITE_BOX = "white-box"
    PROBABILITIES = "probabilities"
    LABELS = "labels"


_LEVEL = {Access.LABELS: 0, Access.PROBABILITIES: 1, Access.WHITE_BOX: 2}


@dataclass(frozen=True)
class DefenderKnowledge:
    """What an adaptive attack is told about the defense (only attacks declaring `knows_defense` get it).

    Attributes:
        trapdoor_signatures: K x D unit vectors, one per class: the normalised mean penultimate feature of
            trigger-injected private training images (Trap-MID's signature, spec §7.1); None when the target has no
            trapdoors.
    """

    trapdoor_signatures: torch.Tensor | None = None


class TargetOracle:
    """The target as an attack sees it.

    Args:
        model: The deployed target (after any inference-time defense); it is frozen here.
        access: The access level granted.
        num_classes: Number of target classes.
        image_shape: (C, H, W) of the inputs the target takes, in [0, 1].
        max_queries: Optional cap on images queried; exceeding it raises `QueryBudgetExceeded`.
        defender: Knowledge of the defense granted to an adaptive attack (None for every other attack).
    """

    def __init__(
        self,
        model: nn.Module,
        access: Access,
        *,
        num_classes: int,
        image_shape: tuple[int, int, int],
        max_queries: int | None = None,
        defender: DefenderKnowledge | None = None,
        victims: tuple[ImageSet, ImageSet] | None = None,
    ):
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.__model = model
        self.access = Access(access)
        self.num_classes = num_classes
        self.image_shape = image_shape
        self.max_queries = max_queries
        self.defender = defender
        self.queries = 0
        self.__victims = victims

    # -- access checks ------------------------------------------------------------------------------------------------

    def _require(self, needed: Access, what: str) -> None:
        if _LEVEL[self.access] < _LEVEL[needed]:
            raise AccessDenied(f"{what} needs {needed.value} access; this attack declared {self.access.value} access")

    def _count(self, x: torch.Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise ValueError(f"target queries take N x {self.image_shape} images, got {tuple(x.shape)}")
        self.queries += x.shape[0]
        if self.max_queries is not None and self.queries > self.max_queries:
            raise QueryBudgetExceeded(f"{self.queries} target queries exceed the cap of {self.max_queries}")

    def _no_grad_input(self, x: torch.Tensor) -> None:
        if x.requires_grad and self.access is not Access.WHITE_BOX:
            raise AccessDenied(f"{self.access.value} access gives no gradients; pass a detached input")

    # -- queries -------------------------------------------------------------------------------------------------------

    @property
    def model(self) -> nn.Module:
        """The frozen target network (white-box only)."""
        self._require(Access.WHITE_BOX, "the target model")
        return self.__model

    def __call__(self, x: torch.Tensor) -> ClassifierOutput:
        """Features and logits with gradients to `x` (white-box only)."""
        self._require(Access.WHITE_BOX, "logits and features")
        self._count(x)
        return self.__model(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Raw logits with gradients to `x` (white-box only)."""
        return self(x).logits

    @torch.no_grad()
    def _scores(self, x: torch.Tensor, needed: Access) -> torch.Tensor:
        """Detached logits for a public method that grants `needed` (checked here too, not only by the caller)."""
        self._require(needed, "target outputs" if needed is Access.LABELS else "confidence scores")
        self._count(x)
        return self.__model(x).logits.detach()

    @torch.no_grad()
    def train_mode_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax scores of the target in training mode (white-box only): batch statistics, active dropout.

        KED-MI's official GAN training never puts the target in eval mode, so its soft labels come from each batch's
        BatchNorm statistics (and, for the IR nets, an active dropout). The call runs on copies of the target's
        buffers, so the running statistics that train mode updates never reach the target other queries and jobs see.
        """
        self._require(Access.WHITE_BOX, "train-mode confidence scores")
        self._count(x)
        return torch.softmax(_train_mode_on_buffer_copies(self.__model, x).logits.detach(), dim=1)

    def train_mode_body_features(self, x: torch.Tensor) -> torch.Tensor:
        """The target's body output in training mode, with gradients to `x` (white-box only).

        The architecture's `bottleneck_input` (VGG16: the raw flattened 2,048-d conv output, before the BN1d head;
        elsewhere the penultimate feature) on each batch's own BatchNorm statistics, as SecretGen's stage 1 reads a
        target it never puts in eval mode. As `train_mode_probabilities`, on copies of the running statistics.
        """
        self._require(Access.WHITE_BOX, "train-mode features")
        self._count(x)
        return _train_mode_on_buffer_copies(_BodyOutput(self.__model), x)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax scores, detached (probabilities access or more)."""
        self._require(Access.PROBABILITIES, "confidence scores")
        self._no_grad_input(x)
        return torch.softmax(self._scores(x, Access.PROBABILITIES), dim=1)

    def labels(self, x: torch.Tensor) -> torch.Tensor:
        """Top-1 labels (any access)."""
        self._no_grad_input(x)
        return self._scores(x, Access.LABELS).argmax(dim=1)

    # -- victims: outputs on private images, never the images ---------------------------------------------------------

    def _victim_set(self) -> tuple[ImageSet, ImageSet]:
        if self.__victims is None:
            raise AccessDenied("this oracle observes no victim images (the runner gives them to attacks that ask)")
        return self.__victims

    def victim_indices(self, classes: torch.Tensor, split: str = "train", per_class: int | None = None) -> torch.Tensor:
        """Indices of victims of `classes` in the private `split` ("train" or "test"), the first per_class of each.

        Indices count the training set first, then the test set (`Reconstructions.victims` uses the same order).
        """
        train, test = self._victim_set()
        offset, images = (0, train) if split == "train" else (len(train), test)
        picked = []
        for c in classes.tolist():
            where = (images.labels == c).nonzero().squeeze(1)
            picked.append(where[:per_class] if per_class is not None else where)
        return torch.cat(picked) + offset if picked else torch.zeros(0, dtype=torch.long)

    def victim_labels(self, indices: torch.Tensor) -> torch.Tensor:
        """The identities of victims (the classes their reconstructions are scored against)."""
        return select_private(*self._victim_set(), indices).labels

    def victim_partial_images(self, indices: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """The victims' images in [0, 1] with the `hidden` region (1 x H x W, 1 = hidden) set to 0.

        The partial knowledge of SecretGen's threat model (Yuan et al., ECCV 2022): the attacker holds each private
        image with a region (the face's centre) removed. Not a target query: it reveals nothing about the target.
        """
        images = to_float(select_private(*self._victim_set(), indices).images)
        if tuple(hidden.shape) != (1, *images.shape[-2:]):
            raise ValueError(f"the hidden region must be 1 x {images.shape[-2]} x {images.shape[-1]}")
        return images * (1 - hidden)

    def victim_probabilities(self, indices: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """The deployed target's softmax vector for each victim image (probabilities access; counted as queries)."""
        self._require(Access.PROBABILITIES, "victims' confidence vectors")
        train, test = self._victim_set()
        device = next((p.device for p in self.__model.parameters()), torch.device("cpu"))
        out = []
        for start in range(0, len(indices), batch_size):
            images = select_private(train, test, indices[start : start + batch_size]).images
            out.append(torch.softmax(self._scores(to_float(images, device), Access.PROBABILITIES), dim=1).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.num_classes)


def _train_mode_on_buffer_copies(module: nn.Module, x: torch.Tensor) -> Any:
    """`module(x)` in training mode on copies of its buffers.

    The running statistics the pass updates reach no other query or job; the module goes back to eval mode, the
    target's resting mode.
    """
    buffers = {name: b.clone() for name, b in module.named_buffers()}
    module.train()
    try:
        return functional_call(module, buffers, (x,))
    finally:
        module.eval()


class _BodyOutput(nn.Module):
    """A model's `bottleneck_input` (else its exposed feature) as a forward, so `functional_call` can swap buffers."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The body output of `x`."""
        reader = getattr(self.model, "bottleneck_input", None)
        return reader(x) if reader is not None else self.model(x).features
