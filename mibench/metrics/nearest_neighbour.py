"""Nearest-neighbour analysis of reconstructions: public or private distribution? (Trap-MID Table 3; spec §6.7).

For each reconstruction, the nearest neighbour (squared L2, evaluation-model features) among the public images and
the private training images together; reported: the share whose neighbour is private. The spec marks the exact
protocol as unconfirmed; the feature space is recorded with the value.
"""

from __future__ import annotations

from typing import ClassVar

from mibench.api.context import RunContext
from mibench.api.metric import MeasureInputs, Measurement, Metric
from mibench.data.base import to_float
from mibench.metrics.functional import nearest_set_share
from mibench.params import NoParams
from mibench.registry import METRICS


@METRICS.register
class NearestNeighbourOrigin(Metric):
    """Share of reconstructions whose nearest neighbour is a private (not a public) image."""

    name: ClassVar[str] = "nn-private-share"
    paper: ClassVar[str] = "Liu & Chen, Trap-MID, NeurIPS 2024 (Table 3 analysis)"
    Params = NoParams
    scope: ClassVar[str] = "attack"

    def compute(self, inputs: MeasureInputs, ctx: RunContext) -> list[Measurement]:
        """One value in [0, 1]; lower is better for the defender."""
        fake, _ = inputs.reconstruction_outputs()
        private = inputs.memo(
            "private_all", lambda: inputs.evaluator_pass(to_float(inputs.eval_data.private_train.images))[0]
        )
        public = inputs.memo("public", lambda: inputs.evaluator_pass(to_float(inputs.eval_data.public.images))[0])
        if public.shape[0] == 0:
            return []
        share = nearest_set_share(fake, private, public).double().mean().item()
        details = {"feature_space": "evaluator", "n_private": int(private.shape[0]), "n_public": int(public.shape[0])}
        return [Measurement("nn_private_share", share, False, "fraction", details)]
