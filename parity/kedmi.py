"""KED-MI parity: the official `dist_inversion` with `improved=True` (KED-MI's distributional search; the PLG-MI
baselines the Trap-MID paper ran carry the same loop) against mibench's `kedmi_objective` and `distributional_search`.

The official function is compiled alone from `attack.py`, with `reparameterize` beside it and `log_sum_exp` /
`low2high` from `utils.py` (the module creates result folders and imports the repository's networks at import time);
image saving is off and its folders are a temporary one. Small linear maps stand in for the generator (100-d z, as
the function hard-codes), the semi-supervised discriminator (its class logits), the target and the evaluator. The
official loop draws each step's eps with `torch.randn_like` from the global stream: it is seeded before the call and
mibench's generator gets the same seed (the same draws, step by step). Compared: every latent the loop feeds the
generator (10 steps, 6 classes).

    MIBENCH_OFFICIAL_KNOWLEDGE_ENRICHED_DMI=DIR python -m parity.kedmi
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import types

import torch
import torch.nn.functional as F
from torch import nn

from parity._harness import Call, compiled, largest_difference, official_checkout, on_cpu, seeded, write_golden

REPO, COMMIT = "SCccc21/Knowledge-Enriched-DMI", "1ec92f4"
CLASSES, ITERATIONS, Z, SEED = 6, 10, 100, 31


class Nets:
    """Generator (z -> 3x8x8, tanh), discriminator (image -> K class logits) and target, each a linear map."""

    def __init__(self, golden: dict[str, torch.Tensor]):
        self.g, self.d, self.t = golden["generator"], golden["discriminator"], golden["target"]
        self.loop_calls: list[torch.Tensor] = []

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            self.loop_calls.append(z.detach().clone())
        return torch.tanh(z @ self.g).view(len(z), 3, 8, 8)

    def discriminate(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1) @ self.d

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1) @ self.t


def inputs() -> dict[str, torch.Tensor]:
    g = seeded(32)
    return {"generator": torch.randn(Z, 192, generator=g) * 0.2, "discriminator": torch.randn(192, CLASSES,
            generator=g) * 0.1, "target": torch.randn(192, CLASSES, generator=g) * 0.2}  # fmt: skip


def ours(golden: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from mibench.attacks.kedmi import kedmi_objective
    from mibench.inversion.search import distributional_search

    nets = Nets(golden)
    disc = Call(lambda images, group_size: (None, nets.discriminate(images)))

    def identity(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(nets.classify(images), labels, reduction="none")

    objective = kedmi_objective(Call(nets.generate), disc, identity, 100.0, CLASSES)
    distributional_search(
        torch.arange(CLASSES), objective, dim=Z, iterations=ITERATIONS, lr=0.02, clip="none",
        generator=torch.Generator().manual_seed(SEED), device=torch.device("cpu"),
    )  # fmt: skip
    return {"loop_z": torch.stack(nets.loop_calls)}


def main() -> None:
    path = official_checkout(REPO, COMMIT)
    x = inputs()
    nets = Nets(x)
    utils_source = path / "utils.py"
    from torchvision import transforms

    helpers = {"torch": torch, "transforms": transforms}
    compiled(utils_source, "get_deprocessor", helpers)
    utils = types.SimpleNamespace(
        low2high=compiled(utils_source, "low2high", helpers), log_sum_exp=compiled(utils_source, "log_sum_exp", helpers)
    )
    namespace = {"torch": torch, "nn": nn, "F": F, "os": os, "time": time, "statistics": statistics, "utils": utils,
                 "log_sum_exp": utils.log_sum_exp, "save_tensor_images": lambda *a, **k: None,
                 "Variable": lambda t, requires_grad=False: t.requires_grad_(requires_grad),
                 "optim": torch.optim}  # fmt: skip
    compiled(path / "attack.py", "reparameterize", namespace)
    dist_inversion = compiled(path / "attack.py", "dist_inversion", namespace)
    evaluator_weight = torch.randn(3 * 112 * 112, CLASSES, generator=seeded(33)) * 0.01
    evaluator = Call(lambda images: (None, images.flatten(1) @ evaluator_weight))
    torch.manual_seed(SEED)
    with on_cpu(), tempfile.TemporaryDirectory() as folder:
        namespace.update(save_img_dir=folder, success_dir=folder)
        dist_inversion(
            Call(nets.generate), Call(lambda images: (None, nets.discriminate(images))),
            Call(lambda images: (images.flatten(1), nets.classify(images))), evaluator, torch.arange(CLASSES), 0,
            iter_times=ITERATIONS, improved=True, num_seeds=2,
        )  # fmt: skip
    # the loop's calls come first; the sampling after it calls the generator with gradients on too
    official = {"loop_z": torch.stack(nets.loop_calls[:ITERATIONS])}
    write_golden(
        "kedmi",
        {**x, **official},
        outputs=sorted(official),
        method="kedmi",
        repository=REPO,
        commit=COMMIT,
        files=["attack.py (dist_inversion, reparameterize)", "utils.py (log_sum_exp, low2high)"],
        functions=["dist_inversion (improved=True): Adam on (mu, log var), -log D_real + 100 CE"],
        units="10 steps of the distributional search for 6 classes: every latent the loop feeds the generator",
        injected="each step's eps: torch.randn_like from the global stream seeded 31 before the call, mibench's "
        "generator seeded 31; linear generator, discriminator, target and evaluator stand-ins; image saving off",
        not_covered="KED-MI's GAN and its minibatch discrimination (the groups of 60 are mibench's; a linear "
        "discriminator has no batch coupling), the final samples (mibench draws them per (class, restart) from the "
        "job's stream), 1500 iterations",
        difference=largest_difference(ours({**x, **official}), official),
    )


if __name__ == "__main__":
    main()
