"""Model utility: the target's test accuracy on the private test split."""

from __future__ import annotations

from typing import ClassVar

from mibench.api.context import RunContext
from mibench.api.metric import MeasureInputs, Measurement, Metric
from mibench.params import NoParams
from mibench.registry import METRICS
from mibench.training.classifier import evaluate_accuracy


@METRICS.register
class TargetAccuracy(Metric):
    """Top-1 accuracy of the deployed target on every private test image (the tables' "Acc").

    The official code measures 3,008 of 3,009 CelebA test images (shuffle + drop_last) at the best epoch; mibench
    evaluates all of them deterministically.
    """

    name: ClassVar[str] = "test-accuracy"
    paper: ClassVar[str] = "model utility (all MI defense papers)"
    Params = NoParams
    scope: ClassVar[str] = "target"

    def compute(self, inputs: MeasureInputs, ctx: RunContext) -> list[Measurement]:
        """Accuracy of `inputs.target` on `inputs.data.private_test`."""
        acc = evaluate_accuracy(inputs.target, inputs.data.private_test, inputs.device)
        return [Measurement("acc", acc, True, "fraction", {"n": len(inputs.data.private_test)})]
