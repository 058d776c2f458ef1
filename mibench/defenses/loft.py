"""LoFt / CALoR: a low-rank classifier head, then confidence adaptation (Yu, Qiu, Fang et al.).

"CALoR: Towards Comprehensive Model Inversion Defense" (arXiv 2410.05814), continued as LoFt (2026). An MI attack
optimises the target's confidence in a class; the defense (1) squeezes the feature through a low-rank neck, so the
head keeps little of the private features (low-rank compression), and (2) fine-tunes with a loss that stops
rewarding confidence beyond a point (confidence adaptation), which flattens the signal inversions climb.

Official code: Chrisqcwx/LoFt @ 07f1e25 (`scripts/ffhq256_facescrub224/classifier/lrc.py`, the low-rank
compression README names, and `ca_ft.py`), on the authors' library (`src/modelinversion`, the same code as the MI
toolbox's `tomain` branch, ffhibnese/Model-Inversion-Attack-ToolBox @ d58590c: `NeckWrapper`, `_neck_builder`,
`InverseFocalLoss`):

* the neck replaces the network's last linear layer: BatchNorm1d(D) -> Linear(D, r) -> tanh -> Linear(r, K), r 50
  (`main(50, 'tanh')`); the feature attacks read stays the backbone's D-dimensional input of the neck
  (`feature_compressed=False`);
* low-rank training: Adam lr 1e-3, MultiStepLR [75, 90] x 0.1, 100 epochs, batch 96 (with PPA's FaceScrub crop,
  jitter and flip: the suite's augmentation);
* confidence adaptation: 5 more epochs of SGD lr 2e-5, momentum 0.9, MultiStepLR [int(0.6 e), int(0.8 e)] x 0.1,
  flip as the only augmentation, last epoch kept (`save_best_ckpts=False`), with the toolbox's inverse focal loss
  (gamma 8 as `InverseFocalLoss(focal_p)`, its default alpha 0.25, no smoothing):
  L = mean_i [ -alpha p_i^gamma (-log p_i) ] with p_i the true class's probability. Minimising alpha p^gamma log p
  drives p to exp(-1/gamma) (0.8825 at gamma 8), not to 1: training stops rewarding confidence beyond it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from mibench.api.context import RunContext
from mibench.api.defense import Defense, RecipeParams, TrainedTarget, TrainingSetup
from mibench.api.metric import Measurement
from mibench.data.base import DataBundle
from mibench.models.base import ClassifierOutput, probe_width
from mibench.params import Params
from mibench.registry import DEFENSES
from mibench.training.classifier import train_classifier
from mibench.training.stack import train_with_shared_loop

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "none": nn.Identity}


class LoFtRecipe(RecipeParams):
    """The low-rank stage's recipe (`lrc.py`)."""

    optimizer: Literal["sgd", "adam"] | None = "adam"
    lr: float | None = 1e-3
    weight_decay: float | None = 0.0
    batch_size: int | None = 96
    epochs: int | None = 100
    milestones: list[int] | None = Field(default_factory=lambda: [75, 90])
    gamma: float | None = 0.1


class LoFtParams(Params):
    """The official rank, activation, recipe and confidence adaptation (`lrc.py`, `ca_ft.py`)."""

    rank: int = Field(50, ge=1, description="width of the neck (the official lrc.py's 50)")
    activation: Literal["tanh", "relu", "sigmoid", "none"] = "tanh"
    recipe: LoFtRecipe = Field(default_factory=LoFtRecipe)
    confidence_adaptation: bool = Field(True, description="fine-tune with the inverse focal loss after training")
    focal_gamma: float = Field(8.0, gt=0, description="the inverse focal loss's exponent (ca_ft.py's focal_p)")
    focal_alpha: float = Field(0.25, gt=0, description="its scale (the toolbox's default)")
    ca_epochs: int = Field(5, ge=1)
    ca_lr: float = Field(2e-5, gt=0)
    ca_momentum: float = Field(0.9, ge=0)


class LowRankHead(nn.Module):
    """A classifier whose last linear layer is replaced by a low-rank neck; features stay the neck's input."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, rank: int, activation: str):
        super().__init__()
        self.backbone = backbone
        self.neck = nn.Sequential(
            nn.BatchNorm1d(feature_dim),
            nn.Linear(feature_dim, rank),
            ACTIVATIONS[activation](),
            nn.Linear(rank, num_classes),
        )

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        """The backbone's feature and the neck's logits."""
        feature = self.backbone(x).features
        return ClassifierOutput(feature, self.neck(feature))


def inverse_focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float, alpha: float) -> torch.Tensor:
    """mean_i -alpha p_i^gamma nll_i, p_i = exp(-nll_i) (the toolbox's `InverseFocalLoss`, no label smoothing)."""
    nll = F.cross_entropy(logits, labels, reduction="none")
    return (-alpha * torch.exp(-nll) ** gamma * nll).mean()


@DEFENSES.register
class LoFt(Defense):
    """Low-rank head, then confidence adaptation with the inverse focal loss."""

    name: ClassVar[str] = "loft"
    paper: ClassVar[str] = (
        "Yu, Qiu, Fang et al., LoFt (CALoR: Towards Comprehensive Model Inversion Defense, arXiv 2410.05814), 2026"
    )
    official: ClassVar[str | None] = "Chrisqcwx/LoFt @ 07f1e25"
    Params = LoFtParams
    defines_fit: ClassVar[bool] = True
    strength: ClassVar[tuple[str, ...]] = ("rank",)

    def wrap(self, model: nn.Module) -> nn.Module:
        """Replace the head by the neck (its input width read from the model's own feature)."""
        p: LoFtParams = self.params
        feature_dim = probe_width(model, lambda net, x: net(x).features)
        return LowRankHead(model, feature_dim, model.num_classes, p.rank, p.activation)

    def configure(self, setup: TrainingSetup) -> TrainingSetup:
        """The low-rank stage's recipe."""
        return setup.with_recipe(self.params.recipe)

    def fit(self, model: nn.Module, data: DataBundle, setup: TrainingSetup, ctx: RunContext) -> TrainedTarget:
        """Train with the setup (criterion and stacked terms), then confidence adaptation from its weights."""
        p: LoFtParams = self.params
        if p.confidence_adaptation and setup.criterion_owner is not None:  # refuse before training, not after
            setup.with_criterion(self.name, setup.criterion)
        first = train_with_shared_loop(model, data, setup, ctx)
        if not p.confidence_adaptation:
            return first
        e = p.ca_epochs
        spec = setup.spec.model_copy(
            update={
                "optimizer": "sgd", "lr": p.ca_lr, "momentum": p.ca_momentum, "weight_decay": 0.0, "epochs": e,
                "milestones": sorted({m for m in (int(0.6 * e), int(0.8 * e)) if m > 0}), "gamma": 0.1,
                "crop_scale": None, "color_jitter": None, "hflip": True, "selection": "last",
            }
        )  # fmt: skip
        adaptation = replace(setup, spec=spec).with_criterion(
            self.name, lambda logits, labels, epoch: inverse_focal_loss(logits, labels, p.focal_gamma, p.focal_alpha)
        )
        second = train_classifier(
            first.model, data.private_train, data.private_test, spec, ctx.child("confidence-adaptation"),
            step=adaptation.step, description="LoFt confidence adaptation",
        )  # fmt: skip
        low_rank = Measurement("loft_low_rank_accuracy", first.test_accuracy, None, "fraction", {"rank": p.rank})
        return TrainedTarget(
            second.model, second.test_accuracy, first.wall_time_s + second.wall_time_s, second.best_epoch,
            stats=[low_rank],
        )  # fmt: skip
