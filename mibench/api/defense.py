"""The Defense interface: (model, data, params) -> a trained target, composable by stacking.

A defense changes training in one or more of these places and reuses the shared loop for the rest (Opacus's
lesson: wrap the training objects, don't fork the loop):

* `prepare(model, data, spec, ctx)`: initialise the bare architecture before training (TL-DMI's public
  pre-training and frozen front layers); never run when a target is loaded.
* `wrap(model)`: change the architecture for training (MID's variational bottleneck).
* `configure(setup)`: change the `TrainingSetup`: the classification criterion (NegLS), additive loss terms
  (MID's KL, BiDO's dependency terms), the optimiser recipe.
* `fit(...)`: the whole schedule, only when it truly differs (Trap-MID's three updates per batch); it must use the
  setup's criterion and extra terms so that stacked defenses still apply.
* `finish(model, data, ctx)`: train inference-time parts on the trained target (output purifiers), kept as extras.
* `deploy(model)`: what the released model does at inference (MIDAS's bit errors, a purifier on the outputs).

Defenses stack (Trap-MID with NegLS, Trap-MID paper Table 17): wraps and configures apply in order, deploys in
order, at most one defense may define `fit`, at most one may replace the criterion. Whatever a defense returns in
`TrainedTarget.extras` (tensors, e.g. triggers) is cached with the weights and handed back to `restore`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from mibench.api.context import RunContext
from mibench.api.metric import Measurement
from mibench.api.recipe import TrainSpec
from mibench.data.base import DataBundle
from mibench.models.base import ClassifierOutput
from mibench.params import Params

# criterion(logits, labels, epoch) -> scalar loss; epoch lets schedules (NegLS) change the loss over training.
Criterion = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
# extra_term(model, images, labels, output) -> named additive loss terms (already weighted).
ExtraTerm = Callable[[nn.Module, torch.Tensor, torch.Tensor, ClassifierOutput], dict[str, torch.Tensor]]


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, epoch: int) -> torch.Tensor:
    """The undefended criterion: mean cross-entropy."""
    return F.cross_entropy(logits, labels)


class RecipeParams(Params):
    """Training-recipe overrides a defense's paper prescribes; None keeps the suite's target recipe."""

    optimizer: Literal["sgd", "adam"] | None = None
    lr: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None
    epochs: int | None = None
    milestones: list[int] | None = None
    gamma: float | None = None
    sampler: Literal["shuffle", "identity"] | None = None


@dataclass(frozen=True)
class TrainingSetup:
    """How a target is trained: the recipe, the criterion and extra loss terms. Defenses return modified copies."""

    spec: TrainSpec
    criterion: Criterion = cross_entropy
    criterion_owner: str | None = None
    extra_terms: tuple[tuple[str, ExtraTerm], ...] = ()

    def with_criterion(self, owner: str, criterion: Criterion) -> TrainingSetup:
        """Replace the criterion; two defenses replacing it is an error."""
        if self.criterion_owner is not None:
            raise ValueError(f"defenses {self.criterion_owner!r} and {owner!r} both replace the training criterion")
        return replace(self, criterion=criterion, criterion_owner=owner)

    def with_term(self, name: str, term: ExtraTerm) -> TrainingSetup:
        """Add a loss term."""
        return replace(self, extra_terms=(*self.extra_terms, (name, term)))

    def with_recipe(self, recipe: RecipeParams) -> TrainingSetup:
        """Apply a defense's recipe overrides (None fields keep the current values)."""
        updates = {k: v for k, v in recipe.model_dump().items() if v is not None}
        return replace(self, spec=TrainSpec.model_validate({**self.spec.model_dump(), **updates}))

    def loss(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epoch: int
    ) -> tuple[dict[str, torch.Tensor], ClassifierOutput]:
        """Criterion plus extra terms on one batch; returns the terms ("loss" is their sum) and the output."""
        out: ClassifierOutput = model(images)
        terms = {"ce": self.criterion(out.logits, labels, epoch)}
        if out.aux_logits is not None:  # Inception-v3's auxiliary classifier, trained with the same criterion
            terms["aux_ce"] = self.criterion(out.aux_logits, labels, epoch)
        for _, term in self.extra_terms:
            terms.update(term(model, images, labels, out))
        return {"loss": sum(terms.values()), **{k: v.detach() for k, v in terms.items()}}, out

    def step(self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epoch: int) -> dict[str, torch.Tensor]:
        """A `mibench.training.classifier.StepFn` for the shared loop."""
        return self.loss(model, images, labels, epoch)[0]


@dataclass
class TrainedTarget:
    """A trained target and what its training measured."""

    model: nn.Module
    test_accuracy: float
    wall_time_s: float
    best_epoch: int = 0
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    stats: list[Measurement] = field(default_factory=list)  # recorded with the target (e.g. trapdoor success)
    recipe: dict[str, Any] = field(default_factory=dict)  # the effective training recipe, after the defenses' own


class Defense:
    """Base class of registered defenses. Subclasses set `name`, `paper`, `Params` (paper defaults) and `version`."""

    name: ClassVar[str]
    paper: ClassVar[str]
    # The official implementation mibench follows, "owner/repository @ commit" (FIDELITY.md's section names the
    # same; a test holds them together); None where none was released.
    official: ClassVar[str | None] = None
    version: ClassVar[int] = 1
    Params: ClassVar[type[Params]]
    defines_fit: ClassVar[bool] = False  # True when `fit` replaces the shared loop
    # True when the trained target carries trapdoor triggers (Trap-MID, TeD): what adaptive attacks such as PLG-MI++
    # are told about (their trapdoor signatures); validation refuses such attacks against defenses without them.
    has_trapdoors: ClassVar[bool] = False
    # Optional packages the defense imports, {module: the mibench extra installing it}; validation names missing ones.
    requires: ClassVar[dict[str, str]] = {}
    # True when the defended network has no BatchNorm left (DP-SGD replaces it); see `Attack.needs_batchnorm`.
    removes_batchnorm: ClassVar[bool] = False
    # True when the defense leaves the weights' training alone (only `finish`, `restore` and `deploy`: MIDAS, the
    # output purifiers): its target reuses the weights trained without it (the undefended target of the same seed,
    # or the stack's members before it) instead of training a copy.
    deploy_only: ClassVar[bool] = False
    # The parameter(s) that set how strongly the defense protects, in the order a suite's `sweep: [values]` gives them
    # (Trap-MID's beta, MIDAS's bit-error rate, BiDO's two lambdas); empty when it has none.
    strength: ClassVar[tuple[str, ...]] = ()

    def __init__(self, params: Params):
        self.params = params

    @classmethod
    def architecture_problem(cls, architecture: type) -> str | None:
        """Why the defense cannot apply to the target `architecture` (a Classifier class), or None (default).

        Checked with the suite, before any work runs (RoLSS needs skip connections to remove).
        """
        return None

    def attackers_train_before_deployment(self) -> bool:
        """Whether attacks train target-dependent priors on the model as it was before this deploy-only defense.

        Priors such as a decoder or a GAN's pseudo-labels then learn from the undeployed model, and only the
        inversions query the deployed one. MIDAS's deep notebook trains the inversion network's decoder on the clean
        classifier and corrupts the weights only for the victims' queries; output purifiers are an API, so attackers
        train through them (default False).
        """
        return False

    def prepare(self, model: nn.Module, data: DataBundle, spec: TrainSpec, ctx: RunContext) -> nn.Module:
        """Training-time initialisation of the bare architecture before `wrap` (default: unchanged).

        TL-DMI pre-trains on public data and freezes the front layers here. Never run when a target is loaded.
        """
        return model

    def wrap(self, model: nn.Module) -> nn.Module:
        """The network as trained (default: unchanged). Must be deterministic given the model: loading rebuilds it."""
        return model

    def configure(self, setup: TrainingSetup) -> TrainingSetup:
        """Change the training setup (default: unchanged)."""
        return setup

    def fit(self, model: nn.Module, data: DataBundle, setup: TrainingSetup, ctx: RunContext) -> TrainedTarget:
        """Train the target with a loop of the defense's own (DP-SGD, Trap-MID); needs `defines_fit = True`.

        Every other defense is trained by the shared classifier loop (`mibench.training.stack`), with the criterion
        and loss terms its `configure` set.
        """
        raise NotImplementedError(f"{self.name} sets defines_fit but does not define fit")

    def restore(self, model: nn.Module, extras: dict[str, torch.Tensor]) -> None:
        """Put back defense state saved in `extras` into a freshly loaded `wrap(model)` (default: nothing)."""
        return None

    def preparation_stats(self) -> list[Measurement]:
        """What `prepare` measured, recorded with the target (default: nothing)."""
        return []

    def finish(
        self, model: nn.Module, data: DataBundle, ctx: RunContext
    ) -> tuple[dict[str, torch.Tensor], list[Measurement]]:
        """Train inference-time parts on the trained target (output purifiers); returns (extras, stats).

        The extras are cached with the target and handed back to `restore`; default: nothing.
        """
        return {}, []

    def deploy(self, model: nn.Module, generator: torch.Generator) -> nn.Module:
        """The model as released to attackers and evaluated for utility (default: unchanged).

        `generator` is seeded from the target's key: whatever randomness the released model has (MIDAS's bit errors)
        is the same in every job that loads this target.
        """
        return model
