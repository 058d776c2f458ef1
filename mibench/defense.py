"""The Defense interface: (model, data, params) -> a trained target.

A defense changes training in one or more of four places, and reuses the shared loop for the rest (Opacus's lesson:
wrap the training objects, don't fork the loop):

* `wrap(model)`: change the architecture for training (MID's variational bottleneck).
* `training_step()`: what one batch computes (extra loss terms, a different criterion, trapdoor batches).
* `fit(...)`: the whole schedule, overridden only when it truly differs (several updates per batch).
* `deploy(model)`: what the released model does at inference (MIDAS's bit errors, output purification).

Whatever `fit` returns in `extras` (tensors, e.g. Trap-MID's triggers) is cached with the weights and handed back to
`restore` when the target is loaded again.
"""

from __future__ import annotations

from abc import ABC
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from mibench.context import RunContext
from mibench.data.base import DataBundle
from mibench.params import Params
from mibench.suite import TrainSpec
from mibench.training import StepFn, cross_entropy_step, train_classifier


@dataclass
class TrainedTarget:
    """A trained target and what its training measured."""

    model: nn.Module
    test_accuracy: float
    wall_time_s: float
    best_epoch: int = 0
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: dict[str, float] = field(default_factory=dict)


class Defense(ABC):
    """Base class of registered defenses. Subclasses set `name`, `paper`, `Params` (paper defaults) and `version`."""

    name: ClassVar[str]
    paper: ClassVar[str]
    version: ClassVar[int] = 1
    Params: ClassVar[type[Params]]

    def __init__(self, params: Params):
        self.params = params

    def wrap(self, model: nn.Module) -> nn.Module:
        """The network as trained (default: unchanged). Must be deterministic given the model: loading rebuilds it."""
        return model

    def training_step(self) -> StepFn:
        """The per-batch loss (default: cross-entropy)."""
        return cross_entropy_step

    def fit(self, model: nn.Module, data: DataBundle, spec: TrainSpec, ctx: RunContext) -> TrainedTarget:
        """Train `wrap(model)` on the private data with the shared loop."""
        result = train_classifier(
            self.wrap(model),
            data.private_train,
            data.private_test,
            spec,
            ctx,
            step=self.training_step(),
            description=f"target [{self.name}]",
        )
        return TrainedTarget(result.model, result.test_accuracy, result.wall_time_s, result.best_epoch)

    def restore(self, model: nn.Module, extras: dict[str, torch.Tensor]) -> None:
        """Put back defense state saved in `extras` into a freshly loaded `wrap(model)` (default: nothing)."""
        return None

    def deploy(self, model: nn.Module) -> nn.Module:
        """The model as released to attackers and evaluated for utility (default: unchanged)."""
        return model
