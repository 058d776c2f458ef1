"""SSD parity: the official `Stealthy_Shield_Defense` and `GPU_based_water_filling` (`code.py`, run as released)
against mibench's `shield` and `water_fill`.

Inputs: probability vectors f of a batch and a D' of class-mean probability vectors, from seeded streams; the
official class draw `torch.multinomial(softmax(f / T), 1)` takes the global stream, seeded before the call, and
mibench's generator gets the same seed (the same draws). Two budgets: the official eps 0.5 and a large 4.0, under
which some rows are within reach of q_y and return it exactly.

    MIBENCH_OFFICIAL_STEALTHY_SHIELD_DEFENSE=DIR python -m parity.ssd
"""

from __future__ import annotations

import torch

from parity._harness import largest_difference, official_checkout, official_modules, seeded, write_golden

REPO, COMMIT = "ZhuangQu/Stealthy-Shield-Defense", "493f4ce"
CLASSES, DRAW_SEED = 7, 31
EPSILONS = (0.5, 4.0)


def inputs() -> dict[str, torch.Tensor]:
    g = seeded(30)
    f = (torch.randn(12, CLASSES, generator=g) * 2).softmax(1)
    means = (torch.randn(CLASSES, CLASSES, generator=g) + 3 * torch.eye(CLASSES)).softmax(1)
    return {"f": f, "means": means}


def ours(golden: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from mibench.defenses.ssd import SSDParams, shield

    out = {}
    for eps in EPSILONS:
        draws = torch.Generator().manual_seed(DRAW_SEED)
        out[f"output_eps{eps:g}"] = shield(golden["f"], golden["means"], SSDParams(epsilon=eps), draws)
    return out


def main() -> None:
    path = official_checkout(REPO, COMMIT)
    x = inputs()
    official = {}
    with official_modules(path, "code"):
        import importlib

        code = importlib.import_module("code")  # the repository's code.py (not the standard library's)
        assert hasattr(code, "Stealthy_Shield_Defense"), "the repository's code.py was not the one imported"
        for eps in EPSILONS:
            torch.manual_seed(DRAW_SEED)  # the official class draw is the global stream's
            official[f"output_eps{eps:g}"] = code.Stealthy_Shield_Defense(x["f"], x["means"], T=0.1, ε=eps)
    write_golden(
        "ssd",
        {**x, **official},
        outputs=sorted(official),
        method="ssd",
        repository=REPO,
        commit=COMMIT,
        files=["code.py"],
        functions=["Stealthy_Shield_Defense", "GPU_based_water_filling"],
        units="the post-processed probabilities of 12 queries over 7 classes: the class draw at T 0.1, the entropy "
        "budget, the water filling (clipping between w_A q and w_B q, or q itself within the budget), at eps 0.5 "
        "and 4.0",
        injected="f and D' from seeded streams; the class draw: the global stream after torch.manual_seed(31) on the "
        "official side, a generator seeded 31 on mibench's",
        not_covered="how D' is estimated (the mean output per class on a validation split: read, not run; the "
        "official repository ships only these functions), the wrapper around the released model",
        difference=largest_difference(ours({**x, **official}), official),
    )


if __name__ == "__main__":
    main()
