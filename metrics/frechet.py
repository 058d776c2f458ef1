"""Fréchet distance between reconstructions and private images, with a pluggable feature extractor."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Literal

import torch
from pydantic import field_validator

from mibench.context import RunContext
from mibench.errors import unknown_name_message
from mibench.metric import MeasureInputs, Measurement, Metric
from mibench.metrics.functional import frechet_distance_of_features, topk_correct
from mibench.params import Params
from mibench.registry import METRICS


def evaluator_features(inputs: MeasureInputs) -> tuple[torch.Tensor, torch.Tensor]:
    """(real, reconstruction) features from the evaluation model's penultimate layer."""
    real, _, _ = inputs.private_train_outputs()
    fake, _ = inputs.reconstruction_outputs()
    return real, fake


# name -> function giving (real features, reconstruction features, in reconstruction order). A value computed with
# an extractor other than Inception-v3's FID weights is recorded as "fd_<name>", never as "fid".
FEATURE_EXTRACTORS: dict[str, Callable[[MeasureInputs], tuple[torch.Tensor, torch.Tensor]]] = {
    "evaluator": evaluator_features,
}


class FeatureSpaceParams(Params):
    """The feature extractor of a distribution metric (a name in `FEATURE_EXTRACTORS`)."""

    extractor: str = "evaluator"

    @field_validator("extractor")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in FEATURE_EXTRACTORS:
            raise ValueError(unknown_name_message("feature extractor", v, FEATURE_EXTRACTORS))
        return v


class FrechetParams(FeatureSpaceParams):
    """Feature extractor and which reconstructions count.

    `fake_subset: successful` follows the PLG-MI/Trap-MID code (only reconstructions the evaluation model
    recognises); `all` follows MIBench/PPA.
    """

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
        """Fréchet distance in the chosen feature space (`None` when fewer than two images qualify)."""
        p: FrechetParams = self.params
        real, fake = FEATURE_EXTRACTORS[p.extractor](inputs)
        if p.fake_subset == "successful":
            _, logits = inputs.reconstruction_outputs()
            fake = fake[topk_correct(logits, inputs.reconstructions.labels, 1)]
        details = {
            "extractor": p.extractor,
            "fake_subset": p.fake_subset,
            "n_fake": int(fake.shape[0]),
            "n_real": int(real.shape[0]),
        }
        value = frechet_distance_of_features(real, fake) if fake.shape[0] >= 2 else float("nan")
        return [Measurement(f"fd_{p.extractor}", value, True, "distance", details)]
