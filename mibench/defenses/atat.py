"""AT-AT, anti-adversarial training (Torp, Smith, Breuer, ICLR 2026).

"Reducing information dependency does not cause training data privacy. Adversarially non-robust features do."

The paper argues that MI attacks succeed through adversarially robust features and that a model whose predictions
rest on non-robust ones resists inversion. AT-AT therefore trains the target to be *more* adversarially vulnerable:
besides the usual cross-entropy, each batch gets a targeted PGD example towards a random other class, and the model
learns to classify that example *as the target class* (the opposite of adversarial training).

Official code: BreuerLabs/Anti-Adversarial-Training @ ec6069a (`defenses/adversarial_train.py`
`apply_adversarial_training_defense` and `PGDAttack`, `configuration/classifier/defense/atat.yaml`):

* loss = 1.0 CE(f(x), y) + 0.08 CE(f(x_adv), t), t uniform over the classes, moved to t + 1 (mod K) where t = y;
* x_adv: targeted PGD on the model itself in training mode (its BatchNorm statistics move during the attack, as
  the official loop runs it): a uniform random start in the eps ball, 5 signed steps of 1e-4 that lower CE(f(x), t),
  each projected to the ball of eps 5e-4 and the input range.

The official epsilons are in its normalised input space (Normalize(0.5, 0.5): [-1, 1]); mibench's images are in
[0, 1], so the pixel budgets are half of them (`input_scale`). The classic adversarial-training configuration of the
same file (`adversarial_train.yaml`: untargeted, eps 0.01, step 0.001, 10 steps, only the adversarial loss) is
`targeted: false, standard_weight: 0, adversarial_weight: 1, epsilon: 0.01, step_size: 0.001, iterations: 10`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from mibench.api.context import RunContext
from mibench.api.defense import Defense, TrainingSetup
from mibench.api.recipe import TrainSpec
from mibench.data.base import DataBundle
from mibench.models.base import ClassifierOutput
from mibench.params import Params
from mibench.registry import DEFENSES
from mibench.training.adversarial import pgd_attack


class ATATParams(Params):
    """The official AT-AT configuration (`atat.yaml`); epsilons in the official normalised units ([-1, 1])."""

    adversarial_weight: float = Field(0.08, description="weight of CE(f(x_adv), t) (negative values maximise it)")
    standard_weight: float = Field(1.0, ge=0, description="weight of the clean cross-entropy")
    targeted: bool = Field(True, description="true: AT-AT (towards a random other class); false: adversarial training")
    epsilon: float = Field(5e-4, gt=0, description="L-inf budget in the official [-1, 1] input units")
    step_size: float = Field(1e-4, gt=0, description="signed step, the same units")
    iterations: int = Field(5, ge=1)
    random_start: bool = True
    input_scale: float = Field(
        0.5, gt=0, description="pixels per official unit: Normalize(0.5, 0.5) maps [0, 1] to [-1, 1]"
    )


@DEFENSES.register
class ATAT(Defense):
    """Anti-adversarial training: learn targeted PGD examples as their target class."""

    name: ClassVar[str] = "at-at"
    paper: ClassVar[str] = (
        "Torp, Smith, Breuer, Reducing information dependency does not cause training data privacy. Adversarially "
        "non-robust features do., ICLR 2026"
    )
    official: ClassVar[str | None] = "BreuerLabs/Anti-Adversarial-Training @ ec6069a"
    Params = ATATParams
    strength: ClassVar[tuple[str, ...]] = ("adversarial_weight",)

    def __init__(self, params: ATATParams):
        super().__init__(params)
        self._generator = torch.Generator().manual_seed(0)

    def prepare(self, model: nn.Module, data: DataBundle, spec: TrainSpec, ctx: RunContext) -> nn.Module:
        """Take the job's stream for the random starts and target classes (training only)."""
        self._generator = ctx.generator("at-at")
        return model

    def configure(self, setup: TrainingSetup) -> TrainingSetup:
        """Scale the clean loss by `standard_weight` and add the weighted loss on the PGD examples."""
        p: ATATParams = self.params
        if p.standard_weight != 1.0:
            base = setup.criterion
            setup = setup.with_criterion(self.name, lambda logits, y, epoch: p.standard_weight * base(logits, y, epoch))
        return setup.with_term(self.name, self.adversarial_term)

    def adversarial_term(
        self, model: nn.Module, images: torch.Tensor, labels: torch.Tensor, out: ClassifierOutput
    ) -> dict[str, torch.Tensor]:
        """adversarial_weight x CE(f(x_adv), t) (see module docstring)."""
        p: ATATParams = self.params
        classes = out.logits.shape[1]
        wanted = labels
        if p.targeted:
            drawn = torch.randint(0, classes, (len(labels),), generator=self._generator).to(labels.device)
            wanted = torch.where(drawn == labels, (drawn + 1) % classes, drawn)
        adversarial = pgd_attack(
            model, images.detach(), wanted, norm="linf", eps=p.epsilon * p.input_scale,
            steps=p.iterations, step_size=p.step_size * p.input_scale,
            generator=self._generator if p.random_start else None, targeted=p.targeted,
            random_start=p.random_start,
        )  # fmt: skip
        return {"adv_ce": p.adversarial_weight * F.cross_entropy(model(adversarial).logits, wanted)}
