"""PLG-MI cGAN parity: PLG-MI's conditional ResNet generator and spectral-norm projection discriminator
(`models/generators/resnet64.py`, `models/discriminators/snresnet64.py` with their `resblocks.py` and
`links/conditional_batchnorm.py`) against mibench's (`mibench.gan.conditional`).

Width 16 (the official 64 only widens every layer), 64x64, 5 classes, z 128. Each official network gets weights and
buffers (spectral-norm u and v included) from one seeded stream in its state-dict order; mibench's receive the same
values under its names (`NAMES` below: the generator's blocks keep their layers in another order; the discriminator's
correspond in order). Both run in eval mode (no power iteration; stored BatchNorm statistics).

    MIBENCH_OFFICIAL_PLG_MI_ATTACK=DIR python -m parity.cgan
"""

from __future__ import annotations

import re

import torch

from parity import _harness as h

REPO, COMMIT = "LetheSec/PLG-MI-Attack", "3cf8735"
CLASSES, WIDTH, Z = 5, 16, 128


def generator_name(official: str) -> str:
    """An official generator parameter name as mibench's `ConditionalResNetGenerator` calls it."""
    name = re.sub(r"^block(\d)\.", lambda m: f"blocks.{int(m.group(1)) - 2}.", official)
    name = re.sub(r"\.b(\d)\.(running_mean|running_var|num_batches_tracked)$", r".b\1.bn.\2", name)
    name = name.replace(".weights.weight", ".gamma.weight").replace(".biases.weight", ".beta.weight")
    return name.replace("b6.", "b_out.").replace("conv6.", "conv_out.")


def inputs() -> dict[str, torch.Tensor]:
    g = h.seeded(47)
    return {"z": torch.randn(3, Z, generator=g), "y": torch.tensor([0, 3, 4]),
            "images": torch.rand(3, 3, 64, 64, generator=g) * 2 - 1}  # fmt: skip


def ours(golden: dict) -> dict[str, torch.Tensor]:
    from mibench.gan.conditional import ConditionalResNetGenerator, SNProjectionDiscriminator

    generator = ConditionalResNetGenerator(CLASSES, 64, 3, WIDTH, Z).eval()
    state = h.seeded_state(golden["generator.layout"], seed=400)
    generator.load_state_dict({generator_name(k): v for k, v in state.items()})
    discriminator = SNProjectionDiscriminator(CLASSES, 64, 3, WIDTH).eval()
    h.load_in_order(discriminator, h.seeded_state(golden["discriminator.layout"], seed=401))
    with torch.no_grad():
        return {"generator.images": generator(golden["z"], golden["y"]),
                "discriminator.scores": discriminator(golden["images"], golden["y"])}  # fmt: skip


def main() -> None:
    path = h.official_checkout(REPO, COMMIT)
    x = inputs()
    with h.official_modules(path, "models", "links"):
        from models.discriminators.snresnet64 import SNResNetProjectionDiscriminator
        from models.generators.resnet64 import ResNetGenerator

        generator = ResNetGenerator(num_features=WIDTH, dim_z=Z, num_classes=CLASSES).eval()
        discriminator = SNResNetProjectionDiscriminator(num_features=WIDTH, num_classes=CLASSES).eval()
    golden = dict(x)
    for i, (name, net) in enumerate((("generator", generator), ("discriminator", discriminator))):
        golden[f"{name}.layout"] = h.seed_network(net, seed=400 + i)
    with torch.no_grad():
        official = {"generator.images": generator(x["z"], x["y"]),
                    "discriminator.scores": discriminator(x["images"], x["y"]).squeeze(1)}  # fmt: skip
    h.write_golden(
        "cgan",
        {**golden, **official},
        outputs=sorted(official),
        method="plgmi",
        repository=REPO,
        commit=COMMIT,
        files=[
            "models/generators/resnet64.py",
            "models/generators/resblocks.py",
            "links/conditional_batchnorm.py",
            "models/discriminators/snresnet64.py",
            "models/discriminators/resblocks.py",
        ],
        functions=["ResNetGenerator(num_classes=5).forward(z, y)", "SNResNetProjectionDiscriminator.forward(x, y)"],
        units="the conditional generator's images (conditional BatchNorm, bilinear upsampling, tanh) and the "
        "projection discriminator's scores, eval mode, width 16 at 64x64",
        injected="weights and buffers from one seeded stream in the official order, under mibench's names",
        not_covered="training mode (batch statistics, spectral norm's power iteration), the cGAN training loop and "
        "its losses, width 64 (the same layers, wider)",
        difference=h.largest_difference(ours(golden), official),
    )


if __name__ == "__main__":
    main()
