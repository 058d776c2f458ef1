"""What the evaluator sees of an attack's reconstructions: as a published pipeline feeds them, and which succeed.

Shared by the attack-accuracy, KNN and Fréchet metrics; the passes themselves are memoised in `MeasureInputs`.
"""

from __future__ import annotations

import torch

from mibench.api.metric import MeasureInputs
from mibench.data.base import to_float
from mibench.metrics.functional import topk_correct
from mibench.metrics.published import KORNIA_REFERENCE_PIPELINES, evaluator_input, knn_input, kornia_resize


def published_outputs(inputs: MeasureInputs, purpose: str, pipeline: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Evaluator features and logits of the reconstructions as a published pipeline feeds them (memoised).

    `purpose` "evaluator": the input behind AA (PLG-MI: kornia resize of the unclamped output; GMI/KED-MI/LOMMA:
    `low2high`); "knn": the input behind the KNN distance (PLG-MI family: the min-max 8-bit PNG round trip of the
    unclamped output where the attack keeps it, then kornia resize). PPA's evaluator input is its fresh render in
    every protocol.
    """
    assert inputs.reconstructions is not None, "attack-scope metric called without reconstructions"
    if pipeline == "ppa" or (inputs.evaluation_images is not None and purpose == "evaluator"):
        return inputs.reconstruction_outputs()
    images = inputs.reconstructions.images
    if pipeline == "plgmi" and inputs.reconstructions.unclamped is not None:
        # PLG-MI feeds the raw generator output to the evaluator and stretches the raw output into the KNN PNGs
        images = inputs.reconstructions.unclamped
    pick = evaluator_input if purpose == "evaluator" else knn_input
    size = inputs.eval_size
    return inputs.memo(
        f"published/{purpose}/{pipeline}", lambda: inputs.evaluator_pass(images, lambda x: pick(x, pipeline, size))
    )


def knn_reference_outputs(inputs: MeasureInputs, pipeline: str | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Evaluator features and labels of the private images KNN compares against, and a line saying which.

    The PLG-MI repository's `evaluation.get_private_feats` (which writes the `private_feats.npy` its KNN and its
    baselines' read) passes the private loader's images through kornia's `Resize(112)`: under those pipelines the
    reference is the private set at the target's resolution, kornia-resized to the evaluator's input. Elsewhere it
    is the private set read at the evaluator's own resolution.
    """
    if pipeline not in KORNIA_REFERENCE_PIPELINES:
        features, _, labels = inputs.private_train_outputs()
        return features, labels, "private images at the evaluator's resolution"

    def compute() -> tuple[torch.Tensor, torch.Tensor]:
        subset = inputs.data.private_train.of_classes(inputs.classes)
        size = inputs.eval_size
        features, _ = inputs.evaluator_pass(to_float(subset.images), lambda x: kornia_resize(x, size))
        return features, subset.labels

    features, labels = inputs.memo("private/kornia", compute)
    return features, labels, "private images at the target's resolution, kornia-resized (get_private_feats)"


def successful(inputs: MeasureInputs, k: int = 1, pipeline: str | None = None) -> torch.Tensor:
    """Per reconstruction: the evaluator's top-k contains its class and the attack did not declare it failed.

    With a published `pipeline`, the evaluator sees the reconstructions as that pipeline feeds them.
    """
    if pipeline is None:
        _, logits = inputs.reconstruction_outputs()
    else:
        _, logits = published_outputs(inputs, "evaluator", pipeline)
    hit = topk_correct(logits, inputs.reconstructions.labels, k)
    if inputs.reconstructions.failed is not None:
        hit = hit & ~inputs.reconstructions.failed.to(hit.device)
    return hit
