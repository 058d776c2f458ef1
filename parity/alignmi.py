"""AlignMI parity: the official PAA and TAA latent searches (GMI's momentum update on the aligned gradient) against
mibench's `momentum_search` with `aligned_loss`.

`Optimization` is compiled alone from `low_resolution/attacks/optimize.py` (the module imports kornia, skimage,
functorch and plotting code the units never call) and built without its config (`object.__new__`, the attributes
its methods read set by hand: the non-StyleGAN path, CE identity loss, no logging or visualisation). A small
generator (z -> 3 x 64 x 64, sigmoid) and classifier stand in for the GAN and the target, their weights from
seeded streams. The official noise and transformations come from the global stream: it is seeded before each
official call, and mibench's generator gets the same seed (the same draws in the same order: per step, per copy,
PAA's N(0, 1) image, or TAA's crop, flip and angle).

    MIBENCH_OFFICIAL_ALIGNMI=DIR python -m parity.alignmi
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
import torchvision.transforms as T
from torch import nn
from torchvision.transforms import InterpolationMode

from parity import _harness as h

REPO, COMMIT = "AlanPeng0897/AlignMI", "3f7fff9"
Z, CLASSES, N, STEPS, LR, MOMENTUM, WEIGHT = 8, 4, 4, 3, 0.02, 0.9, 100.0
SEEDS = {"paa": 901, "taa": 902}


class Generator(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(Z, 3 * 8 * 8)
        g = h.seeded(903)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(self.fc.weight.shape, generator=g))
            self.fc.bias.zero_()

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # 8 x 8 upsampled to TAA's fixed 64 x 64
        return torch.sigmoid(F.interpolate(self.fc(z).view(-1, 3, 8, 8), size=64, mode="nearest"))


class Target(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 4, stride=4)
        self.fc = nn.Linear(4 * 16 * 16, CLASSES)
        g = h.seeded(904)
        with torch.no_grad():
            for q in self.parameters():
                q.copy_(torch.randn(q.shape, generator=g) * 0.1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feature = F.relu(self.conv(x)).flatten(1)
        return feature, self.fc(feature)


def inputs() -> dict[str, torch.Tensor]:
    return {"z": torch.rand(N, Z, generator=h.seeded(905)) * 2 - 1, "labels": torch.arange(N) % CLASSES}


def ours(golden: dict[str, Any]) -> dict[str, torch.Tensor]:
    from mibench.inversion.alignment import AlignmentParams, aligned_loss
    from mibench.inversion.search import momentum_search

    generator, target = Generator(), Target()

    def identity(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(target(images)[1], labels, reduction="none")

    out = {}
    for mode, seed in SEEDS.items():
        aligned = aligned_loss(identity, AlignmentParams(mode=mode), torch.Generator().manual_seed(seed))
        out[f"{mode}_z"] = momentum_search(
            golden["z"], golden["labels"], lambda z, y, aligned=aligned: WEIGHT * aligned(generator(z), y),
            iterations=STEPS, lr=LR, momentum=MOMENTUM, clip=1.0, reference_batch=N,
        )  # fmt: skip
    return out


def main() -> None:
    path = h.official_checkout(REPO, COMMIT) / "low_resolution/attacks/optimize.py"
    namespace: dict[str, Any] = {
        "torch": torch, "nn": nn, "F": F, "T": T, "InterpolationMode": InterpolationMode, "device": "cpu", "os": None,
    }  # fmt: skip
    h.compiled(path, "build_transformations", namespace)
    optimization = h.compiled(path, "Optimization", namespace)
    x = inputs()
    attack = object.__new__(optimization)
    attack.__dict__.update(
        generator=Generator(), targetnets=[Target()], stylegan=False, use_poincare_loss=False, attack_loss="ce_loss",
        criterion=nn.CrossEntropyLoss(), lam=0.0, identity_weight=WEIGHT, lr=LR, momentum=MOMENTUM,
        clip_range=1.0, save_dir=None, log_progress=0, visualize_intermediate_results=0,
    )  # fmt: skip
    official = {}
    for mode, seed in SEEDS.items():
        torch.manual_seed(seed)
        search = attack.gmi_optimize_paa if mode == "paa" else attack.gmi_optimize_taa
        official[f"{mode}_z"] = search(0, x["z"].clone(), x["labels"], STEPS)
    write = {**x, **official}
    h.write_golden(
        "alignmi",
        write,
        outputs=sorted(official),
        method="gmi,kedmi",
        component="AlignMI's gradient alignment (PAA, TAA), a plug-in of GMI's and KED-MI's searches",
        repository=REPO,
        commit=COMMIT,
        files=["low_resolution/attacks/optimize.py"],
        functions=["Optimization.gmi_optimize_paa", "Optimization.gmi_optimize_taa", "build_transformations"],
        units="three steps of GMI's momentum latent search on the PAA-aligned (50 noisy copies, spread 0.003) and the "
        "TAA-aligned (30 crops, flips and rotations) identity gradient, CE identity loss, weight 100",
        injected="the noise and the transformations' draws: the official ones from the global stream seeded 901 "
        "(PAA) and 902 (TAA) before each call, mibench's generator seeded the same (same draws, same order); the "
        "generator and target weights from seeded streams",
        not_covered="the StyleGAN path (its synthesis network), LOMMA's logit loss and feature regulariser on the "
        "copies, KED-MI's distributional search (the same wrapper), the high-resolution PPA variant",
        difference=h.largest_difference(ours(write), official),
    )


if __name__ == "__main__":
    main()
