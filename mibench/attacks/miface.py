"""MI-Face: "Model Inversion Attacks that Exploit Confidence Information and Basic Countermeasures".

Fredrikson, Jha, Ristenpart; CCS 2015, Algorithm 1. Gradient descent on the image itself (no generator) to minimise
c(x) = 1 - softmax(T(x))_y, starting from x0 = 0, with the paper's stopping rules: at most `iterations` (alpha)
steps; stop when the cost is at least the largest of the last `patience` (beta) costs; stop when the class
confidence reaches gamma = 0.99; return the lowest-cost image seen. (Algorithm 1 writes the last rule as
c(x) <= gamma; read literally with gamma = 0.99, any start image with confidence above 1% would stop at once, so
gamma is taken as the confidence to reach, c(x) <= 1 - gamma.) `Process` is the denoising step after every update:
`denoise: gaussian` blurs with a 3x3 Gaussian (the paper denoises and sharpens for its DAE target; for softmax and
MLP targets Process is the identity, `denoise: none`). Pixels stay in [0, 1]. Face defaults (alpha 5000, beta 100,
gamma 0.99, lambda 0.1) are the paper's; all classes descend together, each with its own stopping state.

The MIDAS shallow notebook (katekemu/model_inversion_defense @ 1f32327, `MIDAS_shallow.ipynb` cells 19, 30) runs a
variant, reproduced by its parameters (`suites/midas.yaml`): cross-entropy instead of 1 - p_y (`cost:
cross-entropy`), 30 steps of lambda 1e-2 from x0 = 0, no stopping rules (`patience: null`, `confidence_threshold:
null`), pixels clamped to [0, 255] on [0, 1] images (`pixel_max: 255`), after every step one N(1, 1) value added to
the whole image (`step_noise: [1, 1]`, drawn from the job's generator), and the kept image is the updated one of the
step whose *pre-step* loss was the lowest after step 10 (`selection: pre-step-cost`, `select_after: 10`).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from mibench.api.attack import Attack, Reconstructions
from mibench.api.context import RunContext
from mibench.api.oracle import Access, TargetOracle
from mibench.params import Params
from mibench.registry import ATTACKS


class MIFaceParams(Params):
    """Algorithm 1 settings for faces (Fredrikson et al. 2015, Sec. 5.2)."""

    iterations: int = Field(5000, ge=1, description="alpha, the maximum number of steps")
    patience: int | None = Field(100, ge=1, description="beta: stop if no improvement on the last beta costs")
    confidence_threshold: float | None = Field(0.99, gt=0, le=1, description="gamma: stop at this class confidence")
    lr: float = Field(0.1, gt=0, description="lambda, the gradient step")
    denoise: Literal["none", "gaussian"] = "none"
    denoise_sigma: float = Field(0.5, gt=0)
    cost: Literal["softmax", "cross-entropy"] = Field("softmax", description="1 - p_y (paper) or -log p_y (MIDAS)")
    pixel_max: float = Field(1.0, gt=0, description="upper clamp of pixels (MIDAS notebook: 255 on [0, 1] images)")
    step_noise: tuple[float, float] | None = Field(None, description="mean, std of a per-image shift after each step")
    selection: Literal["lowest-cost", "pre-step-cost"] = "lowest-cost"
    select_after: int = Field(-1, ge=-1, description="pre-step-cost: only steps with index above this count")


def gaussian_blur3(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Depthwise 3x3 Gaussian blur with replicate padding."""
    t = torch.tensor([-1.0, 0.0, 1.0], device=x.device)
    k1 = torch.exp(-(t**2) / (2 * sigma**2))
    k = torch.outer(k1, k1)
    k = (k / k.sum()).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, groups=x.shape[1])


@ATTACKS.register
class MIFace(Attack):
    """Confidence-gradient descent on the input of a shallow target."""

    name: ClassVar[str] = "miface"
    paper: ClassVar[str] = "Fredrikson et al., Model Inversion Attacks that Exploit Confidence Information, CCS 2015"
    official: ClassVar[str | None] = None  # no official code (FIDELITY.md)
    access: ClassVar[Access] = Access.WHITE_BOX
    Params = MIFaceParams

    def _cost(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-image cost: 1 - softmax_y (Fredrikson's c) or the cross-entropy -log softmax_y (MIDAS notebook)."""
        if self.params.cost == "cross-entropy":
            return F.cross_entropy(logits, y, reduction="none")
        return 1 - torch.softmax(logits, dim=1).gather(1, y[:, None]).squeeze(1)

    def invert(self, prior, oracle: TargetOracle, classes: torch.Tensor, ctx: RunContext) -> Reconstructions:
        """Algorithm 1 for every class at once."""
        p: MIFaceParams = self.params
        y = classes.to(ctx.device)
        x = torch.zeros(len(classes), *oracle.image_shape, device=ctx.device)
        best = x.clone()
        best_cost = torch.full((len(classes),), float("inf"), device=ctx.device)
        history = torch.full((len(classes), p.patience or 1), float("inf"), device=ctx.device)
        active = torch.ones(len(classes), dtype=torch.bool, device=ctx.device)
        steps = torch.zeros(len(classes), device=ctx.device)
        noise = ctx.generator("miface-step-noise")
        with ctx.reporter.bar("MI-Face gradient descent", p.iterations) as advance:
            for i in range(p.iterations):
                if not active.any():
                    break
                xa = x[active].requires_grad_(True)
                cost = self._cost(oracle.logits(xa), y[active])
                (grad,) = torch.autograd.grad(cost.sum(), xa)
                with torch.no_grad():
                    new = (xa - p.lr * grad).clamp(0, p.pixel_max)
                    if p.denoise == "gaussian":
                        new = gaussian_blur3(new, p.denoise_sigma)
                    idx = active.nonzero().squeeze(1)
                    if p.selection == "pre-step-cost":  # the loss of the image before the step judges its update
                        judged = cost.detach()
                        better = (judged < best_cost[idx]) & (i > p.select_after)
                    else:
                        judged = self._cost(oracle.logits(new), y[active])
                        better = judged < best_cost[idx]
                    best[idx[better]] = new[better]
                    best_cost[idx[better]] = judged[better]
                    if p.step_noise is not None:
                        mean, std = p.step_noise
                        shift = torch.randn(len(idx), generator=noise) * std + mean
                        new = (new + shift.to(new).view(-1, *([1] * (new.ndim - 1)))).clamp(0, p.pixel_max)
                    x[idx] = new
                    steps[idx] += 1
                    # Stop when c(x_i) >= max of the previous beta costs (no progress), or confidence >= gamma.
                    done = torch.zeros_like(judged, dtype=torch.bool)
                    if p.patience is not None:
                        done |= (judged >= history[idx].max(1).values) & (i >= p.patience)
                        history[idx] = torch.cat([history[idx, 1:], judged[:, None]], 1)
                    if p.confidence_threshold is not None:  # confidence gamma as a cost
                        gamma = p.confidence_threshold
                        done |= judged <= (1 - gamma if p.cost == "softmax" else -math.log(gamma))
                    active[idx] = ~done
                advance(1)
        stats = {"mean_steps": steps.mean().item(), "mean_cost": best_cost.mean().item()}
        return Reconstructions(best.cpu(), classes.clone(), torch.zeros_like(classes), None, stats)
