"""Defenses applied together (a stack; one defense is a stack of one) and the shared loop that trains them.

`mibench.api.defense` declares what a defense may change; this module composes the members' changes in order and
trains the result with the shared classifier loop (`mibench.training.classifier`) unless one member brings its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mibench.api.context import RunContext
from mibench.api.defense import Defense, TrainedTarget, TrainingSetup
from mibench.api.metric import Measurement
from mibench.api.recipe import TrainSpec
from mibench.data.base import DataBundle
from mibench.hashing import derive_seed
from mibench.training.classifier import train_classifier


def train_with_shared_loop(model: nn.Module, data: DataBundle, setup: TrainingSetup, ctx: RunContext) -> TrainedTarget:
    """Train on the private split with the shared loop, the setup's recipe, criterion and loss terms."""
    result = train_classifier(
        model, data.private_train, data.private_test, setup.spec, ctx, step=setup.step, description="target"
    )
    return TrainedTarget(result.model, result.test_accuracy, result.wall_time_s, result.best_epoch)


def trained_prefix(members: Sequence[Defense | type[Defense]]) -> int | None:
    """How many leading members of a stack train the weights, when all the others are deploy-only.

    The target of such a stack reuses the weights of its first members (0: the undefended target's) and only runs the
    deploy-only members' `finish`. None when no member is deploy-only, or a deploy-only member stands before a
    training one (such a stack trains as a whole).
    """
    flags = [m.deploy_only for m in members]
    if not any(flags):
        return None
    first = flags.index(True)
    return first if all(flags[first:]) else None


class DefenseStack:
    """Several defenses applied together; a single defense is a stack of one.

    Extras are namespaced by position ("0.triggers") so stacked defenses never overwrite each other's state.
    """

    def __init__(self, defenses: list[Defense]):
        if not defenses:
            raise ValueError("a defense stack needs at least one defense")
        fitters = [d for d in defenses if d.defines_fit]
        if len(fitters) > 1:
            raise ValueError(f"defenses {[d.name for d in fitters]} each define their own training loop; stack one")
        self.defenses = defenses
        self.fitter = fitters[0] if fitters else defenses[0]

    @property
    def name(self) -> str:
        """Member names joined by '+'."""
        return "+".join(d.name for d in self.defenses)

    def wrap(self, model: nn.Module) -> nn.Module:
        """Apply every defense's `wrap` in order."""
        for d in self.defenses:
            model = d.wrap(model)
        return model

    def setup(self, spec: TrainSpec) -> TrainingSetup:
        """The base setup (suite recipe, cross-entropy) configured by every defense in order."""
        setup = TrainingSetup(spec)
        for d in self.defenses:
            setup = d.configure(setup)
        return setup

    def fit(self, model: nn.Module, data: DataBundle, spec: TrainSpec, ctx: RunContext) -> TrainedTarget:
        """Prepare, wrap, configure, train with the one defense that owns the loop (or the shared loop), finish."""
        for i, d in enumerate(self.defenses):
            model = d.prepare(model, data, spec, ctx.child("prepare", i))
        wrapped, setup = self.wrap(model), self.setup(spec)
        if self.fitter.defines_fit:
            trained = self.fitter.fit(wrapped, data, setup, ctx)
        else:
            trained = train_with_shared_loop(wrapped, data, setup, ctx)
        trained.stats = [*(m for d in self.defenses for m in d.preparation_stats()), *trained.stats]
        # What the target was trained with after every defense's recipe: reports name where it differs from the
        # undefended target's (recipe parity)
        trained.recipe = setup.spec.model_dump(mode="json")
        owner = self.defenses.index(self.fitter)
        trained.extras = {f"{owner}.{k}": v for k, v in trained.extras.items()}
        extras, stats = self.finish(trained.model, data, ctx)
        trained.extras.update(extras)
        trained.stats += stats
        return trained

    def finish(
        self, model: nn.Module, data: DataBundle, ctx: RunContext, start: int = 0
    ) -> tuple[dict[str, torch.Tensor], list[Measurement]]:
        """Every member's `finish` from position `start` on: (extras namespaced by position, stats)."""
        extras: dict[str, torch.Tensor] = {}
        stats: list[Measurement] = []
        for i, d in enumerate(self.defenses[start:], start):
            own, measured = d.finish(model, data, ctx.child("finish", i))
            extras.update({f"{i}.{k}": v for k, v in own.items()})
            stats += measured
        return extras, stats

    def restore(self, model: nn.Module, extras: dict[str, torch.Tensor], members: int | None = None) -> None:
        """Hand each defense (the first `members` only, when given) its own extras."""
        for i, d in enumerate(self.defenses[:members]):
            prefix = f"{i}."
            d.restore(model, {k.removeprefix(prefix): v for k, v in extras.items() if k.startswith(prefix)})

    def deploy(self, model: nn.Module, seed: int) -> nn.Module:
        """Apply every defense's `deploy` in order, each with its own generator derived from `seed`."""
        for i, d in enumerate(self.defenses):
            model = d.deploy(model, torch.Generator().manual_seed(derive_seed(seed, "deploy", i)))
        return model
