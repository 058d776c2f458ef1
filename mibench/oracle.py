"""Target access: what an attack may see of the target model, enforced, and counted.

An attack declares its `access`; the runner hands it an oracle that exposes exactly that and nothing more:

* `Access.WHITE_BOX`: the frozen model itself (features, logits, input gradients), plus everything below.
* `Access.PROBABILITIES`: softmax scores, no gradients (black-box; Yang et al. 2019, MIDAS's threat model).
* `Access.LABELS`: the top-1 label only (BREP-MI's label-only threat model).

Every query is counted in images, so tables can report query budgets (Trap-MID Table 18). The model is kept behind
a name-mangled attribute: the point is to make an attack that oversteps its declaration fail loudly, not to stop a
determined programmer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import torch
from torch import nn

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
    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        self._count(x)
        return self.__model(x).logits.detach()

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax scores, detached (probabilities access or more)."""
        self._require(Access.PROBABILITIES, "confidence scores")
        self._no_grad_input(x)
        return torch.softmax(self._scores(x), dim=1)

    def labels(self, x: torch.Tensor) -> torch.Tensor:
        """Top-1 labels (any access)."""
        self._no_grad_input(x)
        return self._scores(x).argmax(dim=1)
