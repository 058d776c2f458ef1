"""NegLS: "Be Careful What You Smooth For: Label Smoothing Can Be a Privacy Shield but Also a Catalyst for MI".

Struppek, Hintersdorf, Kersting, ICLR 2024. Label smoothing with a negative factor: per sample
l = (1 - eps) (-log p_y) + eps (-(1/K) sum_k log p_k) (paper Eq. 1; official PPA `losses/label_smoothing.py`).
With eps < 0 the true class gets weight 1 + |eps| and a low mean log-probability is rewarded, sharpening the
prediction and removing the margin information attacks exploit.

Schedule (official code, which the paper describes as a linear ramp to epoch 75 of 100): eps_e = 0 for
e < N/2, eps_final (e + 1 - N/2) / (N - N/2) for N/2 <= e < 3N/4, eps_final after. As coded, the divisor is N - 50
for N = 100, so the ramp reaches only half of eps_final at e = 74 and jumps to eps_final at e = 75; `ramp:
faithful` reproduces that, `ramp: linear` ends the ramp at eps_final (labelled as a fix). With N = 10 this gives
Trap-MID's MNIST schedule (5, 7, divisor 5).

Recipe (Trap-MID's CelebA NegLS config): Adam lr 1e-3, weight decay 0, batch 128, 100 epochs, MultiStepLR [75, 90]
gamma 0.1; these override the suite's target recipe unless set to null.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from mibench.api.defense import Defense, RecipeParams, TrainingSetup
from mibench.params import Params
from mibench.registry import DEFENSES


class NegLSRecipe(RecipeParams):
    """Trap-MID's CelebA NegLS recipe (`classify_trap_negls.json`)."""

    optimizer: Literal["sgd", "adam"] | None = "adam"
    lr: float | None = 1e-3
    weight_decay: float | None = 0.0
    batch_size: int | None = 128
    epochs: int | None = 100
    milestones: list[int] | None = Field(default_factory=lambda: [75, 90])
    gamma: float | None = 0.1


class NegLSParams(Params):
    """Smoothing factor, schedule and the paper's training recipe (a null recipe field keeps the suite's value)."""

    smoothing: float = Field(-0.05, description="eps_final; negative for NegLS")
    ramp: Literal["faithful", "linear", "none"] = "faithful"
    recipe: NegLSRecipe = Field(default_factory=NegLSRecipe)


def smoothing_at(epoch: int, total: int, final: float, ramp: str = "faithful") -> float:
    """The smoothing factor of `epoch` (0-based) out of `total` epochs (see module docstring)."""
    if ramp == "none" or final >= 0:
        return final
    start, full = total // 2, int(0.75 * total)
    if epoch < start:
        return 0.0
    if epoch >= full:
        return final
    if ramp == "faithful":
        return final * (epoch + 1 - start) / (total - start)
    return final * (epoch + 1 - start) / (full - start)


def label_smoothing_loss(logits: torch.Tensor, labels: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Batch mean of (1 - eps) NLL_y + eps * mean_k NLL_k (valid for negative eps)."""
    log_p = F.log_softmax(logits, dim=1)
    nll = -log_p.gather(1, labels.view(-1, 1)).squeeze(1)
    uniform = -log_p.mean(dim=1)
    return ((1 - smoothing) * nll + smoothing * uniform).mean()


@DEFENSES.register
class NegLS(Defense):
    """Negative label smoothing with the official schedule and recipe."""

    name: ClassVar[str] = "negls"
    paper: ClassVar[str] = "Struppek et al., Be Careful What You Smooth For (NegLS), ICLR 2024"
    official: ClassVar[str | None] = "LukasStruppek/Plug-and-Play-Attacks @ 3087a4f"
    Params = NegLSParams
    strength: ClassVar[tuple[str, ...]] = ("smoothing",)

    def configure(self, setup: TrainingSetup) -> TrainingSetup:
        """Apply the recipe, then replace the criterion with the scheduled smoothing loss."""
        p: NegLSParams = self.params
        setup = setup.with_recipe(p.recipe)
        total = setup.spec.epochs

        def criterion(logits: torch.Tensor, labels: torch.Tensor, epoch: int) -> torch.Tensor:
            return label_smoothing_loss(logits, labels, smoothing_at(epoch, total, p.smoothing, p.ramp))

        return setup.with_criterion(self.name, criterion)
