"""Training-based inversion: "Neural Network Inversion in Adversarial Setting via Background Knowledge Alignment".

Yang, Zhang, Chang, Liang; CCS 2019; official code yziqi/adversarial-model-inversion @ c421bbc. A decoder G_inv
learns, on the attacker's public (background) images x, to map the target's prediction vector back to the image:
min ||G_inv(enc(F(x))) - x||^2. Black-box: only confidence scores (`probabilities` access).

As the official code (`model.py` `Inversion.forward`, `train_inversion.py`):

* the decoder input is the log-confidence encoding `log_confidence_encoding`: the top-k scores (k = all by
  default, `truncation`), log p clamped at -1000, plus c = 50, shifted so that the smallest kept value is >= 0,
  scattered into zeros. Small probabilities, the image-specific signal, become visible to the first layer;
* the decoder: the vector as a K x 1 x 1 map, transposed convolutions (4x4) with batch norm and tanh, doubling the
  resolution to the image size, a sigmoid output; Adam 2e-4, betas (0.5, 0.999), amsgrad, batch 128, 100 epochs;
* the attack reconstructs **each victim image from the target's prediction vector for that image**, queried at
  attack time through the probabilities-level oracle (`oracle.victim_probabilities`), so an inference-time defense
  (MIDAS's corrupted weights) reaches the vectors the decoder sees. Victims are the private images of the attacked
  classes (`victim_split: train`, Yang's "test1", by default; `victims_per_class` caps them). Reconstructions name
  their victims, so `pcc` and `pixel-mse` score each against its own image, beside AA.

`protocol: class-onehot` keeps mibench's earlier class-representative variant (decode the one-hot vector of each
class, no attack-time query) as a named alternative; under the official encoding a one-hot vector lies far outside
the training inputs, so it is not the published attack. The official code keeps the epoch with the best MSE on the
private training set (`test1`); mibench keeps the last epoch (no private data in attacker model selection).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from mibench.api.attack import Attack, DataInfo, Reconstructions
from mibench.api.context import RunContext
from mibench.api.oracle import Access, TargetOracle
from mibench.data.base import ImageSet, iterate_batches, to_float
from mibench.inversion.decoder import (
    LOG_FLOOR,
    DecoderTraining,
    InversionDecoder,
    fit_decoder,
    log_confidence_encoding,
    truncate,
)
from mibench.params import Params
from mibench.registry import ATTACKS

__all__ = ["LOG_FLOOR", "InversionDecoder", "InversionNetwork", "log_confidence_encoding", "truncate"]


class InversionNetParams(Params):
    """Decoder width, training settings, the input encoding and the protocol (official defaults)."""

    width: int = Field(128, ge=1, description="ngf, channels of the last hidden layer")
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(2e-4, gt=0)
    beta1: float = 0.5
    beta2: float = 0.999
    amsgrad: bool = True
    truncation: int | None = Field(None, ge=1, description="keep the top-k confidence scores (null: all)")
    c: float = Field(50.0, description="constant added to log p (official `--c`)")
    protocol: Literal["per-image", "class-onehot"] = "per-image"
    victim_split: Literal["train", "test"] = Field("train", description="which private images are the victims")
    victims_per_class: int | None = Field(None, ge=1, description="the first N victims of each class (null: all)")


@ATTACKS.register
class InversionNetwork(Attack):
    """A decoder trained on public data to invert the target's prediction vectors of victim images."""

    name: ClassVar[str] = "inversion-network"
    paper: ClassVar[str] = (
        "Yang et al., Neural Network Inversion in Adversarial Setting via Background Knowledge Alignment, CCS 2019"
    )
    official: ClassVar[str | None] = "yziqi/adversarial-model-inversion @ c421bbc"
    version: ClassVar[int] = 2  # 2: the log-confidence encoding and the per-image protocol
    access: ClassVar[Access] = Access.PROBABILITIES
    Params = InversionNetParams
    prior_name: ClassVar[str] = "inversion-decoder"
    prior_version: ClassVar[int] = 2
    prior_uses_target: ClassVar[bool] = True
    observes_victims: ClassVar[bool] = True

    def prior_params(self) -> InversionNetParams:
        """Everything about the decoder and its training (the protocol and victims do not change it)."""
        attack_time = {"protocol": "per-image", "victim_split": "train", "victims_per_class": None}
        return self.params.model_copy(update=attack_time)

    def build_prior(self, info: DataInfo, name: str | None = None) -> InversionDecoder:
        """The decoder at the data's resolution."""
        return InversionDecoder(info.num_classes, info.image_size, info.channels, self.params.width)

    def encode(self, probabilities: torch.Tensor) -> torch.Tensor:
        """The decoder input for prediction vectors."""
        return log_confidence_encoding(probabilities, self.params.truncation, self.params.c)

    def train_prior(
        self, prior: nn.Module, public: ImageSet, oracle: TargetOracle | None, ctx: RunContext, name: str | None = None
    ) -> None:
        """Query the target once on every public image, then fit the decoder with MSE."""
        p: InversionNetParams = self.params
        device = ctx.device
        scores = torch.cat(
            [oracle.probabilities(to_float(public.images[idx], device)) for idx in iterate_batches(len(public), 256)]
        )
        training = DecoderTraining(p.epochs, p.batch_size, p.lr, p.beta1, p.beta2, p.amsgrad)
        fit_decoder(prior, self.encode(scores), public.images, training, ctx)

    def invert(self, prior, oracle: TargetOracle, classes: torch.Tensor, ctx: RunContext) -> Reconstructions:
        """Decode each victim's prediction vector (per-image), or each class's one-hot vector (class-onehot)."""
        p: InversionNetParams = self.params
        prior = prior.to(ctx.device).eval()
        if p.protocol == "class-onehot":
            onehot = F.one_hot(classes, oracle.num_classes).float()
            with torch.no_grad():
                images = prior(self.encode(onehot).to(ctx.device)).cpu()
            return Reconstructions(images, classes.clone(), torch.zeros_like(classes), None, {})
        victims = oracle.victim_indices(classes, p.victim_split, p.victims_per_class)
        labels = oracle.victim_labels(victims)
        vectors = oracle.victim_probabilities(victims)  # queried now: inference-time defenses act here
        with torch.no_grad():
            images = torch.cat(
                [prior(self.encode(vectors[idx]).to(ctx.device)).cpu() for idx in iterate_batches(len(victims), 256)]
            )
        restarts = torch.cat([torch.arange(int((labels == c).sum())) for c in classes.tolist()])
        stats = {"victims": float(len(victims))}
        return Reconstructions(images, labels, restarts, None, stats, victims=victims)
