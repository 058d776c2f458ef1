"""Output purifiers: inference-time wrappers that rewrite the target's prediction vector, trained on public data.

Both follow the MI toolbox (ffhibnese/Model-Inversion-Attack-ToolBox @ d9ad48f,
`models/classifiers/wrappers.py` `ConditionPurifierWrapper` and `AdversarialPurifierWrapper`,
`train/classifier/base.py` `ConditionPurifierTrainer`; added Nov 2024), read for this file and re-expressed here.
The target is trained as usual (or with the defenses stacked before the purifier); the purifier is trained after it
(`finish`), kept with the target, and wraps the released model (`deploy`), so every access level sees purified
outputs: labels and probabilities come from the purified logits, and white-box attacks differentiate through the
wrapper (the features are the target's own; only the outputs are purified).

* `conditional-purifier` (after Yang et al., "Purifier: Defending Data Inference Attacks via Transforming Confidence
  Scores", AAAI 2023, in the toolbox's form): a residual MLP on the logits, conditioned on an embedding of the
  predicted class: z' = z + fc2(relu(fc1([z, emb(argmax z)]))), embedding 512-d, hidden 256. Trained on the public
  images with the target frozen: CE(z', argmax z) + 0.1 MSE(z', z). Differences from the toolbox: its output layer
  is sized to the target's feature width, which only runs when that equals the class count; here it is the class
  count. The toolbox gives no training recipe: Adam lr 1e-3, 20 epochs, batch 128 are mibench's.
* `adversarial-purifier` (after Wen et al., "Defending against Model Inversion Attack by Adversarial Examples",
  IEEE CSR 2021, in the toolbox's form): a defender-side inversion decoder (Yang et al.'s, trained on the public
  images against this target, as the attacker would) guides signed-gradient steps on the logits that increase its
  reconstruction error: z <- z + eta sign(d MSE(G(enc(softmax z)), x) / dz), then the predicted class is lifted back
  to the maximum and the perturbation is scaled into an L1 ball of radius eps, so labels change only on an exact tie
  at the maximum (argmax takes the lower index; the toolbox's rule, kept; about 1% at 5 classes). The toolbox
  version does not run (it reads `loss.grad` of a scalar, takes the argmax over the whole batch, calls softmax without
  a dimension); mibench does what it describes, per image. The perturbation is computed without tracking gradients
  and added as a constant, so white-box gradients are those of the target's logits. Iterations 10, eta 0.05 and
  eps 1.0 are mibench's defaults (the toolbox takes them as arguments without defaults).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from mibench.api.context import RunContext
from mibench.api.defense import Defense
from mibench.api.metric import Measurement
from mibench.data.base import DataBundle, ImageSet, iterate_batches, to_float
from mibench.inversion.decoder import DecoderTraining, InversionDecoder, fit_decoder, log_confidence_encoding
from mibench.models.base import ClassifierOutput
from mibench.params import Params
from mibench.registry import DEFENSES


class PurifiedClassifier(nn.Module):
    """The released model: the target's features, and its logits passed through `purify(logits, images)`."""

    def __init__(self, target: nn.Module, purifier: nn.Module):
        super().__init__()
        self.target = target
        self.purifier = purifier

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        """Purified logits (and the target's own features)."""
        out = self.target(x)
        return out._replace(logits=self.purifier(out.logits, x))


class ConditionalMLP(nn.Module):
    """z + fc2(relu(fc1([z, emb(argmax z)]))): the toolbox's `_ConditionMLP1d` with a class-count output."""

    outside_target = True  # not part of the classifier (DeepInversion reads only the classifier's BatchNorms)

    def __init__(self, num_classes: int, embedding: int):
        super().__init__()
        self.embedding = nn.Embedding(num_classes, embedding)
        self.fc1 = nn.Linear(num_classes + embedding, embedding // 2)
        self.fc2 = nn.Linear(embedding // 2, num_classes)

    def forward(self, logits: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        """Purified logits."""
        condition = self.embedding(logits.argmax(1))
        return logits + self.fc2(F.relu(self.fc1(torch.cat([logits, condition], dim=1))))


def purification_loss(purified: torch.Tensor, original: torch.Tensor, mse_weight: float) -> torch.Tensor:
    """CE(z', argmax z) + w MSE(z', z): keep the predicted class, stay near the original logits (the toolbox's)."""
    return F.cross_entropy(purified, original.argmax(1)) + mse_weight * F.mse_loss(purified, original)


@torch.no_grad()
def target_logits(model: nn.Module, images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """The trained target's logits on uint8 images, in batches."""
    model.eval()
    return torch.cat([model(to_float(images[idx], device)).logits for idx in iterate_batches(len(images), 256)])


@torch.no_grad()
def label_agreement(model: nn.Module, purifier: nn.Module, data: ImageSet, device: torch.device) -> float:
    """How often the purified prediction keeps the target's label, on `data`."""
    deployed = PurifiedClassifier(model, purifier).eval()
    same = 0
    for idx in iterate_batches(len(data), 256):
        x = to_float(data.images[idx], device)
        same += int((deployed(x).logits.argmax(1) == model(x).logits.argmax(1)).sum())
    return same / max(len(data), 1)


class ConditionalPurifierParams(Params):
    """The toolbox's sizes and loss weight; the training recipe is mibench's."""

    embedding: int = Field(512, ge=2, description="class-embedding width (hidden layer: half of it)")
    mse_weight: float = Field(0.1, ge=0, description="weight of MSE(purified, original logits)")
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0)


class _Purifier(Defense):
    """Shared plumbing: the purifier module lives in the extras; `deploy` wraps the target with it."""

    deploy_only: ClassVar[bool] = True  # trained on the released (undefended) target, never changes its weights

    def __init__(self, params: Params):
        super().__init__(params)
        self._purifier: nn.Module | None = None

    def build(self, num_classes: int, data_shape: tuple[int, int, int]) -> nn.Module:  # pragma: no cover
        """A fresh purifier for `num_classes` outputs and images of `data_shape`."""
        raise NotImplementedError

    def restore(self, model: nn.Module, extras: dict[str, torch.Tensor]) -> None:
        """Rebuild the purifier from its cached weights."""
        shape = tuple(int(v) for v in extras["shape"].tolist())
        purifier = self.build(int(extras["num_classes"]), shape)
        purifier.load_state_dict(
            {k.removeprefix("purifier."): v for k, v in extras.items() if k.startswith("purifier.")}
        )
        self._purifier = purifier.eval()

    def deploy(self, model: nn.Module, generator: torch.Generator) -> nn.Module:
        """The target behind its purifier."""
        if self._purifier is None:
            raise RuntimeError(f"{self.name}: deploy before restore (the purifier is trained with the target)")
        device = next(model.parameters()).device
        return PurifiedClassifier(model, self._purifier.to(device))

    def _kept(
        self, purifier: nn.Module, model: nn.Module, data: DataBundle, ctx: RunContext, details: dict
    ) -> tuple[dict[str, torch.Tensor], list[Measurement]]:
        """Extras holding the purifier, and its label agreement on the private test images."""
        purifier.eval()
        self._purifier = purifier
        extras = {f"purifier.{k}": v.detach().cpu() for k, v in purifier.state_dict().items()}
        extras["num_classes"] = torch.tensor(data.num_classes)
        extras["shape"] = torch.tensor(data.image_shape)
        agreement = label_agreement(model, purifier, data.private_test, ctx.device)
        return extras, [Measurement("purifier_label_agreement", agreement, True, "fraction", details)]


@DEFENSES.register
class ConditionalPurifier(_Purifier):
    """A class-conditioned residual MLP on the logits (see module docstring)."""

    name: ClassVar[str] = "conditional-purifier"
    paper: ClassVar[str] = "Yang et al., Purifier, AAAI 2023 (the MI toolbox's conditional purifier, 2024)"
    official: ClassVar[str | None] = "ffhibnese/Model-Inversion-Attack-ToolBox @ d9ad48f"
    Params = ConditionalPurifierParams
    strength: ClassVar[tuple[str, ...]] = ("mse_weight",)

    def build(self, num_classes: int, data_shape: tuple[int, int, int]) -> nn.Module:
        """The MLP for this class count."""
        return ConditionalMLP(num_classes, self.params.embedding)

    def finish(
        self, model: nn.Module, data: DataBundle, ctx: RunContext
    ) -> tuple[dict[str, torch.Tensor], list[Measurement]]:
        """Fit the MLP on the public images against the frozen target."""
        p: ConditionalPurifierParams = self.params
        device = ctx.device
        logits = target_logits(model, data.public.images, device)
        purifier = self.build(data.num_classes, data.image_shape).to(device).train()
        opt = torch.optim.Adam(purifier.parameters(), lr=p.lr)
        shuffle = ctx.generator("purifier-shuffle")
        with ctx.reporter.bar("conditional purifier", p.epochs * -(-len(logits) // p.batch_size)) as advance:
            for _ in range(p.epochs):
                for idx in iterate_batches(len(logits), p.batch_size, generator=shuffle):
                    z = logits[idx.to(device)]
                    out = purifier(z)
                    loss = purification_loss(out, z, p.mse_weight)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    advance(1)
        details = {"trained_on": "public", "epochs": p.epochs}
        return self._kept(purifier, model, data, ctx, details)


class AdversarialPurifierParams(Params):
    """Perturbation steps and budget (mibench's defaults) and the defender's inversion decoder (Yang's)."""

    iterations: int = Field(10, ge=1)
    eta: float = Field(0.05, gt=0, description="signed-gradient step on the logits")
    eps: float = Field(1.0, gt=0, description="L1 radius of the logit perturbation")
    decoder_width: int = Field(128, ge=1, description="ngf of the defender's inversion decoder")
    decoder_epochs: int = Field(100, ge=1)
    truncation: int | None = Field(None, ge=1, description="top-k of the decoder's input encoding (null: all)")
    c: float = 50.0


class AdversarialLogits(nn.Module):
    """Label-preserving L1-bounded logit perturbation against an inversion decoder (see module docstring)."""

    outside_target = True  # its decoder's BatchNorms are not the classifier's (DeepInversion's prior)

    def __init__(self, decoder: InversionDecoder, params: AdversarialPurifierParams):
        super().__init__()
        self.decoder = decoder
        self.iterations, self.eta, self.eps = params.iterations, params.eta, params.eps
        self.truncation, self.c = params.truncation, params.c

    def forward(self, logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """Logits plus the perturbation (a constant for autograd)."""
        return logits + self.perturbation(logits.detach(), images.detach())

    def perturbation(self, original: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """The noise added to `original` logits for these images."""
        label = original.argmax(1, keepdim=True)
        current = original.clone()
        self.decoder.eval()
        for _ in range(self.iterations):
            with torch.enable_grad():
                z = current.clone().requires_grad_(True)
                encoded = log_confidence_encoding(F.softmax(z, dim=1), self.truncation, self.c)
                loss = F.mse_loss(self.decoder(encoded), images, reduction="sum")
                (grad,) = torch.autograd.grad(loss, z)
            with torch.no_grad():
                moved = current + self.eta * grad.sign()
                lift = F.relu(moved.max(1, keepdim=True).values - moved.gather(1, label))
                moved = moved.scatter_add(1, label, lift)  # the predicted class back to the maximum
                noise = moved - original
                norm = noise.abs().sum(1, keepdim=True)
                noise = noise * torch.where(norm > self.eps, self.eps / norm.clamp_min(1e-12), torch.ones_like(norm))
                current = original + noise
        return (current - original).detach()


@DEFENSES.register
class AdversarialPurifier(_Purifier):
    """Adversarial noise on the logits against a defender-trained inversion decoder (see module docstring)."""

    name: ClassVar[str] = "adversarial-purifier"
    paper: ClassVar[str] = "Wen et al., Defending against MI by Adversarial Examples, CSR 2021 (the MI toolbox's)"
    official: ClassVar[str | None] = "ffhibnese/Model-Inversion-Attack-ToolBox @ d9ad48f"
    Params = AdversarialPurifierParams
    strength: ClassVar[tuple[str, ...]] = ("eps",)

    def build(self, num_classes: int, data_shape: tuple[int, int, int]) -> nn.Module:
        """The perturbation module around a decoder at the data's resolution."""
        channels, height, width = data_shape
        size = height if height == width else (height, width)
        decoder = InversionDecoder(num_classes, size, channels, self.params.decoder_width)
        return AdversarialLogits(decoder, self.params)

    def finish(
        self, model: nn.Module, data: DataBundle, ctx: RunContext
    ) -> tuple[dict[str, torch.Tensor], list[Measurement]]:
        """Train the decoder on the public images' prediction vectors, as Yang et al.'s attacker would."""
        p: AdversarialPurifierParams = self.params
        purifier = self.build(data.num_classes, data.image_shape)
        probabilities = F.softmax(target_logits(model, data.public.images, ctx.device), dim=1)
        encoded = log_confidence_encoding(probabilities, p.truncation, p.c)
        training = DecoderTraining(epochs=p.decoder_epochs)
        fit_decoder(purifier.decoder, encoded, data.public.images, training, ctx, "purifier inversion decoder")
        details = {"trained_on": "public", "iterations": p.iterations, "eta": p.eta, "eps": p.eps}
        return self._kept(purifier.to(ctx.device), model, data, ctx, details)
