"""Identity losses of the inversion stage, per sample (the search driver decides the reduction; spec §2.5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy_identity(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """-log softmax(o)[y] per sample (GMI, KED-MI)."""
    return F.cross_entropy(logits, labels, reduction="none")


def logit_identity(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """-o[y] per sample (LOMMA's logit loss)."""
    return -logits.gather(1, labels.view(-1, 1)).squeeze(1)


def max_margin_identity(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """-o[y] + max_{j != y} o[j] per sample (PLG-MI)."""
    target = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, labels.view(-1, 1), float("-inf")).max(dim=1).values
    return others - target


def poincare_identity(logits: torch.Tensor, labels: torch.Tensor, xi: float = 1e-4) -> torch.Tensor:
    """Poincaré distance between L1-normalised logits and the (1 - xi)-one-hot target, per sample (PPA, spec §2.5).

    u = o / ||o||_1, v = clip(onehot(y) - xi, 0, 1), d = arccosh(1 + 2 ||u - v||^2 / ((1 - ||u||^2)(1 - ||v||^2))).
    """
    u = logits / logits.abs().sum(dim=1, keepdim=True)
    v = (F.one_hot(labels, logits.shape[1]).to(logits.dtype) - xi).clamp(0, 1)
    delta = 2 * (u - v).pow(2).sum(1) / ((1 - u.pow(2).sum(1)) * (1 - v.pow(2).sum(1)))
    return torch.acosh(1 + delta)


def feature_regulariser(features: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
    """LOMMA's L_reg per sample: the mean over feature dims of (phi_T(x) - mu_pub)^2 (spec §2.5, §5.3)."""
    return (features - anchor).pow(2).mean(dim=1)


IDENTITY_LOSSES = {
    "ce": cross_entropy_identity,
    "logit": logit_identity,
    "max_margin": max_margin_identity,
    "poincare": poincare_identity,
}
