"""Fréchet distance between reconstructions and private images, with a pluggable feature extractor."""

from __future__ import annotations

from typing import ClassVar, Literal

from mibench.context import RunContext
from mibench.metric import MeasureInputs, Measurement, Metric
from mibench.metrics.functional import frechet_distance_of_features, topk_correct
from mibench.params import Params
from mibench.registry import METRICS


class FrechetParams(Params):
    """Feature extractor and which reconstructions count.

    `extractor: evaluator` uses the evaluation model's penultimate features; the value is then reported as
    "fd_evaluator", never as "fid", because it is not comparable with Inception-v3 FID.
    `fake_subset: successful` follows the PLG-MI/Trap-MID code (only reconstructions the evaluator recognises);
    `all` follows MIBench/PPA.
    """

    extractor: Literal["evaluator"] = "evaluator"
    fake_subset: Literal["successful", "all"] = "successful"


@METRICS.register
class FrechetDistance(Metric):
    """Fréchet distance (Heusel et al., NeurIPS 2017) of reconstruction features to private training features.

    Real set: the private training images of the attacked classes (spec §6.3, mibench default). Computed in float64.
    """

    name: ClassVar[str] = "frechet-distance"
    paper: ClassVar[str] = "Heusel et al., GANs Trained by a Two Time-Scale Update Rule (FID), NeurIPS 2017"
    Params = FrechetParams
    scope: ClassVar[str] = "attack"

    def compute(self, inputs: MeasureInputs, ctx: RunContext) -> list[Measurement]:
        """Fréchet distance in the chosen feature space (NaN-free: `None` when too few images qualify)."""
        p: FrechetParams = self.params
        feats, logits = inputs.reconstruction_outputs()
        if p.fake_subset == "successful":
            feats = feats[topk_correct(logits, inputs.reconstructions.labels, 1)]
        real, _, _ = inputs.private_train_outputs()
        details = {
            "extractor": p.extractor,
            "fake_subset": p.fake_subset,
            "n_fake": int(feats.shape[0]),
            "n_real": int(real.shape[0]),
        }
        value = frechet_distance_of_features(real, feats) if feats.shape[0] >= 2 else float("nan")
        return [Measurement(f"fd_{p.extractor}", value, True, "distance", details)]
