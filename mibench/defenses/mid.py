"""MID: "Improving Robustness to Model Inversion Attacks via Mutual Information Regularization".

Wang, Zhang, Jia, Bu, Yang, AAAI 2021. A variational information bottleneck before the classifier: the statistics
layer maps the backbone feature to (mu, sigma) of a k-dimensional Gaussian, z = mu + sigma * eps is sampled, and the
logits are a linear function of z. The loss adds beta * KL(N(mu, sigma^2) || N(0, I)) (paper Eq. 9; official
`mi-defense/gmi/target/train_vib.py`, spec §4.2).

Official-code behaviour reproduced (Jiachen-T-Wang/mi-defense @ 23dc853, `gmi/target/model.py` VGG16_vib,
`train_vib.py`, `utils.py`): sigma = softplus(s - 5); beta = 0.003; on VGG16 the bottleneck reads the raw flattened
2,048-d body output (no BN1d; `Classifier.bottleneck_input`) and k = 1,024 (half of it); the noise is sampled at
*every* forward call, in train and eval mode alike, so the released model is stochastic and every attack query sees
fresh noise (`sample_at_test: false` uses z = mu at inference instead). Training uses the official
identity-balanced sampler (RandomIdentitySampler, 4 images per identity: 16 identities per batch of 64; `recipe`).
The exposed feature (what LOMMA's feature regulariser and the KNN/feature metrics read) is the raw pre-bottleneck
feature, as `VGG16_vib` returns it.

On the IR targets (FaceNet64, IR152) k is 512, as Trap-MID App. C.6 states (`Classifier.vib_bottleneck`); their
bottleneck reads the 512-d feature, since no official IR-net VIB code is published.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from mibench.api.defense import Defense, RecipeParams, TrainingSetup
from mibench.models.base import ClassifierOutput, probe_width
from mibench.params import Params
from mibench.registry import DEFENSES


class MIDRecipe(RecipeParams):
    """The official CelebA loader: 4 images per identity per batch (`config/celeba.json` "instance": 4)."""

    sampler: Literal["shuffle", "identity"] | None = "identity"


class MIDParams(Params):
    """Official defaults (beta 0.003, bottleneck half the feature size or 512 on IR nets, sampling at test time)."""

    beta: float = Field(0.003, ge=0, description="weight of the KL term")
    bottleneck: int | None = Field(
        None, ge=1, description="k; default: the architecture's (IR nets 512) or half the bottleneck input"
    )
    sample_at_test: bool = Field(True, description="official: z is sampled in eval mode too")
    recipe: MIDRecipe = Field(default_factory=MIDRecipe)


def gaussian_kl(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Batch mean of KL(N(mu, diag sigma^2) || N(0, I)) = 0.5 sum_j (mu^2 + sigma^2 - 2 log sigma - 1)."""
    return 0.5 * (mu.pow(2) + sigma.pow(2) - 2 * sigma.log() - 1).sum(dim=1).mean()


class VIBClassifier(nn.Module):
    """A backbone classifier with its head replaced by a variational information bottleneck.

    The forward returns (the bottleneck's input feature, logits) and keeps the batch's KL in `self.kl` for the loss.
    """

    def __init__(self, backbone: nn.Module, feature_dim: int, num_classes: int, k: int, sample_at_test: bool):
        super().__init__()
        self.backbone = backbone
        self.k = k
        self.sample_at_test = sample_at_test
        self.statistics = nn.Linear(feature_dim, 2 * k)
        self.head = nn.Linear(k, num_classes)
        self.kl = torch.zeros(())

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        """Sample z from the bottleneck and classify it."""
        feature = bottleneck_input(self.backbone, x)
        stats = self.statistics(feature)
        mu, sigma = stats[:, : self.k], F.softplus(stats[:, self.k :] - 5)
        sample = self.training or self.sample_at_test
        z = mu + sigma * torch.randn_like(sigma) if sample else mu
        self.kl = gaussian_kl(mu, sigma)
        return ClassifierOutput(feature, self.head(z))


def bottleneck_input(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the bottleneck reads: the architecture's `bottleneck_input`, else the model's penultimate feature."""
    reader = getattr(model, "bottleneck_input", None)
    return reader(x) if reader is not None else model(x).features


@DEFENSES.register
class MID(Defense):
    """Mutual-information regularisation through a variational bottleneck (VIB)."""

    name: ClassVar[str] = "mid"
    paper: ClassVar[str] = (
        "Wang et al., Improving Robustness to Model Inversion Attacks via Mutual Information Regularization, AAAI 2021"
    )
    official: ClassVar[str | None] = "Jiachen-T-Wang/mi-defense @ 23dc853"
    version: ClassVar[int] = 2  # 2: VGG16_vib's raw-feature bottleneck and exposed feature, identity sampler, IR k 512
    Params = MIDParams
    strength: ClassVar[tuple[str, ...]] = ("beta",)

    def wrap(self, model: nn.Module) -> nn.Module:
        """Replace the head with the bottleneck (sizes read from the model's own bottleneck input)."""
        feature_dim = probe_width(model, bottleneck_input)
        k = self.params.bottleneck or getattr(model, "vib_bottleneck", None) or max(1, feature_dim // 2)
        return VIBClassifier(model, feature_dim, model.num_classes, k, self.params.sample_at_test)

    def configure(self, setup: TrainingSetup) -> TrainingSetup:
        """Apply the recipe (identity-balanced batches) and add beta * KL to the loss."""
        beta = self.params.beta
        setup = setup.with_recipe(self.params.recipe)
        return setup.with_term("kl", lambda model, images, labels, out: {"kl": beta * _vib(model).kl})


def _vib(model: nn.Module) -> VIBClassifier:
    """The VIB module of a (possibly further wrapped) model."""
    for module in model.modules():
        if isinstance(module, VIBClassifier):
            return module
    raise TypeError("MID's KL term needs the model wrapped by MID")
