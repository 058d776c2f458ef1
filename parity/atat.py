"""AT-AT parity: the official `PGDAttack` (targeted, as AT-AT trains; untargeted, as its adversarial training) against
mibench's `pgd_attack` with AT-AT's budgets.

`PGDAttack` is compiled alone from `defenses/adversarial_train.py` (its module imports wandb and the repository's
classifiers, which the unit never calls). The official attack works in the normalised input space [-1, 1]
(Normalize(0.5, 0.5)); mibench's on [0, 1] pixels: the network is the same function of the pixels (mibench's side
feeds it 2x - 1), the budgets are halved, and the official adversarial images are compared after (x + 1) / 2. The
official random start is `uniform_(-eps, eps)` from the global stream: it is seeded before the official call, and
mibench's generator gets the same seed (its start (2u - 1) eps draws the same u).

    MIBENCH_OFFICIAL_ANTI_ADVERSARIAL_TRAINING=DIR python -m parity.atat
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mibench.models.base import ClassifierOutput
from parity._harness import compiled, largest_difference, official_checkout, seeded, write_golden

REPO, COMMIT = "BreuerLabs/Anti-Adversarial-Training", "ec6069a"
CLASSES, START_SEED = 5, 23
# AT-AT's budget (atat.yaml) and the classic adversarial training's (adversarial_train.yaml), official units
SETTINGS = {"targeted": (5e-4, 1e-4, 5, True), "untargeted": (0.01, 0.001, 10, False)}


class Net(nn.Module):
    """A small classifier of 3 x 6 x 6 images in the official space, its weights from one seeded stream."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(64, CLASSES)
        g = seeded(21)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.device = torch.device("cpu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv(x)).flatten(1))


class Pixels(nn.Module):
    """The same network as a mibench classifier of [0, 1] pixels."""

    def __init__(self, net: Net):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        logits = self.net(2 * x - 1)
        return ClassifierOutput(logits, logits)


def inputs() -> dict[str, torch.Tensor]:
    g = seeded(22)
    images = torch.rand(6, 3, 6, 6, generator=g) * 2 - 1  # official space
    return {"images": images, "labels": torch.arange(6) % CLASSES, "targets": (torch.arange(6) + 2) % CLASSES}


def ours(golden: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from mibench.training.adversarial import pgd_attack

    model = Pixels(Net())
    pixels = (golden["images"] + 1) / 2
    out = {}
    for name, (eps, step, iterations, targeted) in SETTINGS.items():
        wanted = golden["targets"] if targeted else golden["labels"]
        out[f"{name}_adversarial"] = pgd_attack(
            model, pixels, wanted, norm="linf", eps=eps / 2, steps=iterations, step_size=step / 2,
            generator=torch.Generator().manual_seed(START_SEED), targeted=targeted,
        )  # fmt: skip
    return out


def main() -> None:
    path = official_checkout(REPO, COMMIT)
    attack_class = compiled(path / "defenses/adversarial_train.py", "PGDAttack", {"torch": torch, "nn": nn})
    x = inputs()
    net = Net()
    official = {}
    for name, (eps, step, iterations, targeted) in SETTINGS.items():
        attack = attack_class(
            model=net, loss_fn=nn.CrossEntropyLoss(), epsilon=eps, step_size=step, iterations=iterations,
            targeted=targeted, random_start=True, min_clamp=-1, max_clamp=1,
        )  # fmt: skip
        torch.manual_seed(START_SEED)  # the official random start is the global stream's first draw
        adversarial = attack(x["images"], x["targets"] if targeted else x["labels"])
        official[f"{name}_adversarial"] = (adversarial + 1) / 2  # in pixels, as mibench's
    write_golden(
        "atat",
        {**x, **official},
        outputs=sorted(official),
        method="at-at",
        repository=REPO,
        commit=COMMIT,
        files=[
            "defenses/adversarial_train.py",
            "configuration/classifier/defense/atat.yaml",
            "configuration/classifier/defense/adversarial_train.yaml",
        ],
        functions=["PGDAttack.__call__ (targeted and untargeted, random start)"],
        units="AT-AT's targeted PGD examples (eps 5e-4, step 1e-4, 5 steps, towards given classes) and the classic "
        "adversarial training's untargeted ones (eps 0.01, step 0.001, 10 steps), from the same random start",
        injected="the random start: the official uniform_(-eps, eps) is the global stream's first draw after "
        "torch.manual_seed(23), mibench's generator is seeded 23 (the same u); the network's weights from a seeded "
        "stream, mibench's side given 2x - 1 of its [0, 1] pixels",
        not_covered="the training loop around it (the loss composition 1.0 CE + 0.08 CE(f(x_adv), t) and the target "
        "draw are read, not run: the class is built from the repository's wandb-logging classifier), "
        "BatchNorm statistics moved by the attack's training-mode forwards",
        difference=largest_difference(ours({**x, **official}), official),
    )


if __name__ == "__main__":
    main()
