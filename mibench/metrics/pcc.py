"""Pearson correlation (PCC) between reconstructions and the private images they reveal: MIDAS's attack metric.

Xu, Arafin, Qu (IEEE TETC 2022) score inversions by PCC in pixel space (katekemu/model_inversion_defense @ 1f32327):
the shallow notebook (cell 30) averages, for each attacked class, the PCC of the reconstruction with every image of
that identity (all of its images, train and test); the deep notebook (cell 21) correlates each reconstruction with
the victim image whose prediction vector it was decoded from. mibench does the second whenever the reconstructions
name their victims (the inversion network), else the first. Higher PCC is a better attack, so the defender's
direction is down. Reconstructions and real images are compared at the target's resolution, in [0, 1].

`pixel-mse` is Yang et al.'s reconstruction error for attacks that name their victims: the mean squared pixel error
of each reconstruction against its own victim image (`train_inversion.py` `test`, per pixel).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field

from mibench.api.context import RunContext
from mibench.api.metric import MeasureInputs, Measurement, Metric
from mibench.data.base import select_private, to_float
from mibench.metrics.functional import class_mean_pearson, pearson_correlation
from mibench.params import NoParams, Params
from mibench.registry import METRICS


class PCCParams(Params):
    """Which real images a class-level reconstruction is compared with."""

    images: Literal["all", "train"] = Field("all", description="all: the identity's train and test images (MIDAS)")


@METRICS.register
class PearsonCorrelation(Metric):
    """Mean pixel-space Pearson correlation of reconstructions with their private images (MIDAS's PCC)."""

    name: ClassVar[str] = "pcc"
    paper: ClassVar[str] = "Xu, Arafin, Qu, An Approximate Memory based Defense against MI Attacks, IEEE TETC 2022"
    Params = PCCParams
    scope: ClassVar[str] = "attack"

    def compute(self, inputs: MeasureInputs, ctx: RunContext) -> list[Measurement]:
        """PCC per reconstruction, averaged (NaN ones, from constant images, are left out and counted)."""
        recon = inputs.reconstructions
        data = inputs.data
        if recon.victims is not None:
            values = pearson_correlation(recon.images, victim_images(inputs))
            pairing = "own victim image"
        else:
            sets = [data.private_train] + ([data.private_test] if self.params.images == "all" else [])
            real = torch.cat([to_float(s.images) for s in sets])
            labels = torch.cat([s.labels for s in sets])
            values = class_mean_pearson(recon.images, recon.labels, real, labels)
            pairing = f"mean over the class's private {self.params.images} images"
        defined = values[~values.isnan()]
        value = defined.mean().item() if len(defined) else float("nan")
        details = {"pairing": pairing, "n": len(values), "undefined": int(values.isnan().sum())}
        return [Measurement("pcc", value, False, "score", details)]


def victim_images(inputs: MeasureInputs) -> torch.Tensor:
    """The private images the reconstructions name as their victims (training set first, then test set), in [0, 1]."""
    data = inputs.data
    return to_float(select_private(data.private_train, data.private_test, inputs.reconstructions.victims).images)


@METRICS.register
class PixelMSE(Metric):
    """Mean squared pixel error of each reconstruction against its own victim image (Yang et al. 2019)."""

    name: ClassVar[str] = "pixel-mse"
    paper: ClassVar[str] = (
        "Yang et al., Neural Network Inversion in Adversarial Setting via Background Knowledge Alignment, CCS 2019"
    )
    Params = NoParams
    scope: ClassVar[str] = "attack"

    def compute(self, inputs: MeasureInputs, ctx: RunContext) -> list[Measurement]:
        """MSE per pixel, averaged over reconstructions; nothing when the attack names no victims."""
        recon = inputs.reconstructions
        if recon.victims is None:
            return []
        error = (recon.images.double() - victim_images(inputs).double()).pow(2).flatten(1).mean(1)
        return [Measurement("recon_mse", error.mean().item(), True, "score", {"n": len(error), "per": "pixel"})]
