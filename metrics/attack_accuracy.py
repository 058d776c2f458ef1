"""Attack accuracy AA-1 / AA-5: how often the evaluation model recognises the intended identity."""

from __future__ import annotations

from typing import ClassVar

import torch

from mibench.context import RunContext
from mibench.metric import MeasureInputs, Measurement, Metric
from mibench.params import NoParams
from mibench.registry import METRICS


@METRICS.register
class AttackAccuracy(Metric):
    """AA-1 and AA-5 over all (class, restart) reconstructions (GMI, Zhang et al. CVPR 2020, Sec. 4.1; spec §6.1).

    A reconstruction succeeds when the evaluation model's top-1 (top-5) prediction is its intended class and the
    attack did not declare it failed (BREP-MI without an accepted expansion, `Reconstructions.failed`). The value is
    the plain success fraction over all reconstructions, as the PLG-MI/GMI/KED-MI code computes it. The standard
    deviation of the per-restart accuracy is kept in `details` as a within-run diagnostic (the paper appendices' ±).
    """

    name: ClassVar[str] = "attack-accuracy"
    paper: ClassVar[str] = "Zhang et al., The Secret Revealer (GMI), CVPR 2020"
    Params = NoParams
    scope: ClassVar[str] = "attack"

    def compute(self, inputs: MeasureInputs, ctx: RunContext) -> list[Measurement]:
        """AA-1 and AA-5 from the evaluator's logits on the reconstructions."""
        recon = inputs.reconstructions
        out = []
        for k in (1, 5):
            correct = inputs.successful(k).double()
            per_restart = torch.stack([correct[recon.restarts == r].mean() for r in recon.restarts.unique()])
            details = {
                "n": int(correct.numel()),
                "restart_std": float(per_restart.std()) if per_restart.numel() > 1 else 0.0,
                "evaluator_accuracy": inputs.evaluator_accuracy,
            }
            out.append(Measurement(f"aa{k}", correct.mean().item(), False, "fraction", details))
        return out
