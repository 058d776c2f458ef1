"""Published-pipeline parity: `low2high`, the evaluator input of the GMI/KED-MI/LOMMA pipelines, as the PLG-MI
repository's baselines compute it (`plgmi/baselines/utils.py` in the Trap-MID repository), against mibench's.

The official function (ToPILImage, `.convert('RGB')`, torchvision `Resize((112, 112))`, `ToTensor`) and its
`get_deprocessor` are compiled alone from the export's source (the module imports cv2 and the repository's
networks), with `.cuda()` a no-op, on RGB images in [0, 1] including the exact ends.

    MIBENCH_OFFICIAL_TRAP_MID=DIR python -m parity.published
"""

from __future__ import annotations

import torch

from parity._harness import compiled, largest_difference, official_checkout, on_cpu, seeded, write_golden

REPO, COMMIT = "ntuaislab/Trap-MID", "3d59377"


def inputs() -> dict[str, torch.Tensor]:
    images = torch.rand(3, 3, 64, 64, generator=seeded(23))
    images[0, :, :4, :4], images[1, :, :4, :4] = 0.0, 1.0  # the ends of the range
    return {"images": images}


def ours(golden: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from mibench.metrics.published import low2high

    return {"low2high": low2high(golden["images"], 112)}


def main() -> None:
    path = official_checkout(REPO, COMMIT)
    x = inputs()
    from torchvision import transforms

    source = path / "plgmi" / "baselines" / "utils.py"  # its module imports cv2 and more: the two functions alone
    namespace = {"torch": torch, "transforms": transforms}
    compiled(source, "get_deprocessor", namespace)
    low2high = compiled(source, "low2high", namespace)
    with on_cpu():
        official = {"low2high": low2high(x["images"].clone())}
    write_golden(
        "published",
        {**x, **official},
        outputs=sorted(official),
        method="attack-accuracy",  # the metric whose published path feeds the evaluator this input
        repository=REPO,
        commit=COMMIT,
        files=["plgmi/baselines/utils.py (low2high, get_deprocessor)"],
        functions=["low2high"],
        units="the evaluator input of the GMI/KED-MI/LOMMA published pipelines (64 -> 112, 8-bit truncation)",
        injected="none (no randomness)",
        not_covered="PLG-MI's kornia resize and PNG round trip (kornia is not installed here), the FID and KNN "
        "feature paths, PPA's pipeline; grey images (the official converts them to RGB, mibench keeps one channel)",
        difference=largest_difference(ours(x), official),
    )


if __name__ == "__main__":
    main()
