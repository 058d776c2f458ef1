"""Stealthy Shield Defense (SSD; Zhuang, Yu, Qiu, Fang, Chen, Xia; ICLR 2025).

"A Conditional Mutual Information-Based Approach against Black-Box Model Inversion Attacks".

A deploy-time post-processing of the released probabilities against black-box and label-only attacks; the target is
not retrained. Per query x with probabilities f = f(x) (paper Algorithm 1; official `code.py` @ 493f4ce,
`Stealthy_Shield_Defense` and `GPU_based_water_filling`):

1. a class y is drawn from softmax(f / T) (the temperature calibrates P(y | x); T = 0.1);
2. q_y is the model's mean probability vector over the defender's validation images of class y (D', computed once);
3. the output p* minimises KL(p || q_y) over the simplex subject to ||p - f||_1 <= eps H(f), H the entropy of f
   (adaptive rate-distortion; eps = 0.5). Its solution (water filling, paper Appendix B): q_y itself when it lies
   within the budget, else f clipped coordinate-wise between w_A q_y and w_B q_y, where raising the coordinates
   with the lowest ratios f / q_y to w_A q_y adds eps H / 2 of mass and lowering the highest to w_B q_y removes
   as much.

The released model's logits are log p*, so probabilities, labels and scores all come from p*; the features are the
target's. The draws come from the deployed copy's generator (seeded by the target key), one per query in order.
mibench's defender validation set is the private test split (the paper uses a validation split; mibench's data
have none): D' is one mean vector per class, and the test accuracy is measured through the sampling it drives.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from mibench.api.context import RunContext
from mibench.api.defense import Defense
from mibench.api.metric import Measurement
from mibench.data.base import DataBundle, iterate_batches, to_float
from mibench.models.base import ClassifierOutput
from mibench.params import Params
from mibench.registry import DEFENSES


class SSDParams(Params):
    """The official defaults (`code.py`: T 0.1, eps 0.5)."""

    temperature: float = Field(0.1, gt=0, description="T of the class draw softmax(f / T)")
    epsilon: float = Field(0.5, ge=0, description="distortion controller: ||p - f||_1 <= eps H(f)")


def class_mean_outputs(model: nn.Module, data, num_classes: int, device: torch.device) -> torch.Tensor:
    """D': row y is the model's mean probability vector over the images of class y (uniform where a class has none)."""
    sums = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    counts = torch.zeros(num_classes, dtype=torch.float64)
    with torch.no_grad():
        for idx in iterate_batches(len(data), 256):
            probs = model(to_float(data.images[idx], device)).logits.softmax(1).double().cpu()
            labels = data.labels[idx]
            sums.index_add_(0, labels, probs)
            counts.index_add_(0, labels, torch.ones(len(labels), dtype=torch.float64))
    means = sums / counts.clamp_min(1).unsqueeze(1)
    means[counts == 0] = 1.0 / num_classes
    return means.float()


def water_fill(f: torch.Tensor, q: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
    """Argmin KL(p || q) over the simplex with ||p - f||_1 <= budget, per row (paper Appendix B).

    q itself when ||f - q||_1 <= budget. Otherwise, with ratios r = f / q sorted ascending: the k lowest coordinates
    rise to w_A q where w_A = (sum of their f + budget / 2) / (sum of their q), k the count for which w_A falls between
    the k-th and the (k+1)-th ratio; symmetrically the highest fall to w_B q, removing budget / 2. The rest keep f.
    """
    inside = (f - q).abs().sum(1) <= budget
    ratio, order = (f / q).sort(dim=1)
    fs, qs = f.gather(1, order), q.gather(1, order)
    half = (budget / 2).unsqueeze(1)
    # raising the k lowest (k = 1..K): the level that adds `half` of mass, valid where it stays below ratio k + 1
    low = (fs.cumsum(1) + half) / qs.cumsum(1)
    next_ratio = torch.cat([ratio[:, 1:], torch.full_like(ratio[:, :1], float("inf"))], dim=1)
    w_a = low.gather(1, (low <= next_ratio).int().argmax(1, keepdim=True))
    # lowering the k highest: the level that removes `half`, valid where it stays above the ratio below them
    high = (fs.flip(1).cumsum(1) - half) / qs.flip(1).cumsum(1)
    prev_ratio = torch.cat([ratio.flip(1)[:, 1:], torch.full_like(ratio[:, :1], -float("inf"))], dim=1)
    w_b = high.gather(1, (high >= prev_ratio).int().argmax(1, keepdim=True))
    clipped = torch.minimum(torch.maximum(f, w_a * q), w_b * q)
    return torch.where(inside.unsqueeze(1), q, clipped)


def shield(probs: torch.Tensor, means: torch.Tensor, p: SSDParams, generator: torch.Generator) -> torch.Tensor:
    """SSD's post-processed probabilities of a batch of probability vectors (module docstring)."""
    # A non-finite query (a diverged attack's image) passes through unchanged: there is nothing to draw from.
    finite = torch.isfinite(probs).all(1, keepdim=True)
    weights = torch.where(finite, probs.detach() / p.temperature, torch.zeros_like(probs)).softmax(1)
    drawn = torch.multinomial(weights.cpu(), 1, generator=generator).view(-1)
    q = means.to(probs.device)[drawn.to(probs.device)]
    entropy = -(probs * probs.clamp_min(1e-38).log()).sum(1)
    return torch.where(finite, water_fill(probs, q, p.epsilon * entropy), probs)


class ShieldedClassifier(nn.Module):
    """The released model: the target's features, and logits log p* of SSD's post-processed probabilities."""

    def __init__(self, target: nn.Module, means: torch.Tensor, params: SSDParams, generator: torch.Generator):
        super().__init__()
        self.target = target
        self.register_buffer("means", means)
        self.params = params
        self.generator = generator

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        """Post-processed logits, differentiable for white-box attackers.

        The gradient flows where p* follows f (unclipped coordinates and the clipping levels) and is zero where p*
        is q_y; the class draw is not differentiated.
        """
        out = self.target(x)
        probs = shield(out.logits.float().softmax(1), self.means, self.params, self.generator)
        return out._replace(logits=probs.clamp_min(1e-38).log())


@DEFENSES.register
class SSD(Defense):
    """Post-process released probabilities towards the drawn class's mean output, within an entropy-scaled budget."""

    name: ClassVar[str] = "ssd"
    paper: ClassVar[str] = (
        "Zhuang et al., Stealthy Shield Defense: A Conditional Mutual Information-Based Approach against Black-Box "
        "Model Inversion Attacks, ICLR 2025"
    )
    official: ClassVar[str | None] = "ZhuangQu/Stealthy-Shield-Defense @ 493f4ce"
    Params = SSDParams
    strength: ClassVar[tuple[str, ...]] = ("epsilon",)
    deploy_only: ClassVar[bool] = True  # post-processing only: the undefended target's weights serve it

    def __init__(self, params: SSDParams):
        super().__init__(params)
        self._means: torch.Tensor | None = None

    def finish(
        self, model: nn.Module, data: DataBundle, ctx: RunContext
    ) -> tuple[dict[str, torch.Tensor], list[Measurement]]:
        """D' on the defender's validation images (the private test split); cached with the target."""
        was_training = model.training
        model.eval()
        self._means = class_mean_outputs(model, data.private_test, data.num_classes, ctx.device)
        model.train(was_training)
        return {"class_means": self._means}, []

    def restore(self, model: nn.Module, extras: dict[str, torch.Tensor]) -> None:
        """D' from the cached extras."""
        self._means = extras["class_means"]

    def deploy(self, model: nn.Module, generator: torch.Generator) -> nn.Module:
        """The target behind SSD's post-processing, drawing from the deployed copy's generator."""
        if self._means is None:
            raise RuntimeError("ssd: deploy before restore (D' is computed with the target)")
        return ShieldedClassifier(model, self._means, self.params, generator)
