"""Trap-MID parity: one batch of the official `engine.train` (discriminator step, trigger step, model step).

The official loop runs for one epoch of one batch on a small network with BatchNorm (`TinyNet`, the same modules on
both sides: the official code sees (feature, logits), mibench a `ClassifierOutput`), with the official CelebA
settings (alpha 0.02, beta 0.2, step 1e-2, discriminator loss on, SGD 1e-2 / 0.9 / 1e-4) and cross-entropy. Compared
after the step: the target's weights and BatchNorm statistics, the triggers, the discriminator's weights.

    MIBENCH_OFFICIAL_TRAP_MID=DIR python -m parity.trap_mid
"""

from __future__ import annotations

import tempfile
import types

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from mibench.models.base import ClassifierOutput
from parity._harness import (
    largest_difference,
    official_checkout,
    official_modules,
    on_cpu,
    replaced,
    seeded,
    stub_modules,
    write_golden,
)

REPO, COMMIT = "ntuaislab/Trap-MID", "3d59377"
CLASSES, N, SIZE, TARGET_SEED = 4, 10, 8, 11
SETTINGS = {"alpha": 0.02, "beta": 0.2, "optimized": True, "step_size": 1e-2, "discriminator_loss": True,
            "discriminator_feat_loss": False, "discriminator_feat_model_loss": False}  # fmt: skip
RECIPE = {"epochs": 1, "batch_size": N, "lr": 1e-2, "momentum": 0.9, "weight_decay": 1e-4}


class TinyNet(nn.Module):
    """Conv-BN-ReLU-pool body and a linear head; `official` selects the output convention."""

    def __init__(self, outputs: int, official: bool):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.head = nn.Linear(24, outputs)
        self.official = official

    def forward(self, x: torch.Tensor):
        feature = self.body(x).flatten(1)
        logits = self.head(feature)
        return (feature, logits) if self.official else ClassifierOutput(feature, logits)


def initial() -> dict[str, torch.Tensor]:
    """Images (uint8), labels, triggers and both networks' initial weights, from fixed seeds."""
    g = seeded(5)
    torch.manual_seed(12)
    target, disc = TinyNet(CLASSES, True), TinyNet(1, True)
    return {
        "images": torch.randint(0, 256, (N, 3, SIZE, SIZE), generator=g, dtype=torch.uint8),
        "labels": torch.arange(N) % CLASSES,
        "triggers": torch.rand(CLASSES, 3, SIZE, SIZE, generator=g),
        **{f"target.{k}": v for k, v in target.state_dict().items()},
        **{f"disc.{k}": v for k, v in disc.state_dict().items()},
    }


def networks(state: dict[str, torch.Tensor], official: bool) -> tuple[TinyNet, TinyNet]:
    """The target and discriminator with the initial weights of `state`."""
    target, disc = TinyNet(CLASSES, official), TinyNet(1, official)
    target.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("target.")})
    disc.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("disc.")})
    return target, disc


def balanced_targets_of_seed(seed: int) -> torch.Tensor:
    """The trapdoor targets the official epoch draws after torch.manual_seed(seed) (its first two global draws)."""
    torch.manual_seed(seed)
    q, r = divmod(N, CLASSES)
    return torch.hstack([torch.arange(0, CLASSES).repeat(q), torch.randperm(CLASSES)[:r]])[torch.randperm(N)]


def after(target: nn.Module, disc: nn.Module, triggers: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        **{f"after.target.{k}": v.detach().clone() for k, v in target.state_dict().items()},
        **{f"after.disc.{k}": v.detach().clone() for k, v in disc.state_dict().items()},
        "after.triggers": triggers.detach().clone(),
    }


def kornia_stand_in() -> dict:
    """`kornia.augmentation` as the engine builds it, with the augmentation off (ImageSequential -> identity)."""
    augmentation = types.SimpleNamespace(
        RandomResizedCrop=lambda *a, **k: None, RandomHorizontalFlip=lambda *a, **k: None,
        RandomRotation=lambda *a, **k: None,
        container=types.SimpleNamespace(ImageSequential=lambda *modules: (lambda x: x)),
    )  # fmt: skip
    return {"augmentation": augmentation}


def run_official(path, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    stub_modules(kornia=kornia_stand_in())
    target, disc = networks(state, official=True)
    images = state["images"].float() / 255
    loader = DataLoader(TensorDataset(images, state["labels"]), batch_size=N, shuffle=False)
    triggers = state["triggers"].clone()
    with official_modules(path, "engine", "utils", "classify", "dataset", "loss", "evolve"), on_cpu():
        import engine

        engine.utils.init_model = lambda name, n_classes, pretrained: disc
        with tempfile.TemporaryDirectory() as root:
            args = {"root_path": root, "pretrained_path": root, "trapdoor": SETTINGS, "VGG16": RECIPE,
                    "dataset": {"name": "celeba", "model_name": "VGG16", "n_classes": CLASSES}}  # fmt: skip
            optimizer, _ = engine.utils.init_optimizer(RECIPE, target.parameters())
            torch.manual_seed(TARGET_SEED)
            engine.train(args, target, nn.CrossEntropyLoss(), optimizer, loader, loader, 1, triggers=triggers)
    return after(target, disc, triggers)


def ours(golden: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mibench's Trap-MID `fit` on the golden's batch, its random draws replaced by the official ones."""
    from mibench.api.context import RunContext
    from mibench.api.defense import TrainingSetup
    from mibench.api.recipe import TrainSpec
    from mibench.data.base import DataBundle, ImageSet
    from mibench.defenses import trap_mid

    target, disc = networks(golden, official=False)
    train = ImageSet(golden["images"], golden["labels"])
    data = DataBundle(train, train, ImageSet(golden["images"][:0], golden["labels"][:0]), CLASSES, "parity")
    spec = TrainSpec(**RECIPE, selection="last")
    params = trap_mid.TrapMIDParams(alpha=SETTINGS["alpha"], beta=SETTINGS["beta"], augment=False)

    def triggers(k: int, shape: tuple[int, int, int], alpha: float, generator: torch.Generator):
        return golden["triggers"].clone(), torch.full((k, 1, shape[1], shape[2]), alpha)

    with replaced(
        trap_mid,
        _discriminator=lambda model: disc,
        epoch_batches=lambda labels, spec, *generators: [(torch.arange(len(labels)), None)],
        balanced_targets=lambda n, k, generator: golden["trapdoor_targets"].clone(),
        blend_triggers=triggers,
    ):
        trained = trap_mid.TrapMID(params).fit(target, data, TrainingSetup(spec), RunContext(seed=0))
    return after(trained.model, disc, trained.extras["triggers"])


def main() -> None:
    path = official_checkout(REPO, COMMIT)
    state = initial()
    state["trapdoor_targets"] = balanced_targets_of_seed(TARGET_SEED)
    official = run_official(path, state)
    write_golden(
        "trap_mid",
        {**state, **official},
        outputs=sorted(official),
        method="trap-mid",
        repository=REPO,
        commit=COMMIT,
        files=["engine.py (train, blend)", "utils.py (init_optimizer)"],
        functions=["engine.train: one epoch of one batch (discriminator, trigger and model updates)"],
        units="one batch of the three updates: the target's weights and BatchNorm statistics, the triggers, the "
        "discriminator's weights after it",
        injected="trapdoor targets: the official epoch's two global draws after torch.manual_seed(11), handed to "
        "mibench's balanced_targets; triggers and both networks' weights from the golden; the batch order fixed "
        "(one batch, no shuffle); the discriminator is the golden's network (utils.init_model replaced)",
        not_covered="kornia's augmentation (replaced by the identity on both sides: its random draws cannot be "
        "shared), the random flip, more than one batch, the test-accuracy model selection, VGG16 itself",
        difference=largest_difference(ours(state), official),
    )


if __name__ == "__main__":
    main()
