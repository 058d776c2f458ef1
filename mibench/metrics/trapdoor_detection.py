"""Trapdoor recovery: how often reconstructions carry the target's trapdoor signature (Trap-MID, Fig. 3; spec §6.6).

Signatures S_c: the normalised mean target feature of private training images injected with trigger c (balanced
assignment). Score s(x) = cos(phi_T(x), S[argmax T(x)]). Threshold tau: the 95th percentile of the scores of the clean
training images (5% false positives on clean private data). Reported: the share of reconstructions above tau
(`trapdoor_recall`) and the ROC AUC of reconstructions against clean public images (`trapdoor_auc`). Targets without
triggers (no trapdoor defense) give no values.

`adversarial-detection` scores adversarial examples of the private test images with the same signatures and threshold
(Trap-MID's detection success rate, Fig. 3), with mibench's PGD adversary (`mibench.training.adversarial`).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from mibench.api.context import RunContext
from mibench.api.metric import MeasureInputs, Measurement, Metric
from mibench.data.base import to_float
from mibench.metrics.functional import roc_auc
from mibench.params import Params
from mibench.registry import METRICS
from mibench.training.adversarial import detection_success_rate, pgd_attack
from mibench.training.trapdoor import find_triggers, signature_scores, trapdoor_signatures


def signatures_and_threshold(
    inputs: MeasureInputs, ctx: RunContext, false_positive_rate: float
) -> tuple[torch.Tensor, float] | None:
    """The target's trapdoor signatures and the score threshold tau; None for a target without triggers.

    Both come from the private training images: tau lets `false_positive_rate` of their clean scores through.
    """
    triggers = find_triggers(inputs.target_extras)
    if triggers is None:
        return None
    device = inputs.device
    pattern, mask = (t.to(device) for t in triggers)
    train = to_float(inputs.data.private_train.images, device)
    signatures = trapdoor_signatures(inputs.target, train, pattern, mask, ctx.generator("signatures"))
    clean = signature_scores(inputs.target, train, signatures)
    return signatures, torch.quantile(clean.double(), 1 - false_positive_rate).item()


def no_trapdoors(*metrics: str) -> list[Measurement]:
    """Undefined values, with the reason, for a target whose defense plants no trapdoors (never silently nothing)."""
    reason = "the target has no trapdoor triggers (its defense plants none): nothing to detect with"
    return [Measurement(m, None, True, "fraction", {"reason": reason}) for m in metrics]


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
    version: ClassVar[int] = 2  # 2: undefined values with a reason on targets without trapdoors (was no record)

    def compute(self, inputs: MeasureInputs, ctx: RunContext) -> list[Measurement]:
        """Recall and AUC; for a target without triggers, undefined with the reason (a "–" the caption names)."""
        reference = signatures_and_threshold(inputs, ctx, self.params.false_positive_rate)
        if reference is None:
            return no_trapdoors("trapdoor_recall", "trapdoor_auc")
        signatures, tau = reference
        device = inputs.device
        recon = signature_scores(inputs.target, inputs.reconstructions.images.to(device), signatures)
        public = signature_scores(inputs.target, to_float(inputs.data.public.images, device), signatures)
        details = {"tau": tau, "n_reconstructions": int(recon.numel()), "n_public": int(public.numel())}
        values = [Measurement("trapdoor_recall", (recon > tau).double().mean().item(), True, "fraction", details)]
        if public.numel():
            values.append(Measurement("trapdoor_auc", roc_auc(public, recon), True, "fraction", details))
        return values


class AdversarialDetectionParams(Params):
    """Adversarial budgets and PGD settings (Trap-MID Fig. 3: L-inf 8/255 and L2 0.5 on the test images)."""

    false_positive_rate: float = Field(0.05, gt=0, lt=1)
    linf_eps: float = Field(8 / 255, gt=0)
    l2_eps: float = Field(0.5, gt=0)
    steps: int = Field(50, ge=1, description="PGD steps (mibench's adversary; the paper used AutoAttack)")
    max_images: int | None = Field(None, ge=1, description="cap on test images attacked (default: all)")


@METRICS.register
class AdversarialDetection(Metric):
    """Detection of adversarial examples by the trapdoor signatures (Trap-MID Fig. 3, panels 3-4; spec §6.6).

    Threshold as in `trapdoor-detection` (95th percentile of clean training scores); untargeted PGD examples of the
    private test images under each budget. Reported per budget: the detection success rate (accuracy on clean test
    images plus as many adversarial ones) and the ROC AUC, clean test against adversarial.
    """

    name: ClassVar[str] = "adversarial-detection"
    paper: ClassVar[str] = "Liu & Chen, Trap-MID: Trapdoor-based Defense against Model Inversion Attacks, NeurIPS 2024"
    Params = AdversarialDetectionParams
    scope: ClassVar[str] = "target"
    version: ClassVar[int] = 2  # 2: undefined values with a reason on targets without trapdoors (was no record)

    def compute(self, inputs: MeasureInputs, ctx: RunContext) -> list[Measurement]:
        """Per budget, success rate and AUC; for a target without triggers, undefined with the reason."""
        p: AdversarialDetectionParams = self.params
        reference = signatures_and_threshold(inputs, ctx, p.false_positive_rate)
        if reference is None:
            return no_trapdoors(*(f"adv_{m}_{norm}" for norm in ("linf", "l2") for m in ("dsr", "auc")))
        signatures, tau = reference
        device = inputs.device
        test = inputs.data.private_test
        n = len(test) if p.max_images is None else min(p.max_images, len(test))
        images, labels = to_float(test.images[:n], device), test.labels[:n].to(device)
        clean = signature_scores(inputs.target, images, signatures)
        values = []
        for norm, eps in (("linf", p.linf_eps), ("l2", p.l2_eps)):
            adv = torch.cat(
                [
                    pgd_attack(
                        inputs.target,
                        images[i : i + 256],
                        labels[i : i + 256],
                        norm=norm,
                        eps=eps,
                        steps=p.steps,
                        generator=ctx.generator("pgd", norm, i),
                    )
                    for i in range(0, n, 256)
                ]
            )
            scores = signature_scores(inputs.target, adv, signatures)
            with torch.no_grad():
                robust = (inputs.target(adv).logits.argmax(1) == labels).double().mean().item()
            details = {"attack": f"PGD-{p.steps} (random start)", "eps": eps, "tau": tau, "n": n}
            details["robust_accuracy"] = robust
            values.append(
                Measurement(f"adv_dsr_{norm}", detection_success_rate(clean, scores, tau), True, "fraction", details)
            )
            values.append(Measurement(f"adv_auc_{norm}", roc_auc(clean, scores), True, "fraction", details))
        return values
