"""Trapdoor machinery shared by Trap-MID, TeD and the trapdoor metrics: triggers, injection, label assignment.

A trigger set is a pattern P (K x C x H x W, one per class) and a mask M (K x 1 x H x W): x' = M P[t] + (1 - M) x.
Trap-MID's blend is the constant mask M = alpha (x' = (1 - alpha) x + alpha P[t], spec §4.1.2); TeD's patches are
masks on a few squares (spec §4.5).
"""

from __future__ import annotations

import torch


def inject(images: torch.Tensor, targets: torch.Tensor, pattern: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """X' = M[t] P[t] + (1 - M[t]) x for each image and its trapdoor target t."""
    m = mask[targets]
    return m * pattern[targets] + (1 - m) * images


def balanced_targets(n: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Trapdoor targets for n images: every class floor(n / K) times plus n mod K distinct random classes, shuffled.

    A clean image's own class is not excluded (official `engine.py`).
    """
    q, r = divmod(n, num_classes)
    labels = torch.cat([torch.arange(num_classes).repeat(q), torch.randperm(num_classes, generator=generator)[:r]])
    return labels[torch.randperm(n, generator=generator)]


def blend_triggers(num_classes: int, shape: tuple[int, int, int], alpha: float, generator: torch.Generator):
    """Trap-MID's triggers: P ~ U[0, 1) per class, constant mask alpha."""
    pattern = torch.rand(num_classes, *shape, generator=generator)
    mask = torch.full((num_classes, 1, shape[1], shape[2]), alpha)
    return pattern, mask


def patch_triggers(
    num_classes: int,
    shape: tuple[int, int, int],
    ratio: float,
    generator: torch.Generator,
    squares: int = 5,
    square_fraction: float = 6 / 64,
):
    """TeD's patch triggers as adapted by Trap-MID (spec §4.5).

    `squares` squares of side square_fraction x H at random positions; inside each square and channel the pixels
    are N(mu, sigma) with mu, sigma ~ U[0, 1], clamped to [0, 1]; the mask is the union of the squares times
    `ratio` (TeD's mask ratio).
    """
    c, h, w = shape
    side = max(1, round(square_fraction * h))
    pattern = torch.zeros(num_classes, c, h, w)
    mask = torch.zeros(num_classes, 1, h, w)
    for k in range(num_classes):
        for _ in range(squares):
            top = int(torch.randint(0, h - side + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - side + 1, (1,), generator=generator))
            mu, sigma = torch.rand(2, c, 1, 1, generator=generator)
            noise = torch.randn(c, side, side, generator=generator)
            pattern[k, :, top : top + side, left : left + side] = (mu + sigma * noise).clamp(0, 1)
            mask[k, :, top : top + side, left : left + side] = ratio
    return pattern, mask


@torch.no_grad()
def trapdoor_success(
    model: torch.nn.Module,
    images: torch.Tensor,
    pattern: torch.Tensor,
    mask: torch.Tensor,
    generator: torch.Generator,
    batch_size: int = 256,
) -> float:
    """Trapdoor success rate: the fraction of images classified as their injected trapdoor target.

    Each image (float, in [0, 1]) gets a random balanced target, as in the official `engine.test` (eval mode, no
    augmentation, the true class not excluded).
    """
    was_training = model.training
    model.eval()
    device = images.device
    targets = balanced_targets(images.shape[0], pattern.shape[0], generator).to(device)
    hits = 0
    for start in range(0, images.shape[0], batch_size):
        x, t = images[start : start + batch_size], targets[start : start + batch_size]
        hits += (model(inject(x, t, pattern, mask)).logits.argmax(1) == t).sum().item()
    model.train(was_training)
    return hits / max(images.shape[0], 1)


@torch.no_grad()
def trapdoor_signatures(
    model: torch.nn.Module,
    images: torch.Tensor,
    pattern: torch.Tensor,
    mask: torch.Tensor,
    generator: torch.Generator,
    batch_size: int = 256,
) -> torch.Tensor:
    """Trap-MID's trapdoor signatures (spec §7.1; `trapdoor_detection.ipynb`): K x D unit vectors.

    Each image (float, in [0, 1]) is paired with one trapdoor class from a balanced random assignment and injected
    with that class's trigger; the signature of class c is the L2-normalised mean penultimate feature of the images
    carrying trigger c. A class no image was assigned to (fewer images than classes) gets a zero vector.
    """
    was_training = model.training
    model.eval()
    targets = balanced_targets(images.shape[0], pattern.shape[0], generator).to(images.device)
    sums: torch.Tensor | None = None
    counts = torch.zeros(pattern.shape[0], device=images.device)
    for start in range(0, images.shape[0], batch_size):
        x, t = images[start : start + batch_size], targets[start : start + batch_size]
        features = model(inject(x, t, pattern, mask)).features
        if sums is None:
            sums = torch.zeros(pattern.shape[0], features.shape[1], device=images.device)
        sums.index_add_(0, t, features)
        counts += torch.bincount(t, minlength=pattern.shape[0])
    model.train(was_training)
    return torch.nn.functional.normalize(sums / counts.clamp_min(1).unsqueeze(1), dim=1)


def find_triggers(extras: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(pattern, mask) from a target's saved defense state (`<member>.triggers`, `<member>.trigger_mask`), if any."""
    keys = sorted(k for k in extras if k.endswith("triggers"))
    if not keys:
        return None
    return extras[keys[0]], extras[keys[0].removesuffix("triggers") + "trigger_mask"]


@torch.no_grad()
def signature_scores(
    model: torch.nn.Module, images: torch.Tensor, signatures: torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """s(x) = cos(phi_T(x), S[argmax T(x)]): the trapdoor score of each image (Trap-MID's detection, spec §6.6)."""
    scores = []
    for start in range(0, images.shape[0], batch_size):
        out = model(images[start : start + batch_size])
        features = torch.nn.functional.normalize(out.features.float(), dim=1)
        scores.append((features * signatures.to(features.device)[out.logits.argmax(1)]).sum(1).cpu())
    return torch.cat(scores) if scores else torch.zeros(0)
