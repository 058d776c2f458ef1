"""Attack accuracy AA-1 / AA-5: how often the evaluation model recognises the intended identity."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from mibench.api.context import RunContext
from mibench.api.metric import MeasureInputs, Measurement, Metric
from mibench.metrics.evaluator_views import successful
from mibench.metrics.published import ProtocolParams, protocol_details
from mibench.registry import METRICS


class AttackAccuracyParams(ProtocolParams):
    """How the within-run spread groups classes (the official attack batches of 60 identities), and the protocol."""

    group_size: int = Field(60, ge=1, description="classes per attack batch for restart_std")


def batched_restart_std(correct: torch.Tensor, labels: torch.Tensor, restarts: torch.Tensor, group_size: int) -> float:
    """sqrt(mean over class batches of the sample variance over restarts of the batch accuracy); 0 for one restart."""
    classes = labels.unique(sorted=True)
    variances = []
    for start in range(0, len(classes), group_size):
        in_group = torch.isin(labels, classes[start : start + group_size])
        per_restart = torch.stack(
            [correct[in_group & (restarts == r)].mean() for r in restarts[in_group].unique(sorted=True)]
        )
        if per_restart.numel() > 1:
            variances.append(per_restart.var(correction=1))
    return float(torch.stack(variances).mean().sqrt()) if variances else 0.0


@METRICS.register
class AttackAccuracy(Metric):
    """AA-1 and AA-5 over all (class, restart) reconstructions (GMI, Zhang et al. CVPR 2020, Sec. 4.1; spec §6.1).

    A reconstruction succeeds when the evaluation model's top-1 (top-5) prediction is its intended class and the
    attack did not declare it failed (BREP-MI without an accepted expansion, `Reconstructions.failed`). The value is
    the plain success fraction over all reconstructions, as the PLG-MI/GMI/KED-MI code computes it.

    `details.restart_std` is the within-run spread the papers' appendices report as ±, computed as the official
    code does (`plgmi/baselines/recovery.py`): the attacked classes in consecutive batches of `group_size` (60), in
    each batch the sample variance over restarts of the batch's accuracy, the mean of those variances over batches,
    and its square root.
    """

    name: ClassVar[str] = "attack-accuracy"
    paper: ClassVar[str] = "Zhang et al., The Secret Revealer (GMI), CVPR 2020"
    Params = AttackAccuracyParams
    scope: ClassVar[str] = "attack"

    def compute(self, inputs: MeasureInputs, ctx: RunContext) -> list[Measurement]:
        """AA-1 and AA-5 from the evaluator's logits on the reconstructions."""
        recon = inputs.reconstructions
        protocol, pipeline = inputs.pipeline_for(self.params.protocol)
        out = []
        for k in (1, 5):
            correct = successful(inputs, k, pipeline).double()
            details = {
                **protocol_details(protocol, pipeline),
                "n": int(correct.numel()),
                "restart_std": batched_restart_std(correct, recon.labels, recon.restarts, self.params.group_size),
                "restart_std_group_size": self.params.group_size,
                "evaluator_accuracy": inputs.evaluator_accuracy,
            }
            out.append(Measurement(f"aa{k}", correct.mean().item(), False, "fraction", details))
        return out
