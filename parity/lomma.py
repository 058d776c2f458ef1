"""LOMMA parity: the identity loss of Re-thinking_MI's `attack.py` (`iden_loss` with `logit_loss`: the NLL of raw
logits averaged over the target and its students, plus lam times the feature regulariser on the target's features)
against mibench's `LOMMA.identity_loss`, and the official students (`models/classify.py` EfficientNet_b0/b1/b2)
against mibench's `efficientnet-b*` architectures.

`iden_loss` and `reg_loss` are compiled alone from `attack.py` (its module imports the repository's utils); the
official `reg_loss` draws `reparameterize` noise it then overwrites, so the draw is harmless and not injected. The
networks are linear stand-ins with features (target and two students). For the students, torchvision builds the
official classes without the ImageNet download; weights from one seeded stream in the official order, given in
order to mibench's (the official `feature` Sequential holds torchvision's features and pooling, mibench's
`features`, `pool`); both in eval mode on the same images.

    MIBENCH_OFFICIAL_RE_THINKING_MI=DIR python -m parity.lomma
"""

from __future__ import annotations

import types

import torch
from torch import nn

from parity import _harness as h

REPO, COMMIT = "sutd-visual-computing-group/Re-thinking_MI", "ed4b6b8"
CLASSES, LAM = 5, 0.1
STUDENTS = ("efficientnet-b0", "efficientnet-b1", "efficientnet-b2")


class Linear(nn.Module):
    """A stand-in network: (features, logits) of the flattened image."""

    def __init__(self, weight: torch.Tensor, head: torch.Tensor, official: bool):
        super().__init__()
        self.weight, self.head, self.official = weight, head, official

    def forward(self, x: torch.Tensor):
        feature = torch.tanh(x.flatten(1) @ self.weight)
        logits = feature @ self.head
        return (feature, logits) if self.official else types.SimpleNamespace(features=feature, logits=logits)


def inputs() -> dict[str, torch.Tensor]:
    g = h.seeded(53)
    out = {"images": torch.rand(4, 3, 8, 8, generator=g), "labels": torch.tensor([0, 2, 4, 1]),
           "feature_mean": torch.randn(16, generator=g) * 0.3,
           "student_images": torch.rand(2, 3, 32, 32, generator=g)}  # fmt: skip
    for name in ("target", "student_0", "student_1"):
        out[f"{name}.weight"] = torch.randn(192, 16, generator=g) * 0.1
        out[f"{name}.head"] = torch.randn(16, CLASSES, generator=g)
    return out


def networks(golden: dict, official: bool) -> list[nn.Module]:
    return [Linear(golden[f"{n}.weight"], golden[f"{n}.head"], official) for n in ("target", "student_0", "student_1")]


def ours(golden: dict) -> dict[str, torch.Tensor]:
    from mibench.api.context import RunContext
    from mibench.attacks import lomma
    from mibench.models.base import build_classifier

    target, *students = networks(golden, official=False)
    attack = lomma.LOMMAGMI(lomma.LOMMAGMIParams(lomma=lomma.LOMMAParams(reg_weight=LAM)))
    prior = {lomma.STUDENTS: types.SimpleNamespace(students=students, feature_mean=golden["feature_mean"])}
    with h.replaced(lomma, freeze=lambda module: module):  # the stand-ins have no parameters to freeze
        identity = attack.identity_loss(target, prior, RunContext())
    images = golden["images"].clone().requires_grad_(True)
    loss = identity(images, golden["labels"]).mean()  # GMI's objective: per-sample losses / the batch
    (grad,) = torch.autograd.grad(loss, images)
    out = {"loss": loss.detach(), "grad": grad}
    for i, name in enumerate(STUDENTS):
        net = build_classifier(name, {}, num_classes=CLASSES, in_channels=3, image_size=32).eval()
        h.load_in_order(net, h.seeded_state(golden[f"{name}.layout"], seed=500 + i))
        with torch.no_grad():
            result = net(golden["student_images"])
        out[f"{name}.feature"], out[f"{name}.logits"] = result.features, result.logits
    return out


def main() -> None:
    import torchvision

    path = h.official_checkout(REPO, COMMIT)
    x = inputs()
    namespace = {"torch": torch, "nn": nn}
    h.compiled(path / "attack.py", "reparameterize", namespace)  # reg_loss calls it
    h.compiled(path / "attack.py", "reg_loss", namespace)
    iden_loss = h.compiled(path / "attack.py", "iden_loss", namespace)
    images = x["images"].clone().requires_grad_(True)
    loss = iden_loss(networks(x, official=True), images, x["labels"], "logit_loss", nn.NLLLoss(),
                     fea_mean=[x["feature_mean"]], fea_logvar=[torch.zeros(16)], lam=LAM)  # fmt: skip
    (grad,) = torch.autograd.grad(loss, images)
    official = {"loss": loss.detach(), "grad": grad}
    golden = dict(x)
    builders = ("efficientnet_b0", "efficientnet_b1", "efficientnet_b2")
    with h.without_download(torchvision.models.efficientnet, *builders), h.official_modules(path, "models", "utils"):
        h.stub_modules(utils={})  # models/classify imports the repository's utils (data loading, never called)
        from models import classify

        for i, name in enumerate(STUDENTS):
            net = getattr(classify, f"EfficientNet_{name[-2:]}")(CLASSES).eval()
            golden[f"{name}.layout"] = h.seed_network(net, seed=500 + i)
            with torch.no_grad():
                feature, logits = net(x["student_images"])
            official[f"{name}.feature"], official[f"{name}.logits"] = feature, logits
    h.write_golden(
        "lomma",
        {**golden, **official},
        outputs=sorted(official),
        method="lomma-gmi,lomma-kedmi",
        repository=REPO,
        commit=COMMIT,
        files=["attack.py (iden_loss, reg_loss)", "models/classify.py (EfficientNet_b0/b1/b2)"],
        functions=["iden_loss(logit_loss, lam 0.1) over a target and two students", "EfficientNet_b* forward"],
        units="LOMMA's identity loss and its gradient with respect to the images; the three students' feature "
        "and logits in eval mode",
        injected="linear stand-ins for the target and students; students' weights from one seeded stream in the "
        "official order; torchvision's EfficientNets built without the ImageNet download",
        not_covered="the students' distillation (training), the search around the loss, mu_pub's estimation",
        difference=h.largest_difference(ours(golden), official),
    )


if __name__ == "__main__":
    main()
