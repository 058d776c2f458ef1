"""Training-based inversion machinery: Yang et al.'s decoder from prediction vectors to images (CCS 2019).

Shared by the inversion-network attack and the adversarial output purifier (which trains the same decoder to
simulate that attacker). Official code: yziqi/adversarial-model-inversion @ c421bbc (`model.py` `Inversion`,
`train_inversion.py`); see `mibench.attacks.inversion_network` for what each piece follows.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mibench.api.context import RunContext
from mibench.data.base import iterate_batches, to_float

LOG_FLOOR = -1000.0  # the official clamp of log p (a zero probability)


class InversionDecoder(nn.Module):
    """K-vector -> image: ConvTranspose 1 -> 4, then x2 per layer up to `image_size` (a power of two >= 8)."""

    def __init__(self, num_classes: int, image_size: int, channels: int, width: int):
        super().__init__()
        ups = int(math.log2(image_size // 4)) if isinstance(image_size, int) and image_size >= 4 else 0
        if not isinstance(image_size, int) or 4 * 2**ups != image_size or ups < 1:
            raise ValueError(f"the inversion decoder needs a square power-of-two image size >= 8, got {image_size}")
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

    def forward(self, encoded: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] from N x K encoded prediction vectors."""
        return self.net(encoded[:, :, None, None])


def truncate(scores: torch.Tensor, k: int | None) -> torch.Tensor:
    """Keep each row's k largest entries and zero the others (all of them when k is None)."""
    if k is None or k >= scores.shape[1]:
        return scores
    top = scores.topk(k, dim=1)
    return torch.zeros_like(scores).scatter(1, top.indices, top.values)


def log_confidence_encoding(probabilities: torch.Tensor, k: int | None, c: float) -> torch.Tensor:
    """Yang et al.'s decoder input: top-k of log p clamped at -1000, plus c, shifted to >= 0, scattered into zeros.

    `model.py:89-94` of the official code: the shift adds relu(-min) of the kept values, so it only acts when some
    kept log-probability is below -c.
    """
    k = probabilities.shape[1] if k is None else min(k, probabilities.shape[1])
    top = probabilities.topk(k, dim=1)
    values = torch.log(top.values).clamp(min=LOG_FLOOR) + c
    values = values + F.relu(-values.min(dim=1, keepdim=True).values)
    return torch.zeros_like(probabilities).scatter(1, top.indices, values)


@dataclass(frozen=True)
class DecoderTraining:
    """Adam settings, epochs and batch size of the decoder fit (the official defaults)."""

    epochs: int = 100
    batch_size: int = 128
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    amsgrad: bool = True


def fit_decoder(
    decoder: nn.Module,
    encoded: torch.Tensor,
    images: torch.Tensor,
    training: DecoderTraining,
    ctx: RunContext,
    description: str = "inversion decoder",
) -> nn.Module:
    """Minimise the MSE between `decoder(encoded[i])` and image i (uint8 images, encoded vectors on the device)."""
    device = ctx.device
    decoder.to(device).train()
    t = training
    opt = torch.optim.Adam(decoder.parameters(), lr=t.lr, betas=(t.beta1, t.beta2), amsgrad=t.amsgrad)
    shuffle = ctx.generator("shuffle")
    steps = t.epochs * -(-len(images) // t.batch_size)
    with ctx.reporter.bar(description, steps) as advance:
        for _ in range(t.epochs):
            for idx in iterate_batches(len(images), t.batch_size, generator=shuffle):
                loss = F.mse_loss(decoder(encoded[idx.to(device)]), to_float(images[idx], device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                advance(1)
    return decoder.eval()
