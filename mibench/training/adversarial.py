"""Projected gradient descent (Madry et al., ICLR 2018), untargeted and targeted.

Untargeted for the adversarial-detection and robust-accuracy metrics; targeted for AT-AT's anti-adversarial
examples.

Trap-MID's Figure 3 attacks with AutoAttack `standard` (APGD-CE, APGD-T, FAB-T, Square), which is not on PyPI; mibench
uses PGD with a random start and the same budgets (L-inf 8/255, L2 0.5). PGD is the weaker adversary, so detection
rates are measured on easier adversarial examples than the paper's; records say which attack made them.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn


def _l2_normalise(v: torch.Tensor) -> torch.Tensor:
    return v / v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (v.dim() - 1)))


def _project(delta: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    if norm == "linf":
        return delta.clamp(-eps, eps)
    scale = (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
    return delta * scale.view(-1, *([1] * (delta.dim() - 1)))


def pgd_attack(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    norm: Literal["linf", "l2"],
    eps: float,
    steps: int = 50,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
    targeted: bool = False,
    random_start: bool = True,
) -> torch.Tensor:
    """Maximise the cross-entropy of `labels` within an `eps` ball (images stay in [0, 1]); returns the images.

    Steps: signed gradient (L-inf) or normalised gradient (L2) of size `step_size` (default 2.5 eps / steps), then
    projection onto the ball and the [0, 1] box. A uniform (L-inf) or scaled-Gaussian (L2) random start. `targeted`:
    minimise the cross-entropy of `labels` instead (towards those classes), as torchattacks' targeted PGD.
    The model is called in whatever mode it is in (AT-AT attacks its own training-mode network).
    """
    step_size = step_size or 2.5 * eps / steps
    if random_start:
        noise = (
            torch.rand(images.shape, generator=generator) * 2 - 1
            if norm == "linf"
            else torch.randn(images.shape, generator=generator)
        )
        noise = noise.to(images.device)
        delta = noise * eps if norm == "linf" else _project(_l2_normalise(noise) * eps * 0.5, norm, eps)
        delta = ((images + delta).clamp(0, 1) - images).detach()
    else:
        delta = torch.zeros_like(images)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(images + delta).logits, labels)
        loss = -loss if targeted else loss
        (grad,) = torch.autograd.grad(loss, delta)
        step = grad.sign() if norm == "linf" else _l2_normalise(grad)
        delta = _project(delta.detach() + step_size * step, norm, eps)
        delta = ((images + delta).clamp(0, 1) - images).detach()
    return (images + delta).detach()


def detection_success_rate(clean: torch.Tensor, adversarial: torch.Tensor, tau: float) -> float:
    """Trap-MID's DSR: accuracy over [clean, correct if score <= tau] and [adversarial, correct if score > tau]."""
    correct = (clean <= tau).sum() + (adversarial > tau).sum()
    return (correct.double() / (clean.numel() + adversarial.numel())).item()
