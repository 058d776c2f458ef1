"""Projections that keep an optimised variable near where its search began.

IF-GMI (Qiu et al., ECCV 2024) bounds each stage's change of w and of the intermediate features by an L1 ball; the
projection onto it is the sort-based algorithm of Duchi et al., "Efficient Projections onto the l1-Ball for Learning
in High Dimensions" (ICML 2008, Fig. 1), applied per sample.
"""

from __future__ import annotations

import torch


def project_l1_ball(x: torch.Tensor, radius: float) -> torch.Tensor:
    """Euclidean projection of each sample of `x` (first dimension) onto {v : ||v||_1 <= radius}.

    Samples already inside are returned unchanged. Outside, v = sign(x) max(|x| - theta, 0) with the theta that puts
    v on the sphere: sorting |x| decreasingly as u, rho is the largest j with u_j > (sum_{i<=j} u_i - radius) / j and
    theta = (sum_{i<=rho} u_i - radius) / rho.
    """
    if radius <= 0:
        raise ValueError(f"L1 radius must be positive, got {radius}")
    flat = x.reshape(x.shape[0], -1)
    magnitude = flat.abs()
    inside = magnitude.sum(dim=1) <= radius
    u, _ = magnitude.sort(dim=1, descending=True)
    cumulative = u.cumsum(dim=1)
    j = torch.arange(1, flat.shape[1] + 1, device=x.device, dtype=flat.dtype)
    rho = ((u * j > cumulative - radius) * j).amax(dim=1).long()  # >= 1: u_1 > u_1 - radius always holds
    theta = (cumulative.gather(1, (rho - 1).unsqueeze(1)).squeeze(1) - radius) / rho.to(flat.dtype)
    projected = flat.sign() * (magnitude - theta.unsqueeze(1)).clamp_min(0)
    return torch.where(inside.unsqueeze(1), flat, projected).reshape(x.shape)
