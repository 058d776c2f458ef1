"""Trapdoor recovery: how often reconstructions carry the target's trapdoor signature (Trap-MID, Fig. 3; spec §6.6).

Signatures S_c: the normalised mean target feature of private training images injected with trigger c (balanced
assignment). Score s(x) = cos(phi_T(x), S[argmax T(x)]). Threshold tau: the 95th percentile of the scores of the clean
training images (5% false positives on clean private data). Reported: the share of reconstructions above tau
(`trapdoor_recall`) and the ROC AUC of reconstructions against clean public images (`trapdoor_auc`). Targets without
triggers (no trapdoor defense) give no values.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from mibench.context import RunContext
from mibench.data.base import to_float
from mibench.metric import MeasureInputs, Measurement, Metric
from mibench.metrics.functional import roc_auc
from mibench.params import Params
from mibench.registry import METRICS
from mibench.trapdoor import find_triggers, signature_scores, trapdoor_signatures


class TrapdoorDetectionParams(Params):
    """The clean false-positive rate that fixes the threshold."""

    false_positive_rate: float = Field(0.05, gt=0, lt=1)


@METRICS.register
class TrapdoorDetection(Metric):
    """Share of reconstructions flagged by the trapdoor signatures, and their ROC AUC against public images."""

    name: ClassVar[str] = "trapdoor-detection"
    paper: ClassVar[str] = "Liu & Chen, Trap-MID: Trapdoor-based Defense against Model Inversion Attacks, NeurIPS 2024"
    Params = TrapdoorDetectionParams
    scope: ClassVar[str] = "attack"

    def compute(self, inputs: MeasureInputs, ctx: RunContext) -> list[Measurement]:
        """Nothing for a target without triggers."""
        triggers = find_triggers(inputs.target_extras)
        if triggers is None:
            return []
        device = inputs.device
        pattern, mask = (t.to(device) for t in triggers)
        train = to_float(inputs.data.private_train.images, device)
        signatures = trapdoor_signatures(inputs.target, train, pattern, mask, ctx.generator("signatures"))
        clean = signature_scores(inputs.target, train, signatures)
        tau = torch.quantile(clean.double(), 1 - self.params.false_positive_rate).item()
        recon = signature_scores(inputs.target, inputs.reconstructions.images.to(device), signatures)
        public = signature_scores(inputs.target, to_float(inputs.data.public.images, device), signatures)
        details = {"tau": tau, "n_reconstructions": int(recon.numel()), "n_public": int(public.numel())}
        values = [Measurement("trapdoor_recall", (recon > tau).double().mean().item(), True, "fraction", details)]
        if public.numel():
            values.append(Measurement("trapdoor_auc", roc_auc(public, recon), True, "fraction", details))
        return values
