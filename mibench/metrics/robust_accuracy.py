"""Robust accuracy: the target's test accuracy under an L-inf PGD attack, beside its clean accuracy.

AT-AT (Torp, Smith, Breuer, ICLR 2026) finds that MI attacks track adversarial robustness: a target whose predictions
rest on non-robust features resists inversion. Its evaluation (`evaluate_classifier.py`, `config_evaluate.yaml`)
runs AutoAttack's `standard` version at eps 0.031 on [0, 1] images; AutoAttack is not on PyPI, so mibench attacks with
untargeted PGD (a random start, signed steps, `mibench.training.adversarial.pgd_attack`) at the same budget, the
weaker adversary: robust accuracies are upper bounds on AutoAttack's, and the records say which attack made them.
A deployed wrapper that blocks gradients (an output purifier) shows its clean accuracy: the record's details say so.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from mibench.api.context import RunContext
from mibench.api.metric import MeasureInputs, Measurement, Metric
from mibench.data.base import iterate_batches, to_float
from mibench.params import Params
from mibench.registry import METRICS
from mibench.training.adversarial import pgd_attack


class RobustAccuracyParams(Params):
    """The attack budget: AT-AT's eps 0.031 (L-inf, [0, 1] images), PGD steps, and how many test images."""

    eps: float = Field(0.031, gt=0, description="L-inf radius in [0, 1] pixels (AT-AT's AutoAttack eps)")
    steps: int = Field(20, ge=1)
    step_size: float | None = Field(None, gt=0, description="default 2.5 eps / steps")
    max_images: int | None = Field(None, ge=1, description="the first N test images (default: all)")
    batch_size: int = Field(128, ge=1)


@METRICS.register
class RobustAccuracy(Metric):
    """Top-1 accuracy of the deployed target on PGD examples of the private test images."""

    name: ClassVar[str] = "robust-accuracy"
    paper: ClassVar[str] = "Madry et al., Towards Deep Learning Models Resistant to Adversarial Attacks, ICLR 2018"
    Params = RobustAccuracyParams
    scope: ClassVar[str] = "target"

    def compute(self, inputs: MeasureInputs, ctx: RunContext) -> list[Measurement]:
        """Accuracy of `inputs.target` on untargeted PGD examples of `inputs.data.private_test`."""
        p: RobustAccuracyParams = self.params
        test = inputs.data.private_test
        count = len(test) if p.max_images is None else min(p.max_images, len(test))
        model, device = inputs.target, inputs.device
        generator = ctx.generator("robust-accuracy")
        correct, blocked = 0, None
        for idx in iterate_batches(count, p.batch_size):
            x, y = to_float(test.images[idx], device), test.labels[idx].to(device)
            with torch.enable_grad():
                if blocked is None:  # once: a deployed wrapper that detaches its output gives no input gradient
                    blocked = not model(x.clone().requires_grad_(True)).logits.requires_grad
                adversarial = x if blocked else pgd_attack(
                    model, x, y, norm="linf", eps=p.eps, steps=p.steps, step_size=p.step_size, generator=generator
                )  # fmt: skip
            with torch.no_grad():
                correct += int((model(adversarial).logits.argmax(1) == y).sum())
        details = {
            "attack": f"PGD-{p.steps} L-inf eps {p.eps:g}, random start (AT-AT reports AutoAttack standard)",
            "n": count,
        }
        if blocked:
            details["note"] = "the deployed model gives no input gradients: robust accuracy equals clean accuracy"
        return [Measurement("robust_acc", correct / max(count, 1), None, "fraction", details)]
