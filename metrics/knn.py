"""KNN distance: how close reconstructions come to the private images of their class, in evaluator features."""

from __future__ import annotations

from typing import ClassVar

from mibench.context import RunContext
from mibench.metric import MeasureInputs, Measurement, Metric
from mibench.metrics.functional import knn_distance
from mibench.params import NoParams
from mibench.registry import METRICS


@METRICS.register
class KNNDistance(Metric):
    """Mean squared L2 distance in evaluator features to the nearest private training image of the same class.

    GMI (Zhang et al. CVPR 2020, Sec. 4.1); spec §6.2: squared distance, all reconstructions (failures included),
    reconstructions resized to the evaluator's input, private images read at the evaluator's resolution.
    """

    name: ClassVar[str] = "knn-distance"
    paper: ClassVar[str] = "Zhang et al., The Secret Revealer (GMI), CVPR 2020"
    Params = NoParams
    scope: ClassVar[str] = "attack"

    def compute(self, inputs: MeasureInputs, ctx: RunContext) -> list[Measurement]:
        """KNN distance of the reconstructions."""
        feats, _ = inputs.reconstruction_outputs()
        private_feats, _, private_labels = inputs.private_train_outputs()
        value = knn_distance(feats, inputs.reconstructions.labels, private_feats, private_labels)
        details = {"feature_space": "evaluator", "squared": True, "n": int(feats.shape[0])}
        return [Measurement("knn_dist", value, True, "distance", details)]
