"""Precision, recall, density and coverage of reconstructions against private images (Naeem et al., ICML 2020).

Two conventions (spec §6.4): `per_class` (PPA/MIBench, Trap-MID Table 11): for each attacked class, the
reconstructions of that class against its private training images with k = 3 and nearest-ball membership, averaged
over classes, skipping classes with at most k + 1 samples on either side, the density averaged over the reals under
`published` (their code's) and over the fakes under `standard` (Naeem's formula); `naeem` (the `prdc` package): one
global computation over all attacked classes, k = 5, any-ball membership.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import Field

from mibench.api.context import RunContext
from mibench.api.metric import MeasureInputs, Measurement, Metric
from mibench.metrics.frechet import FEATURE_EXTRACTORS, FeatureSpaceParams, extractor_details, feature_files
from mibench.metrics.functional import prdc_naeem, prdc_nearest
from mibench.metrics.published import ProtocolParams, feature_protocol_details
from mibench.registry import METRICS


class PRDCParams(FeatureSpaceParams, ProtocolParams):
    """Convention, neighbourhood size (default: 3 per class, 5 for Naeem's) and feature space."""

    variant: Literal["per_class", "naeem"] = "per_class"
    k: int | None = Field(None, ge=1)


@METRICS.register
class PRDC(Metric):
    """Improved precision/recall (Kynkäänniemi 2019) and density/coverage (Naeem 2020) of the reconstructions."""

    name: ClassVar[str] = "prdc"
    # 2: PPA's records say standard (its own feature path is not reproduced), so the paper is never set beside them
    # 3: the per_class density under `published` is averaged over the reals for every attack (Table 11's PLG-MI too)
    version: ClassVar[int] = 3
    paper: ClassVar[str] = "Naeem et al., Reliable Fidelity and Diversity Metrics for Generative Models, ICML 2020"
    Params = PRDCParams
    scope: ClassVar[str] = "attack"

    def external_files(self) -> dict[str, Path]:
        """The Inception weights it reads with `extractor: inception`, where they are now (they key its job)."""
        return feature_files(self.params)

    def compute(self, inputs: MeasureInputs, ctx: RunContext) -> list[Measurement]:
        """Four values; higher is better for the attacker, so lower is better for the defender."""
        p: PRDCParams = self.params
        real, fake = FEATURE_EXTRACTORS[p.extractor](inputs, p)
        _, _, real_labels = inputs.private_train_outputs()
        fake_labels = inputs.reconstructions.labels
        k = p.k or (3 if p.variant == "per_class" else 5)
        protocol, pipeline = inputs.pipeline_for(p.protocol)
        # The per-class code behind the published tables (PPA's, MIBench's) averages the density over the real images;
        # Trap-MID's Table 11 is only consistent with that (its coverage exceeds the per-fake bound in every row).
        # Naeem's formula averages over the fakes.
        density_over = "reals" if protocol == "published" and p.variant == "per_class" else "fakes"
        labels = feature_protocol_details(protocol, pipeline)
        details = {"variant": p.variant, "k": k, **extractor_details(p)[1], **labels}
        details["density_over"] = density_over
        if p.variant == "naeem":
            keep = torch.isin(real_labels, fake_labels.unique())
            values = prdc_naeem(real[keep], fake, k)
            details["n_real"], details["n_fake"] = int(keep.sum()), int(fake.shape[0])
        else:
            per_class = []
            for c in fake_labels.unique():
                r, f = real[real_labels == c], fake[fake_labels == c]
                if min(len(r), len(f)) > k + 1:
                    per_class.append(prdc_nearest(r, f, k, density_over))
            details["classes"] = len(per_class)
            if not per_class:
                values = dict.fromkeys(("precision", "recall", "density", "coverage"), float("nan"))
            else:
                values = {m: sum(v[m] for v in per_class) / len(per_class) for m in per_class[0]}
        return [Measurement(name, value, False, "fraction", details) for name, value in values.items()]
