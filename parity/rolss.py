"""RoLSS / SSF parity: the released skip-scaled ResNet against mibench's ResNet with RoLSS's `wrap`.

The official `BasicBlock`, `Bottleneck` and `ResNet` (with `conv3x3`, `conv1x1`) are compiled alone from
`models/torchvision/models/resnet.py` (the package around them is a vendored torchvision whose C extensions and
weight registry the unit never uses). Two short networks keep the golden small and still cover every rule: basic
blocks `[1, 1, 5, 2]` with the ResNet-18 config's `skip: [1, 1, 1, 0.6]` (SSF), bottlenecks `[1, 1, 5, 1]` with
the RoLSS configs' `[1, 1, 1, 0]`; each third stage has five blocks, so the hard-coded `split=0.8` removes the
shortcut of its last one. mibench's side is its torchvision ResNet classifier with the same bodies, the defense's
`wrap` setting the factors. Weights come from one seeded stream in the official state-dict order (stored as a
layout, not as values); both sides run in eval mode on the same [0, 1] images, the official network given mibench's
normalisation (x - 0.5) / 0.5.

    MIBENCH_OFFICIAL_ROLSS=DIR python -m parity.rolss
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, List, Optional, Type, Union  # noqa: UP035 - the official annotations

import torch
import torchvision
from torch import Tensor, nn

from mibench.models.imagenet import _ResNet
from parity import _harness as h

REPO, COMMIT = "Pillowkoh/RoLSS", "304b147"
CLASSES = 5
NETWORKS = {  # name: (block, blocks per stage, the config's per-stage factors, mibench's params)
    "ssf": ("BasicBlock", [1, 1, 5, 2], [1, 1, 1, 0.6], {"last_stage_scale": 0.6}),
    "rolss": ("Bottleneck", [1, 1, 5, 1], [1, 1, 1, 0], {"last_stage_scale": 0.0}),
}


def mibench_network(block: str, layers: list[int]) -> nn.Module:
    """mibench's torchvision-ResNet classifier with a short body."""

    class ShortResNet(_ResNet):
        name: ClassVar[str] = "parity-resnet"
        builder: ClassVar[str] = "resnet18"

        def build_body(self) -> nn.Module:
            return torchvision.models.resnet.ResNet(getattr(torchvision.models.resnet, block), layers)

    return ShortResNet(CLASSES, 3, 32, ShortResNet.Params())


def lively(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """BatchNorm scales near 1 (the seeded stream's N(0, 1/C) would silence a network without shortcuts)."""
    return {k: 1 + v if v.dim() == 1 and k.endswith("weight") and "fc" not in k else v for k, v in state.items()}


def ours(golden: dict[str, Any]) -> dict[str, torch.Tensor]:
    from mibench.registry import DEFENSES

    out = {}
    for name, (block, layers, _, params) in NETWORKS.items():
        net = mibench_network(block, layers)
        state = lively(h.seeded_state(golden[f"{name}.layout"], seed=700))
        net.load_state_dict({("" if k.startswith("fc.") else "body.") + k: v for k, v in state.items()})
        defense = DEFENSES.get("rolss")
        defense(defense.Params(**params)).wrap(net)
        net.eval()
        with torch.no_grad():
            out[f"{name}.logits"] = net(golden["images"]).logits
    return out


def main() -> None:
    path = h.official_checkout(REPO, COMMIT) / "models/torchvision/models/resnet.py"
    namespace: dict[str, Any] = {
        "torch": torch, "nn": nn, "Tensor": Tensor, "Any": Any, "Callable": Callable, "List": List,  # noqa: UP006
        "Optional": Optional, "Type": Type, "Union": Union, "_log_api_usage_once": lambda obj: None,  # noqa: UP006
    }  # fmt: skip
    for unit in ("conv3x3", "conv1x1", "BasicBlock", "Bottleneck", "ResNet"):
        h.compiled(path, unit, namespace)
    images = torch.rand(3, 3, 32, 32, generator=h.seeded(701))
    golden: dict[str, Any] = {"images": images}
    official = {}
    for name, (block, layers, skip, _) in NETWORKS.items():
        net = namespace["ResNet"](namespace[block], layers, num_classes=CLASSES, skip=skip)
        golden[f"{name}.layout"] = h.seed_network(net, seed=700)
        net.load_state_dict(lively(net.state_dict()))
        net.eval()
        with torch.no_grad():
            official[f"{name}.logits"] = net((images - 0.5) / 0.5)
    write = {**golden, **official}
    h.write_golden(
        "rolss",
        write,
        outputs=sorted(official),
        method="rolss",
        repository=REPO,
        commit=COMMIT,
        files=[
            "models/torchvision/models/resnet.py",
            "configs/training/targets/FaceScrub/resnet18/skip.yaml",
            "configs/training/targets/FaceScrub/resnet101/skip.yaml",
        ],
        functions=[
            "ResNet.__init__ / _make_layer (skip per stage, split=0.8 in layer3)",
            "BasicBlock.forward",
            "Bottleneck.forward",
        ],
        units="the logits of two short skip-scaled ResNets: basic blocks with SSF's [1, 1, 1, 0.6] and bottlenecks "
        "with RoLSS's [1, 1, 1, 0], each with the hard-coded removal in stage 3's tail",
        injected="the weights: one seeded stream (seed 700) in the official state-dict order, BatchNorm scales 1 + "
        "their draw, the same values loaded into mibench's network under its names (body.*, fc.*); the images "
        "from seed 701",
        not_covered="the full ResNet depths (the same blocks repeated), training (Adam 1e-3, 100 epochs: read, not "
        "run), the DenseNet/MaxViT/ViT variants (not implemented in mibench), TTS (not in the release)",
        difference=h.largest_difference(ours(write), official),
    )


if __name__ == "__main__":
    main()
