"""DeepInversion parity: the official BatchNorm-statistics hook, image-prior losses and learning-rate schedule against
mibench's `BatchNormStatistics`, `image_prior_losses` and `cosine_lr`.

`DeepInversionFeatureHook` and `get_image_prior_losses` are compiled alone from `deepinversion.py`, `lr_policy` and
`lr_cosine_policy` from `utils/utils.py` (the modules import apex-era AMP code and ImageNet loaders the units never
call). A small network with two BatchNorm2d layers gets weights and running statistics from one seeded stream; the
statistics loss is the official `get_images` sum (first layer x10) of the hooks' `r_feature` after one forward pass
of given images; the schedule is read from an optimiser the official policy sets, at the README's lr 0.25, 100
warm-up steps and the 2,000-step first phase.

    MIBENCH_OFFICIAL_DEEPINVERSION=DIR python -m parity.deepinversion
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from parity import _harness as h

REPO, COMMIT = "NVlabs/DeepInversion", "2413af1"
FIRST_BN, LR, WARMUP, STEPS = 10.0, 0.25, 100, 2000
ITERATIONS = [0, 1, 50, 99, 100, 101, 1000, 1999]


def network() -> nn.Module:
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.BatchNorm2d(5), nn.ReLU()
    )
    net.load_state_dict(h.seeded_state([[k, list(v.shape), v.is_floating_point()]
                                        for k, v in net.state_dict().items()], seed=1001))  # fmt: skip
    return net.eval()


def inputs() -> dict[str, torch.Tensor]:
    return {"images": torch.randn(6, 3, 8, 8, generator=h.seeded(1002))}


def ours(golden: dict[str, Any]) -> dict[str, torch.Tensor]:
    from mibench.attacks.deepinversion import BatchNormStatistics, cosine_lr, image_prior_losses

    net = network()
    stats = BatchNormStatistics(net, FIRST_BN)
    net(golden["images"])
    l1, l2 = image_prior_losses(golden["images"])
    lrs = [cosine_lr(LR, WARMUP, STEPS, step) for step in ITERATIONS]
    return {"statistics_loss": stats.loss(), "tv_l1": l1, "tv_l2": l2, "lr": torch.tensor(lrs, dtype=torch.float64)}


def main() -> None:
    root = h.official_checkout(REPO, COMMIT)
    namespace: dict[str, Any] = {"torch": torch, "nn": nn, "np": np}
    hook_class = h.compiled(root / "deepinversion.py", "DeepInversionFeatureHook", namespace)
    prior_losses = h.compiled(root / "deepinversion.py", "get_image_prior_losses", namespace)
    h.compiled(root / "utils/utils.py", "lr_policy", namespace)
    cosine = h.compiled(root / "utils/utils.py", "lr_cosine_policy", namespace)
    x = inputs()
    net = network()
    hooks = [hook_class(m) for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    net(x["images"])
    rescale = [FIRST_BN] + [1.0 for _ in range(len(hooks) - 1)]  # get_images, as the README's command sets it
    statistics = sum(hook.r_feature * rescale[i] for i, hook in enumerate(hooks))
    l1, l2 = prior_losses(x["images"])
    optimizer = torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=LR)
    set_lr = cosine(LR, WARMUP, STEPS)
    lrs = []
    for step in ITERATIONS:
        set_lr(optimizer, step, step)
        lrs.append(optimizer.param_groups[0]["lr"])
    official = {"statistics_loss": statistics.detach(), "tv_l1": l1, "tv_l2": l2,
                "lr": torch.tensor(lrs, dtype=torch.float64)}  # fmt: skip
    write = {**x, **official}
    h.write_golden(
        "deepinversion",
        write,
        outputs=sorted(official),
        method="deepinversion",
        repository=REPO,
        commit=COMMIT,
        files=["deepinversion.py", "utils/utils.py"],
        functions=["DeepInversionFeatureHook.hook_fn", "get_image_prior_losses", "lr_cosine_policy"],
        units="the BatchNorm-statistics loss of one forward pass (first layer x10), the four-direction TV L1 and L2 "
        "terms, and the cosine schedule with linear warm-up at 8 steps of the first phase",
        injected="the network's weights and running statistics from one seeded stream (seed 1001), the images from "
        "seed 1002",
        not_covered="the optimisation loop (Adam betas, random roll and flip with Python's `random`, the "
        "half-resolution phase, mibench's [0, 1] pixel space), the L2 and cross-entropy terms' weights (read)",
        difference=h.largest_difference(ours(write), official),
    )


if __name__ == "__main__":
    main()
