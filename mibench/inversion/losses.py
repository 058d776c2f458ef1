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


IDENTITY_LOSSES = {"ce": cross_entropy_identity, "logit": logit_identity, "max_margin": max_margin_identity}
