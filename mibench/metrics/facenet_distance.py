"""FaceNet feature distance (δ_face): PPA's and MIBench's KNN distance in a public face-recognition embedding.

Spec §6.5: facenet-pytorch's InceptionResnetV1 trained on VGGFace2 (`20180402-114759-vggface2.pt`), images resized
to 160x160 (antialiased) and standardised to [-1, 1] as PPA does; the value is the mean over all reconstructions of
the squared L2 distance to the nearest private training image of the same class (GMI's KNN formula in this
embedding). Unlike `knn-distance`, the embedding is independent of the evaluation model, so it compares attacks
across evaluators. The weights are read from `weights` or $MIBENCH_WEIGHTS; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field

from mibench.api.context import RunContext
from mibench.api.metric import MeasureInputs, Measurement, Metric
from mibench.checkpoints import weights_file
from mibench.errors import CheckpointError
from mibench.metrics.frechet import cached_network, network_features
from mibench.metrics.functional import knn_distance
from mibench.metrics.published import ProtocolParams
from mibench.models.inception_resnet_v1 import load_facenet_embedding
from mibench.registry import METRICS

FACENET_WEIGHTS = "20180402-114759-vggface2.pt"


def facenet_weights_path(explicit: str | None) -> Path:
    """`explicit`, else $MIBENCH_WEIGHTS/<FACENET_WEIGHTS>; a clear error naming the file when it is absent."""
    provenance = "facenet-pytorch's VGGFace2 InceptionResnetV1 release"
    return weights_file(explicit, FACENET_WEIGHTS, "facenet-distance", provenance, "{weights: /path/to/file}")


# Why no δ_face record is paired with a paper's: PPA re-renders each kept latent (1024 -> crop 800 -> 160, unclamped)
# into the embedding, and Trap-MID's Table 11 code is not released; mibench embeds the stored reconstructions.
NOT_THE_PAPERS_PATH = "standard (the stored reconstructions; the papers' own δ_face paths are not reproduced)"


class FaceNetDistanceParams(ProtocolParams):
    """Where the embedding's weights are, and its input size."""

    weights: str | None = Field(None, description=f"default: $MIBENCH_WEIGHTS/{FACENET_WEIGHTS}")
    input_size: int = Field(160, ge=75)


@METRICS.register
class FaceNetDistance(Metric):
    """Mean squared L2 distance in the FaceNet (VGGFace2) embedding to the nearest same-class private image."""

    name: ClassVar[str] = "facenet-distance"
    # 2: its records say standard under `published` (never set beside the papers' values, which come another way)
    version: ClassVar[int] = 2
    paper: ClassVar[str] = "Struppek et al., Plug & Play Attacks, ICML 2022 (feature distance δ_face)"
    Params = FaceNetDistanceParams
    scope: ClassVar[str] = "attack"

    def external_files(self) -> dict[str, Path]:
        """The FaceNet weights it reads, where they are now (they key its job)."""
        try:
            return {"weights": facenet_weights_path(self.params.weights)}
        except CheckpointError:  # absent: the measurement says so when it runs
            return {}

    def compute(self, inputs: MeasureInputs, ctx: RunContext) -> list[Measurement]:
        """δ_face of the reconstructions against the private training images of the attacked classes."""
        p: FaceNetDistanceParams = self.params
        path = facenet_weights_path(p.weights)
        digest = inputs.verified_file(path)
        net = cached_network(f"{path}@{digest}", inputs.device, lambda: load_facenet_embedding(path))
        private = inputs.data.private_train.of_classes(inputs.classes)
        recon = inputs.reconstructions
        fake = network_features(recon.images, net, p.input_size, inputs.device)
        real = network_features(private.images, net, p.input_size, inputs.device)
        value = knn_distance(fake, recon.labels, real, private.labels)
        details = {
            "feature_space": "facenet-vggface2 (InceptionResnetV1)",
            "weights": path.name,
            "weights_sha256": digest,
            "input_size": p.input_size,
            "squared": True,
            "n": int(fake.shape[0]),
            "protocol": p.protocol or inputs.protocol,
            "pipeline": NOT_THE_PAPERS_PATH,
        }
        return [Measurement("facenet_dist", value, True, "distance", details)]
