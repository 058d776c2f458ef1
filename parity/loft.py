"""LoFt parity: the authors' library's low-rank neck and inverse focal loss against mibench's.

LoFt's scripts (Chrisqcwx/LoFt @ 07f1e25: `lrc.py`, `ca_ft.py`) import the authors' `modelinversion` library from
`src/`, which that repository's stored snapshot lacks; the same library is the MI toolbox's `tomain` branch
(ffhibnese/Model-Inversion-Attack-ToolBox @ d58590c, same author, the classes the scripts import). Its
`_neck_builder` (from `models/classifiers/wrappers.py`) and `InverseFocalLoss` (from `utils/losses.py`) are compiled
alone: the package imports StyleGAN and diffusion dependencies the units never call.

Units: the neck's logits of given features (train mode, batch statistics; eval mode, running statistics after that
batch), and the inverse focal loss (gamma 8, alpha 0.25, as `InverseFocalLoss(focal_p=8)`) with its gradient.
The neck's weights come from one seeded stream in its own order, the same values in mibench's `LowRankHead.neck`.

    MIBENCH_OFFICIAL_MODEL_INVERSION_ATTACK_TOOLBOX=DIR python -m parity.loft
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from parity import _harness as h

REPO, COMMIT = "ffhibnese/Model-Inversion-Attack-ToolBox", "d58590c"
FEATURES, RANK, CLASSES, GAMMA = 12, 4, 6, 8.0


def inputs() -> dict[str, torch.Tensor]:
    g = h.seeded(800)
    return {
        "features": torch.randn(8, FEATURES, generator=g),
        "logits": torch.randn(8, CLASSES, generator=g) * 2,
        "labels": torch.arange(8) % CLASSES,
    }


def run_neck(neck: nn.Module, features: torch.Tensor) -> dict[str, torch.Tensor]:
    neck.train()
    trained = neck(features)
    neck.eval()
    return {"neck_train": trained.detach(), "neck_eval": neck(features).detach()}


def loss_and_gradient(loss_fn, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    logits = logits.clone().requires_grad_(True)
    loss = loss_fn(logits, labels)
    (grad,) = torch.autograd.grad(loss, logits)
    return {"focal_loss": loss.detach(), "focal_grad": grad}


def ours(golden: dict[str, Any]) -> dict[str, torch.Tensor]:
    from mibench.defenses.loft import LowRankHead, inverse_focal_loss

    head = LowRankHead(nn.Identity(), FEATURES, CLASSES, RANK, "tanh")
    head.neck.load_state_dict(h.seeded_state(golden["neck.layout"], seed=801))
    return {
        **run_neck(head.neck, golden["features"]),
        **loss_and_gradient(lambda x, y: inverse_focal_loss(x, y, GAMMA, 0.25), golden["logits"], golden["labels"]),
    }


def main() -> None:
    src = h.official_checkout(REPO, COMMIT) / "src/modelinversion"
    namespace: dict[str, Any] = {"torch": torch, "nn": nn, "F": F}
    h.compiled(src / "models/classifiers/wrappers.py", "_neck_builder", namespace)
    namespace["_activation"] = {"tanh": nn.Tanh}  # the module-level table, its one entry the scripts use
    h.compiled(src / "utils/losses.py", "InverseFocalLoss", namespace)
    x = inputs()
    neck = namespace["_neck_builder"](RANK, "tanh")(FEATURES, CLASSES)
    layout = h.seed_network(neck, seed=801)
    official = {
        **run_neck(neck, x["features"]),
        **loss_and_gradient(namespace["InverseFocalLoss"](GAMMA), x["logits"], x["labels"]),
    }
    write = {**x, "neck.layout": layout, **official}
    h.write_golden(
        "loft",
        write,
        outputs=sorted(official),
        method="loft",
        component="the authors' modelinversion library LoFt's scripts import (the MI toolbox's tomain branch)",
        repository=REPO,
        commit=COMMIT,
        files=["src/modelinversion/models/classifiers/wrappers.py", "src/modelinversion/utils/losses.py"],
        functions=["_neck_builder(neck_dim, 'tanh')(input_dim, output_dim)", "InverseFocalLoss(8).__call__"],
        units="the low-rank neck's logits (train mode, then eval mode after that batch) and the confidence "
        "adaptation's inverse focal loss with its gradient",
        injected="the neck's weights from one seeded stream (seed 801) in its state-dict order; features, logits and "
        "labels from seed 800",
        not_covered="where the neck replaces the last linear layer (`operate_fc`, read) and both training stages "
        "(lrc.py's and ca_ft.py's recipes, read: the scripts need FaceScrub and an MS-Celeb-1M backbone)",
        difference=h.largest_difference(ours(write), official),
    )


if __name__ == "__main__":
    main()
