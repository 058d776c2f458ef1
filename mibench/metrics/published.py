"""The `published` evaluation protocol: each official code base's metric pipeline, quirks included.

A paper's numbers come from its authors' evaluation code, not from the metric's definition. `protocol: published`
reproduces, per attack, the pipeline behind the Trap-MID paper's rows (issue #20; reviews in
`shared/research/fidelity/attack-fidelity.md` and `metric-oracles.md`):

* `plgmi-baselines` (GMI, KED-MI; LetheSec/PLG-MI-Attack @ 3cf8735 `baselines/`): the evaluator sees GMI's
  `low2high` (a float -> uint8 truncation, `ToPILImage`, PIL bilinear resize to 112); KNN and FID read the saved
  PNGs: `save_image(normalize=True)` stretches each image to its own min..max and rounds to 8 bits
  (`minmax_png_roundtrip`); KNN resizes them with kornia's `Resize` (bilinear, `align_corners=True`); FID runs
  torchvision's ImageNet Inception-v3 with the pytorch-fid input transform (`TorchvisionInception`) in batches of
  100 that drop the remainder (`drop_remainder`), and returns -1000 when nothing succeeded (recorded as missing).
* `plgmi` (PLG-MI, PLG-MI+/++): as above, except that the evaluator sees the generator's unclamped output resized
  by kornia (`align_corners=True`).
* `lomma` (LOMMA over GMI and over KED-MI; Trap-MID's `lomma/` = Re-thinking_MI @ ed4b6b8): evaluator and KNN
  inputs through `low2high` in memory; FID on `((x * 0.5 + 0.5) * 255).to(uint8)` of [0, 1] images, i.e. [127, 255]
  (`lomma_uint8`), with the TF-FID Inception (StyleGAN2-ADA's detector in the official code; torch-fidelity's port
  of the same weights here).
* `ppa` (LukasStruppek/Plug-and-Play-Attacks @ 3087a4f): the per-class PRDC density averages over the real images
  (`metrics/prcd.py` sums the fake counts per real ball and takes the mean over reals); the evaluator already sees
  PPA's fresh renders in both protocols.
* `brepmi` (m-kahla/Label-Only-Model-Inversion-Attacks-via-Boundary-Repulsion @ 8a2e200): the evaluator sees
  `low2high` (`brep_mi_utils.decision_Evaluator`); its code measures nothing else, so KNN and the feature-space
  metrics stay standard and their records say why.

Attacks without a published pipeline (MI-Face, the inversion network) are measured as in `standard`, and their
records say so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import Field

from mibench.checkpoints import load_strict, read_state_dict, weights_file
from mibench.data.base import height_width, to_float
from mibench.params import Params


class ProtocolParams(Params):
    """The evaluation protocol of a protocol-dependent metric (default: the suite's)."""

    protocol: Literal["standard", "published"] | None = Field(None, description="default: the suite's protocol")


STANDARD = "standard"
PUBLISHED = "published"
PROTOCOLS = (STANDARD, PUBLISHED)

# pipeline -> what its published path changes (the README's table is written from the same facts).
PIPELINES = {
    "plgmi-baselines": "GMI/KED-MI rows: PLG-MI repository baselines",
    "plgmi": "PLG-MI rows: PLG-MI repository",
    "lomma": "LOMMA rows: Re-thinking_MI / Trap-MID lomma",
    "ppa": "PPA rows: Plug-and-Play-Attacks",
    "brepmi": "BREP-MI rows: the m-kahla repository (evaluator input only)",
}

FID_BATCH = 100  # PLG-MI's `calc_fid(..., batch_size=100)`
FID_MISSING = -1000.0  # PLG-MI's value when no reconstruction succeeded
TORCHVISION_INCEPTION = "inception_v3_google-0cc3c7bd.pth"
TORCHVISION_INCEPTION_SHA256 = "0cc3c7bd"


def protocol_details(protocol: str, pipeline: str | None) -> dict[str, str]:
    """What every record of a protocol-dependent metric carries: its protocol and the pipeline it followed."""
    if protocol == PUBLISHED and pipeline is None:
        return {"protocol": protocol, "pipeline": "standard (the attack has no published pipeline)"}
    return {"protocol": protocol, "pipeline": pipeline or STANDARD}


# Pipelines whose own feature-space path (FID, PRDC) mibench does not reproduce: the Fréchet and PRDC records of their
# attacks say standard, so `--compare-paper` never sets the paper's values beside them.
# Pipelines whose KNN reference features come from the PLG-MI repository's get_private_feats (kornia Resize(112) of
# the private loader's images)
KORNIA_REFERENCE_PIPELINES = frozenset({"plgmi", "plgmi-baselines"})

BREPMI_MEASURES_ACCURACY_ONLY = "BREP-MI's code measures only the evaluator's accuracy"
FEATURE_PATH_NOT_REPRODUCED = {
    "ppa": "PPA's own FID/PRDC path, fresh unclamped 299 renders into pytorch-fid's Inception, is not reproduced",
    "brepmi": BREPMI_MEASURES_ACCURACY_ONLY,
}
# Pipelines whose official code has no KNN distance: their KNN records say standard, with the reason.
KNN_PATH_MISSING = {"brepmi": BREPMI_MEASURES_ACCURACY_ONLY}


def feature_protocol_details(protocol: str, pipeline: str | None) -> dict[str, str]:
    """`protocol_details` for the feature-space metrics: standard, with the reason, where the pipeline's is not done."""
    if pipeline in FEATURE_PATH_NOT_REPRODUCED:
        return {"protocol": protocol, "pipeline": f"standard ({FEATURE_PATH_NOT_REPRODUCED[pipeline]})"}
    return protocol_details(protocol, pipeline)


def minmax_png_roundtrip(images: torch.Tensor) -> torch.Tensor:
    """Torchvision `save_image(x, normalize=True)` of each image, read back with `ToTensor`.

    Per image: clamp to and stretch its own [min, max] to [0, 1] (a constant image becomes 0, torchvision divides
    by max(max - min, 1e-5)), then `mul(255).add(0.5).clamp(0, 255)` to uint8 (rounding), then / 255.
    """
    flat = images.flatten(1)
    low = flat.min(1).values.view(-1, *([1] * (images.ndim - 1)))
    high = flat.max(1).values.view(-1, *([1] * (images.ndim - 1)))
    stretched = (images.clamp(min=low, max=high) - low) / (high - low).clamp(min=1e-5)
    return (stretched * 255 + 0.5).clamp(0, 255).to(torch.uint8).float() / 255


def kornia_resize(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Kornia 0.6.6 `augmentation.Resize(size)`: bilinear with `align_corners=True`, no antialiasing."""
    shape = height_width(size)
    if tuple(images.shape[-2:]) == shape:
        return images
    return F.interpolate(images, size=shape, mode="bilinear", align_corners=True)


def low2high(images: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """GMI/KED-MI/LOMMA's `low2high`: `ToPILImage` (mul(255).byte(): truncation), PIL bilinear resize, `ToTensor`."""
    height, width = height_width(size)
    out = []
    for image in images.detach().cpu().float():
        array = (image * 255).to(torch.uint8).permute(1, 2, 0).numpy()  # .byte() wraps, values here are in range
        mode = "L" if array.shape[2] == 1 else "RGB"
        pil = Image.fromarray(array[:, :, 0] if mode == "L" else array, mode)
        resized = np.asarray(pil.resize((width, height), Image.BILINEAR), dtype=np.uint8)
        resized = resized[:, :, None] if resized.ndim == 2 else resized
        out.append(torch.from_numpy(resized.copy()).permute(2, 0, 1))
    return to_float(torch.stack(out)) if out else images


def lomma_uint8(images: torch.Tensor) -> torch.Tensor:
    """LOMMA's FID `postprocess` of [0, 1] images: ((x * 0.5 + 0.5) * 255) truncated to uint8, i.e. [127, 255]."""
    return ((images.float() * 0.5 + 0.5) * 255).to(torch.uint8)


def drop_remainder(count: int, batch: int = FID_BATCH) -> int:
    """How many of `count` images pytorch-fid's `get_activations` uses: whole batches only (all of them if fewer)."""
    if count <= 0:
        return 0
    batch = min(batch, count)
    return count // batch * batch


def evaluator_input(images: torch.Tensor, pipeline: str, size: int | tuple[int, int]) -> torch.Tensor:
    """What the evaluation model sees of reconstructions under a published pipeline."""
    if pipeline == "plgmi":
        return kornia_resize(images, size)
    if pipeline in ("plgmi-baselines", "lomma", "brepmi"):
        return low2high(images, size)
    raise ValueError(f"no published evaluator input for pipeline {pipeline!r}")


def knn_input(images: torch.Tensor, pipeline: str, size: int | tuple[int, int]) -> torch.Tensor:
    """What the evaluator sees of reconstructions for the KNN distance under a published pipeline."""
    if pipeline in ("plgmi", "plgmi-baselines"):
        return kornia_resize(minmax_png_roundtrip(images), size)
    if pipeline == "lomma":
        return low2high(images, size)
    raise ValueError(f"no published KNN input for pipeline {pipeline!r}")


# ---------------------------------------------------------------------------------------------------------------------
# PLG-MI's FID network: torchvision's ImageNet Inception-v3 in pytorch-fid's block layout


class TorchvisionInception(torch.nn.Module):
    """pytorch-fid's `InceptionV3` over torchvision's ImageNet weights, as PLG-MI's `models/inception.py`.

    Bilinear resize to 299 (`align_corners=False`), the input transform x * (std / 0.5) + (mean - 0.5) / 0.5 per
    channel, the four blocks (to Mixed_7c) and global average pooling: 2048-d features of [0, 1] images.
    """

    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, state: dict[str, torch.Tensor] | None = None, source: str = "state"):
        super().__init__()
        import torchvision

        net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
        if state is not None:
            load_strict(net, state, source)
        pool = torch.nn.MaxPool2d(kernel_size=3, stride=2)
        self.blocks = torch.nn.Sequential(
            net.Conv2d_1a_3x3, net.Conv2d_2a_3x3, net.Conv2d_2b_3x3, pool,
            net.Conv2d_3b_1x1, net.Conv2d_4a_3x3, torch.nn.MaxPool2d(kernel_size=3, stride=2),
            net.Mixed_5b, net.Mixed_5c, net.Mixed_5d, net.Mixed_6a, net.Mixed_6b, net.Mixed_6c, net.Mixed_6d,
            net.Mixed_6e, net.Mixed_7a, net.Mixed_7b, net.Mixed_7c, torch.nn.AdaptiveAvgPool2d(1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x 2048 pool features of [0, 1] images (grey repeated to RGB)."""
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        scale = torch.tensor(self.STD, device=x.device).view(1, 3, 1, 1) / 0.5
        shift = (torch.tensor(self.MEAN, device=x.device).view(1, 3, 1, 1) - 0.5) / 0.5
        return self.blocks(x * scale + shift).flatten(1)


def torchvision_inception_path(explicit: str | None) -> Path:
    """Torchvision's ImageNet Inception-v3 file: `explicit`, else $MIBENCH_WEIGHTS/<TORCHVISION_INCEPTION>."""
    return weights_file(
        explicit,
        TORCHVISION_INCEPTION,
        "PLG-MI's published FID",
        f"torchvision's ImageNet Inception-v3 release, SHA-256 {TORCHVISION_INCEPTION_SHA256}...",
        "{protocol: published, torchvision_weights: /path/to/file}",
    )


def torchvision_inception(path: Path) -> TorchvisionInception:
    """The network with the weights at `path` (read weights-only, loaded strictly)."""
    # A non-released file is allowed here: the metric names its number fd_inception, not FID (frechet.py)
    state = read_state_dict(path, what="torchvision Inception-v3 weights", released_check=False)
    return TorchvisionInception(state, str(path))
