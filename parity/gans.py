"""GAN network parity: GMI's generator and WGAN-GP critic and KED-MI's minibatch discriminator as the PLG-MI
baselines build them (`baselines/generator.py`, `baselines/discri.py`), against mibench's.

mibench names its layers differently (flat `Sequential`s) and stores the minibatch tensor T as in x (out x kernel)
rather than in x out x kernel; the parameters correspond one to one in order, with equal sizes. Each official
network gets weights from one seeded stream in its own order (`_harness.seeded_state`); the same values, in
the same order (reshaped where T's layout differs), go into mibench's network; both run in eval mode on the same
inputs. The golden stores the inputs, the official parameter layout and the outputs.

    MIBENCH_OFFICIAL_PLG_MI_ATTACK=DIR python -m parity.gans
"""

from __future__ import annotations

import torch

from parity import _harness as h

REPO, COMMIT = "LetheSec/PLG-MI-Attack", "3cf8735"
CLASSES = 10


def mibench_networks() -> dict[str, torch.nn.Module]:
    from mibench.gan.networks import DCGANGenerator, KEDMIDiscriminator, WGANCritic

    return {
        "generator": DCGANGenerator(100, 64, 3, 64),
        "critic": WGANCritic(64, 3, 64),
        "kedmi_discriminator": KEDMIDiscriminator(CLASSES, 64, 3, 64),
    }


def inputs() -> dict[str, torch.Tensor]:
    g = h.seeded(41)
    return {"z": torch.randn(4, 100, generator=g), "images": torch.rand(4, 3, 64, 64, generator=g)}


def outputs(name: str, net: torch.nn.Module, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    net.eval()
    with torch.no_grad():
        if name == "generator":
            return {f"{name}.images": net(x["z"])}
        if name == "critic":
            return {f"{name}.scores": net(x["images"])}
        feature, logits = net(x["images"])
        return {f"{name}.feature": feature, f"{name}.logits": logits}


def ours(golden: dict) -> dict[str, torch.Tensor]:
    out = {}
    for i, (name, net) in enumerate(mibench_networks().items()):
        h.load_in_order(net, h.seeded_state(golden[f"{name}.layout"], seed=200 + i), reshape=True)
        out.update(outputs(name, net, golden))
    return out


def main() -> None:
    path = h.official_checkout(REPO, COMMIT)
    x = inputs()
    golden, official = dict(x), {}
    with h.official_modules(path / "baselines", "generator", "discri", "utils"):
        h.stub_modules(utils={"LinearWeightNorm": object})  # discri's import; its module imports cv2 and more
        import discri
        import generator

        nets = {
            "generator": generator.Generator(100, 64),
            "critic": discri.DGWGAN(3, 64),
            "kedmi_discriminator": discri.MinibatchDiscriminator(3, 64, n_classes=CLASSES),
        }
    for i, (name, net) in enumerate(nets.items()):
        golden[f"{name}.layout"] = h.seed_network(net, seed=200 + i)
        official.update(outputs(name, net, x))
    h.write_golden(
        "gans",
        {**golden, **official},
        outputs=sorted(official),
        method="gmi",  # KED-MI's discriminator as the PLG-MI baselines carry it (KED-MI's own repository: not run)
        repository=REPO,
        commit=COMMIT,
        files=["baselines/generator.py (Generator)", "baselines/discri.py (DGWGAN, MinibatchDiscriminator)"],
        functions=["Generator, DGWGAN, MinibatchDiscriminator: __init__ and forward (eval mode)"],
        units="GMI's 64x64 generator (images), its WGAN-GP critic (scores), KED-MI's minibatch discriminator "
        "(feature and class logits)",
        injected="weights from one seeded stream in the official parameter order, given to mibench's parameters "
        "in the same order (T reshaped)",
        not_covered="training-mode BatchNorm, the GAN training loops (losses, optimisers, schedules), KED-MI's "
        "per-60-class minibatch grouping, PLG-MI's conditional GAN",
        difference=h.largest_difference(ours(golden), official),
    )


if __name__ == "__main__":
    main()
