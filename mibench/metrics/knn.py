"""KNN distance: how close reconstructions come to the private images of their class, in evaluator features."""

from __future__ import annotations

from typing import ClassVar

from mibench.api.context import RunContext
from mibench.api.metric import MeasureInputs, Measurement, Metric
from mibench.metrics.evaluator_views import knn_reference_outputs, published_outputs
from mibench.metrics.functional import knn_distance
from mibench.metrics.published import KNN_PATH_MISSING, ProtocolParams, protocol_details
from mibench.registry import METRICS


class KNNParams(ProtocolParams):
    """The evaluation protocol (default: the suite's)."""


@METRICS.register
class KNNDistance(Metric):
    """Mean squared L2 distance in evaluator features to the nearest private training image of the same class.

    GMI (Zhang et al. CVPR 2020, Sec. 4.1); spec §6.2: squared distance, all reconstructions (failures included),
    reconstructions resized to the evaluator's input, private images read at the evaluator's resolution. Under the
    `published` protocol the reconstructions reach the evaluator as the attack's official code feeds them (PLG-MI
    family: the min-max 8-bit PNG round trip and kornia's align_corners=True resize; LOMMA: `low2high`), and the
    PLG-MI repository's reference features are the target-resolution private images kornia-resized to the
    evaluator's (its `get_private_feats`).
    """

    name: ClassVar[str] = "knn-distance"
    # 2: under `published`, the PLG-MI family's KNN stretches the raw generator output into its PNGs, as the official
    # reconstruct.py saves them (version 1 stretched the clamped image)
    # 3: under `published` the PLG-MI repository's reference (its get_private_feats: kornia-resized private images)
    version: ClassVar[int] = 3
    paper: ClassVar[str] = "Zhang et al., The Secret Revealer (GMI), CVPR 2020"
    Params = KNNParams
    scope: ClassVar[str] = "attack"

    def compute(self, inputs: MeasureInputs, ctx: RunContext) -> list[Measurement]:
        """KNN distance of the reconstructions."""
        protocol, pipeline = inputs.pipeline_for(self.params.protocol)
        missing = KNN_PATH_MISSING.get(pipeline)  # an official pipeline without a KNN distance: measured standard
        followed = None if missing else pipeline
        feats, _ = inputs.reconstruction_outputs() if followed is None else published_outputs(inputs, "knn", followed)
        private_feats, private_labels, reference = knn_reference_outputs(inputs, followed)
        value = knn_distance(feats, inputs.reconstructions.labels, private_feats, private_labels)
        details = {"feature_space": "evaluator", "squared": True, "n": int(feats.shape[0]), "reference": reference}
        if missing:
            details |= {"protocol": protocol, "pipeline": f"standard ({missing})"}
        else:
            details |= protocol_details(protocol, pipeline)
        return [Measurement("knn_dist", value, True, "distance", details)]
