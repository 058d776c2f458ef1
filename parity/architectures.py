"""Architecture parity: the targets and evaluator as the official code builds them (Trap-MID's `classify.py`, the
KED-MI/PLG-MI classes it carries; PLG-MI's `baselines/classify.py` for the 112x112 evaluator), against mibench's.

Each official network gets weights from one seeded stream in its own state-dict order (BatchNorm variances kept
positive); the official state dict, translated by mibench's `Classifier.from_official_names`, must load strictly into
mibench's network, and both must give the same feature and logits in eval mode on the same images. The golden
stores the images, the official parameter names in order and the outputs, not the weights (VGG16 alone is 60 MB):
the test regenerates them from the same stream.

    MIBENCH_OFFICIAL_TRAP_MID=DIR python -m parity.architectures
"""

from __future__ import annotations

import torch
from torch import nn

from parity import _harness as h

REPO, COMMIT = "ntuaislab/Trap-MID", "3d59377"
CLASSES = 7
# mibench name: (official module folder, class, input size)
NETWORKS = {
    "vgg16": ("", "VGG16", 64),
    "facenet64": ("", "FaceNet64", 64),
    "ir152": ("", "IR152", 64),
    "facenet": ("plgmi/baselines", "FaceNet", 112),
}


def images(size: int) -> torch.Tensor:
    return torch.rand(2, 3, size, size, generator=h.seeded(size))


def ours(golden: dict) -> dict[str, torch.Tensor]:
    """mibench's networks with the official names' seeded weights, translated and loaded strictly."""
    from mibench.checkpoints import load_strict
    from mibench.models.base import build_classifier

    out = {}
    for i, (name, (_, _, size)) in enumerate(NETWORKS.items()):
        state = h.seeded_state(golden[f"{name}.layout"], seed=100 + i)
        net = build_classifier(name, {}, num_classes=CLASSES, in_channels=3, image_size=size)
        load_strict(net, type(net).from_official_names(state), f"official {name}")
        net.eval()
        with torch.no_grad():
            result = net(golden[f"{name}.images"])
        out[f"{name}.feature"], out[f"{name}.logits"] = result.features, result.logits
    return out


def main() -> None:
    import torchvision

    path = h.official_checkout(REPO, COMMIT)
    golden, official = {}, {}
    with h.without_download(torchvision.models, "vgg16_bn"):  # the official VGG16 asks for ImageNet weights
        for i, (name, (folder, cls, size)) in enumerate(NETWORKS.items()):
            with h.official_modules(path / folder if folder else path, "classify", "evolve", "utils"):
                import classify

                net: nn.Module = getattr(classify, cls)(CLASSES)
            layout = h.seed_network(net, seed=100 + i)
            net.eval()
            x = images(size)
            with torch.no_grad():
                feature, logits = net(x)
            golden[f"{name}.images"], golden[f"{name}.layout"] = x, layout
            official[f"{name}.feature"], official[f"{name}.logits"] = feature.flatten(1), logits
    h.write_golden(
        "architectures",
        {**golden, **official},
        outputs=sorted(official),
        method=",".join(NETWORKS),
        repository=REPO,
        commit=COMMIT,
        files=["classify.py (VGG16, FaceNet64, IR152)", "evolve.py", "plgmi/baselines/classify.py (FaceNet)"],
        functions=["VGG16/FaceNet64/IR152/FaceNet .__init__ and forward (eval mode)"],
        units="the official state dict loads strictly (after mibench's name translation) and gives the same "
        "feature and logits: VGG16 and FaceNet64 and IR152 at 64x64, the FaceNet evaluator at 112x112",
        injected="weights from one seeded stream in the official state-dict order (parity/_harness.py "
        "`seeded_state`); torchvision's vgg16_bn built without its ImageNet download",
        not_covered="training-mode behaviour (dropout draws), the BiDO and VIB variants (VGG16_BiDO, VGG16_vib: the "
        "defense goldens), the released checkpoints themselves (not downloadable here)",
        difference=h.largest_difference(ours({**golden}), official),
    )


if __name__ == "__main__":
    main()
