"""The Metric interface: reconstructions and references in, numbers out.

Metrics are thin registered wrappers around pure functions in `mibench.metrics.functional`. Each value is a
`Measurement` carrying its direction. **Direction is from the defender's point of view**, the benchmark's subject:
utility and distances up is better, attack accuracy down is better; informational values have `None`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from mibench.api.attack import Reconstructions
from mibench.api.context import RunContext
from mibench.checkpoints import planned_sha256, require_planned
from mibench.data.base import DataBundle, iterate_batches, resize_images, to_float
from mibench.hashing import hash_file
from mibench.params import Params


@dataclass(frozen=True)
class Measurement:
    """One measured value.

    Attributes:
        metric: Key of the value ("acc", "aa1", "knn_dist", ...); tables pick columns by it.
        value: The number, in `unit`.
        higher_is_better: Direction for the defender; None for informational values.
        unit: "fraction" (shown as %), "distance", "seconds", "count" or "score".
        details: Provenance of the number (feature extractor, sample counts, ...).
    """

    metric: str
    value: float
    higher_is_better: bool | None
    unit: str = "score"
    details: dict[str, Any] = field(default_factory=dict)


class MeasureInputs:
    """Everything a metric may read, with memoised evaluator passes shared between metrics of one job.

    Args:
        target: The deployed target, frozen.
        evaluator: The evaluation model, frozen.
        evaluator_accuracy: Its test accuracy (reported in captions).
        data: The private/public data at the target's resolution.
        eval_data: The same data at the evaluator's resolution.
        classes: The attacked classes.
        reconstructions: The attack's output (None for target-scope metrics).
        device: Where to compute.
        target_extras: Defense state saved with the target (e.g. Trap-MID's triggers), for defense-aware metrics.
        evaluation_images: What the evaluator sees in place of the resized reconstructions, when the attack renders
            its own at the evaluator's resolution (PPA's fresh renders); same order as the reconstructions.
        protocol: The suite's evaluation protocol, "standard" or "published" (metrics may override it).
        pipeline: The attack's published pipeline (`Attack.published_pipeline`), None when it has none.
    """

    def __init__(
        self,
        *,
        target: nn.Module,
        evaluator: nn.Module,
        evaluator_accuracy: float,
        data: DataBundle,
        eval_data: DataBundle,
        classes: torch.Tensor,
        reconstructions: Reconstructions | None,
        device: torch.device,
        batch_size: int = 256,
        target_extras: dict[str, torch.Tensor] | None = None,
        evaluation_images: torch.Tensor | None = None,
        protocol: str = "standard",
        pipeline: str | None = None,
    ):
        self.target = target
        self.evaluator = evaluator
        self.evaluator_accuracy = evaluator_accuracy
        self.data = data
        self.eval_data = eval_data
        self.classes = classes
        self.reconstructions = reconstructions
        self.device = device
        self.batch_size = batch_size
        self.target_extras = target_extras or {}
        self.evaluation_images = evaluation_images
        self.protocol = protocol
        self.pipeline = pipeline
        self._memo: dict[str, Any] = {}

    def verified_file(self, path: Path) -> str:
        """The SHA-256 of a weights file a metric is about to read, checked against what the plan keyed the job on.

        The planned hashes are `checkpoints.planned_files`, which the runner sets around every job. A file replaced
        after planning is an error, never measured under the old file's hash. Returns the digest
        (metrics memoise networks by path and digest, so a long-lived worker never serves a replaced file's network).
        """
        digest = hash_file(path)
        require_planned(path, digest, planned_sha256(path), "weights file")
        return digest

    def memo(self, key: str, compute: Callable[[], Any]) -> Any:
        """Compute once per job and share between metrics."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]

    @property
    def eval_size(self) -> int | tuple[int, int]:
        """The evaluator's input resolution (a side, or height and width)."""
        return self.eval_data.image_size

    def pipeline_for(self, override: str | None) -> tuple[str, str | None]:
        """(protocol, published pipeline or None) for a metric whose own `protocol` parameter is `override`.

        Under `published` an attack without a published pipeline is measured as `standard` (pipeline None).
        """
        protocol = override or self.protocol
        if protocol == "published" and self.pipeline is not None and self.reconstructions is not None:
            return protocol, self.pipeline
        return protocol, None

    @torch.no_grad()
    def evaluator_pass(
        self, images: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Evaluator (features, logits) of float images, resized to the evaluator's input (or through `transform`)."""
        feats, logits = [], []
        for idx in iterate_batches(images.shape[0], self.batch_size):
            batch = images[idx]
            x = resize_images(batch.to(self.device), self.eval_size) if transform is None else transform(batch)
            x = x.to(self.device)
            out = self.evaluator(x)
            feats.append(out.features.float().cpu())
            logits.append(out.logits.float().cpu())
        if not feats:  # no images (e.g. no successful reconstruction): empty outputs
            return torch.empty(0, 0), torch.empty(0, 0)
        return torch.cat(feats), torch.cat(logits)

    def reconstruction_outputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Evaluator features and logits of the reconstructions (memoised)."""
        assert self.reconstructions is not None, "attack-scope metric called without reconstructions"
        images = self.reconstructions.images if self.evaluation_images is None else self.evaluation_images
        return self.memo("recon", lambda: self.evaluator_pass(images))

    def private_train_outputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Evaluator features, logits and labels of the private training images of the attacked classes.

        The images are read at the evaluator's native resolution (as the official KNN code loads them at 112).
        """

        def compute() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            subset = self.eval_data.private_train.of_classes(self.classes)
            feats, logits = self.evaluator_pass(to_float(subset.images))
            return feats, logits, subset.labels

        return self.memo("private", compute)


class Metric(ABC):
    """Base class of registered metrics. `scope` says whether it needs reconstructions ("attack") or not ("target")."""

    name: ClassVar[str]
    paper: ClassVar[str]
    version: ClassVar[int] = 1
    Params: ClassVar[type[Params]]
    scope: ClassVar[Literal["target", "attack"]]

    def __init__(self, params: Params):
        self.params = params

    def external_files(self) -> dict[str, Path]:
        """Files from outside the cache the metric reads (released weights), by params key, where they exist now.

        They enter the measurement job's key by content (SHA-256) and are checked when read (`verified_file`).
        """
        return {}

    @abstractmethod
    def compute(self, inputs: MeasureInputs, ctx: RunContext) -> list[Measurement]:
        """Measure; returns one or more values."""
