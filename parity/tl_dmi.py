"""TL-DMI parity: which parameters the official code freezes (`models/classify.py`: VGG16_TL, FaceNet64, IR152 with
the published `freeze_layers` of `config/celeba/training_classifiers/classify.json`) against mibench's `prepare`.

The official classes are built from the export (torchvision's VGG16-BN without its ImageNet download; the
pre-training itself is not run on either side: mibench's public pre-training is switched off, the official
checkpoint loading is not reached). Compared: `requires_grad` of every official parameter, by name (translated
with `Classifier.from_official_names`), exactly.

    MIBENCH_OFFICIAL_TL_DMI=DIR python -m parity.tl_dmi
"""

from __future__ import annotations

import torch

from parity._harness import official_checkout, official_modules, replaced, without_download, write_golden

REPO, COMMIT = "hosytuyen/TL-DMI", "e3495df"
CLASSES = 5
SPLITS = {"vgg16": 26, "facenet64": 5, "ir152": 46}  # classify.json's freeze_layers


def ours(golden: dict) -> dict[str, torch.Tensor]:
    from mibench.api.context import RunContext
    from mibench.api.recipe import TrainSpec
    from mibench.defenses import tl_dmi
    from mibench.models.base import build_classifier

    out = {}
    with replaced(tl_dmi, pretrain_on_public=lambda *args, **kwargs: None):
        for name in SPLITS:
            net = build_classifier(name, {}, num_classes=CLASSES, in_channels=3, image_size=64)
            tl_dmi.TLDMI(tl_dmi.TLDMIParams(pretrain="public")).prepare(net, None, TrainSpec(), RunContext())
            trainable = {k: p.requires_grad for k, p in net.named_parameters()}
            names = type(net).from_official_names({n: n for n in golden[f"{name}.names"]})
            out[f"{name}.trainable"] = torch.tensor([trainable[names_key] for names_key in names])
    return out


def main() -> None:
    import torchvision

    path = official_checkout(REPO, COMMIT)
    golden, official = {}, {}
    modules = ("models", "utils", "dataloader", "losses", "metrics", "dnnlib")
    with without_download(torchvision.models, "vgg16_bn"), official_modules(path, *modules):
        from models import classify

        nets = {
            "vgg16": classify.VGG16_TL(CLASSES, classify.VGG16(CLASSES), freeze_layers=SPLITS["vgg16"]),
            "facenet64": classify.FaceNet64(CLASSES, freeze_layers=SPLITS["facenet64"]),
            "ir152": classify.IR152(CLASSES, freeze_layers=SPLITS["ir152"]),
        }
    for name, net in nets.items():
        params = list(net.named_parameters())
        golden[f"{name}.names"] = [n for n, _ in params]
        official[f"{name}.trainable"] = torch.tensor([p.requires_grad for _, p in params])
    mine = ours(golden)
    differences = sum(int((mine[k] != v).sum()) for k, v in official.items())
    write_golden(
        "tl_dmi",
        {**golden, **official},
        outputs=sorted(official),
        method="tl-dmi",
        repository=REPO,
        commit=COMMIT,
        files=["models/classify.py (VGG16_TL, FaceNet64, IR152)", "config/celeba/training_classifiers/classify.json"],
        functions=["VGG16_TL.__init__, FaceNet64.__init__, IR152.__init__ with the published freeze_layers"],
        units="the trainable/frozen flag of every parameter of VGG16 (split 26), FaceNet64 (5) and IR152 (46), "
        "the official input-layer typo included",
        injected="none; torchvision's VGG16-BN built without its ImageNet download, no pre-training on either side",
        not_covered="the pre-training and fine-tuning runs themselves, the recipe",
        difference=float(differences),
    )


if __name__ == "__main__":
    main()
