"""What the evaluator sees of an attack's reconstructions: as a published pipeline feeds them, and which succeed.

Shared by the attack-accuracy, KNN and Fréchet metrics; the passes themselves are memoised in `MeasureInputs`.
"""

from __future__ import annotations

import torch

from mibench.api.metric import MeasureInputs
from mibench.metrics.functional import topk_correct
from mibench.metrics.published import evaluator_input, knn_input


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
