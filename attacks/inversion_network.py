"""Training-based inversion: "Neural Network Inversion in Adversarial Setting via Background Knowledge Alignment".

Yang, Zhang, Chang, Liang; CCS 2019. A decoder G_inv learns, on the attacker's public (background) images x, to map
the target's confidence vector back to the image: min ||G_inv(trunc(F(x))) - x||^2. Black-box: only confidence
scores (`probabilities` access). `truncation: k` keeps the k largest scores and zeroes the rest, in training and at
inversion (the paper's defence-aware variant for partial prediction vectors); null keeps the full vector.

For class-representative reconstruction the attack decodes the ideal prediction of class y, the one-hot vector. The
decoder is the paper's: the vector as a K x 1 x 1 map, transposed convolutions (4x4) with batch norm and tanh,
doubling the resolution to the image size, and a sigmoid output. The paper trains "until convergence"; the epoch
count is a parameter (default 100, Adam 2e-4, betas (0.5, 0.999), batch 128).
"""

from __future__ import annotations

import itertools
import math
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from mibench.attack import Attack, DataInfo, Reconstructions
from mibench.context import RunContext
from mibench.data.base import ImageSet, iterate_batches, to_float
from mibench.oracle import Access, TargetOracle
from mibench.params import Params
from mibench.registry import ATTACKS


class InversionNetParams(Params):
    """Decoder width, training settings and truncation."""

    width: int = Field(128, ge=1, description="ngf, channels of the last hidden layer")
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(2e-4, gt=0)
    beta1: float = 0.5
    beta2: float = 0.999
    truncation: int | None = Field(None, ge=1, description="keep the top-k confidence scores (null: all)")


class InversionDecoder(nn.Module):
    """K-vector -> image: ConvTranspose 1 -> 4, then x2 per layer up to `image_size` (a power of two >= 8)."""

    def __init__(self, num_classes: int, image_size: int, channels: int, width: int):
        super().__init__()
        ups = int(math.log2(image_size // 4))
        if 4 * 2**ups != image_size:
            raise ValueError(f"the inversion decoder needs a power-of-two image size >= 8, got {image_size}")
        dims = [width * 2 ** (ups - 1 - i) for i in range(ups)]  # e.g. 8w, 4w, 2w, w at 64x64
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(num_classes, dims[0], 4, 1, 0),
            nn.BatchNorm2d(dims[0]),
            nn.Tanh(),
        ]
        for a, b in itertools.pairwise(dims):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1), nn.BatchNorm2d(b), nn.Tanh()]
        layers += [nn.ConvTranspose2d(dims[-1], channels, 4, 2, 1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] from N x K score vectors."""
        return self.net(scores[:, :, None, None])


def truncate(scores: torch.Tensor, k: int | None) -> torch.Tensor:
    """Keep each row's k largest entries and zero the others (all of them when k is None)."""
    if k is None or k >= scores.shape[1]:
        return scores
    top = scores.topk(k, dim=1)
    return torch.zeros_like(scores).scatter(1, top.indices, top.values)


@ATTACKS.register
class InversionNetwork(Attack):
    """A decoder trained on public data to invert the target's confidence vectors."""

    name: ClassVar[str] = "inversion-network"
    paper: ClassVar[str] = (
        "Yang et al., Neural Network Inversion in Adversarial Setting via Background Knowledge Alignment, CCS 2019"
    )
    access: ClassVar[Access] = Access.PROBABILITIES
    Params = InversionNetParams
    prior_name: ClassVar[str] = "inversion-decoder"
    prior_uses_target: ClassVar[bool] = True

    def prior_params(self) -> InversionNetParams:
        """Everything about the decoder and its training."""
        return self.params

    def build_prior(self, info: DataInfo, name: str | None = None) -> InversionDecoder:
        """The decoder at the data's resolution."""
        return InversionDecoder(info.num_classes, info.image_size, info.channels, self.params.width)

    def train_prior(
        self, prior: nn.Module, public: ImageSet, oracle: TargetOracle | None, ctx: RunContext, name: str | None = None
    ) -> None:
        """Query the target once on every public image, then fit the decoder with MSE."""
        p: InversionNetParams = self.params
        device = ctx.device
        scores = torch.cat(
            [oracle.probabilities(to_float(public.images[idx], device)) for idx in iterate_batches(len(public), 256)]
        )
        scores = truncate(scores, p.truncation)
        prior.to(device).train()
        opt = torch.optim.Adam(prior.parameters(), lr=p.lr, betas=(p.beta1, p.beta2))
        shuffle = ctx.generator("shuffle")
        steps = p.epochs * -(-len(public) // p.batch_size)
        with ctx.reporter.bar("inversion decoder", steps) as advance:
            for _ in range(p.epochs):
                for idx in iterate_batches(len(public), p.batch_size, generator=shuffle):
                    loss = F.mse_loss(prior(scores[idx.to(device)]), to_float(public.images[idx], device))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    advance(1)
        prior.eval()

    def invert(self, prior, oracle: TargetOracle, classes: torch.Tensor, ctx: RunContext) -> Reconstructions:
        """Decode the one-hot prediction of each class (no target queries)."""
        prior = prior.to(ctx.device).eval()
        onehot = F.one_hot(classes, oracle.num_classes).float().to(ctx.device)
        with torch.no_grad():
            images = prior(truncate(onehot, self.params.truncation)).cpu()
        return Reconstructions(images, classes.clone(), torch.zeros_like(classes), None, {})
