"""GMI parity: the PLG-MI baselines' `inversion` (the GMI search the Trap-MID paper ran) against mibench's GMI.

The official function is compiled alone from `baselines/recovery.py` (its module imports kornia, cv2 and the FID
code, none of which the search calls), with `utils.low2high` compiled from `baselines/utils.py` for its evaluator
check and its image saving switched off. Small networks stand in for the generator (100-d z, as the function
hard-codes), the critic, the target and the evaluator. It runs 12 iterations from two seeds; each seed's starting
latents are `torch.randn(bs, 100)` after `torch.manual_seed(seed)`, recorded and handed to mibench's GMI in place of
its own draws. Compared: the final latents of every (class, restart), read from the generator's no-grad call after
each seed's loop.

    MIBENCH_OFFICIAL_PLG_MI_ATTACK=DIR python -m parity.gmi
"""

from __future__ import annotations

import os
import random
import statistics
import tempfile
import time
import types

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from parity._harness import (
    Call,
    compiled,
    largest_difference,
    official_checkout,
    on_cpu,
    replaced,
    seeded,
    write_golden,
)

REPO, COMMIT = "LetheSec/PLG-MI-Attack", "3cf8735"
CLASSES, ITERATIONS, SEEDS, Z = 6, 12, 2, 100


class Nets(nn.Module):
    """Generator (z -> 3x8x8), critic (image -> score) and target (image -> logits) as small linear maps."""

    def __init__(self, golden: dict[str, torch.Tensor], official: bool):
        super().__init__()
        self.g, self.d, self.t = golden["generator"], golden["critic"], golden["target"]
        self.official, self.final_calls = official, []

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():
            self.final_calls.append(z.detach().clone())
        return torch.tanh(z @ self.g).view(len(z), 3, 8, 8)

    def criticise(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1) @ self.d

    def classify(self, images: torch.Tensor):
        logits = images.flatten(1) @ self.t
        return (images.flatten(1), logits) if self.official else logits


def inputs() -> dict[str, torch.Tensor]:
    g = seeded(29)
    return {"generator": torch.randn(Z, 192, generator=g) * 0.2, "critic": torch.randn(192, generator=g) * 0.1,
            "target": torch.randn(192, CLASSES, generator=g) * 0.2}  # fmt: skip


def ours(golden: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from mibench.api.context import RunContext
    from mibench.api.oracle import Access, TargetOracle
    from mibench.attacks import gmi

    nets = Nets(golden, official=False)
    prior = types.SimpleNamespace(generator=Call(nets.generate), discriminator=Call(nets.criticise))
    target = Call(lambda x: types.SimpleNamespace(logits=nets.classify(x)))
    oracle = TargetOracle(target, Access.WHITE_BOX, num_classes=CLASSES, image_shape=(3, 8, 8))
    params = gmi.GMIParams(iterations=ITERATIONS, restarts=SEEDS, reference_batch=CLASSES, selection="all")
    starts = golden["starts"].view(-1, Z)  # restart-major, as mibench orders (class, restart) keys
    with replaced(gmi, per_sample_normal=lambda ctx, keys, dim: starts.clone()):
        recon = gmi.GMI(params).invert(prior, oracle, torch.arange(CLASSES), RunContext())
    return {"final": recon.latents.view(SEEDS, CLASSES, Z)}


def main() -> None:
    path = official_checkout(REPO, COMMIT)
    x = inputs()
    nets = Nets(x, official=True)
    utils_source = path / "baselines" / "utils.py"
    from torchvision import transforms

    helpers = {"torch": torch, "transforms": transforms}
    compiled(utils_source, "get_deprocessor", helpers)
    utils = types.SimpleNamespace(low2high=compiled(utils_source, "low2high", helpers))
    namespace = {"torch": torch, "nn": nn, "F": F, "os": os, "time": time, "np": np, "random": random,
                 "statistics": statistics, "utils": utils, "save_tensor_images": lambda *a, **k: None}  # fmt: skip
    inversion = compiled(path / "baselines" / "recovery.py", "inversion", namespace)
    evaluator_weight = torch.randn(3 * 112 * 112, CLASSES, generator=seeded(30)) * 0.01
    evaluator = Call(lambda images: (None, images.flatten(1) @ evaluator_weight))
    starts = []
    for seed in range(SEEDS):  # the draws the official loop makes after torch.manual_seed(seed)
        torch.manual_seed(seed)
        starts.append(torch.randn(CLASSES, Z))
    with on_cpu(), tempfile.TemporaryDirectory() as folder:
        inversion(Call(nets.generate), Call(nets.criticise), Call(nets.classify), evaluator, torch.arange(CLASSES),
                  0, iter_times=ITERATIONS, num_seeds=SEEDS, save_dir=folder)  # fmt: skip
    # per seed: the no-grad call after its loop comes first (later ones re-render the same z for saving)
    finals = [c for c in nets.final_calls if len(c) == CLASSES]
    per_seed = len(finals) // SEEDS
    official = {"final": torch.stack([finals[s * per_seed] for s in range(SEEDS)])}
    golden = {**x, "starts": torch.stack(starts)}
    write_golden(
        "gmi",
        {**golden, **official},
        outputs=sorted(official),
        method="gmi",
        repository=REPO,
        commit=COMMIT,
        files=["baselines/recovery.py (inversion)", "baselines/utils.py (low2high)"],
        functions=["inversion (improved=False): the momentum search on -D + 100 CE, clamp ±1"],
        units="12 iterations of the search for 6 classes from 2 seeds: every final latent",
        injected="the starting latents: torch.randn(6, 100) after torch.manual_seed(seed) as the official loop "
        "draws them, handed to mibench's GMI in place of its per-sample draws; linear generator, critic, target and "
        "evaluator stand-ins; image saving off",
        not_covered="GMI's G64/DGWGAN networks and their training (KED-MI/GMI GAN parity), 1500 iterations, the "
        "evaluator's accuracy (measured by mibench's metrics), the original GMI repository's selection",
        difference=largest_difference(ours(golden), official),
    )


if __name__ == "__main__":
    main()
