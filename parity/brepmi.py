"""BREP-MI parity: the official boundary-repulsion walk (`brep_mi.attack_single_target`) against mibench's.

A small linear generator and target stand in for GMI's GAN and the target classifier (the walk only sees labels);
the official walk runs to its termination with `max_iters_at_radius_before_terminate` 4 and the official sphere
settings otherwise (32 points, radius 2, expansion 1.3, clamp 1.5, repulsion only). The walk's only random draws,
the sphere directions (`torch.randn` on the global stream), are the same normals on both sides: the official stream
seeded with 21, mibench's sphere generator seeded with 21. The official function returns only an accuracy; the
trajectory is read from the latents the generator stand-in receives: per iteration the 32 sphere points, the saved
point before an expansion, then the candidate move (accepted when the target keeps its class).

    MIBENCH_OFFICIAL_LABEL_ONLY_MODEL_INVERSION_ATTACKS_VIA_BOUNDARY_REPULSION=DIR python -m parity.brepmi
"""

from __future__ import annotations

import tempfile

import torch
from torch import nn

from parity._harness import largest_difference, official_checkout, official_modules, on_cpu, seeded, write_golden

REPO = "m-kahla/Label-Only-Model-Inversion-Attacks-via-Boundary-Repulsion"
COMMIT = "8a2e200"
Z_DIM, CLASSES, SEED, PATIENCE, BIAS = 6, 3, 21, 4, 9.0
SETTINGS = {"sphere_points_count": 32, "current_sphere_radius": 2.0, "sphere_expansion_coeff": 1.3,
            "point_clamp_min": -1.5, "point_clamp_max": 1.5, "max_iters_at_radius_before_terminate": PATIENCE,
            "repulsion_only": True}  # fmt: skip


class Recorder(nn.Module):
    """The generator stand-in: a fixed linear map to 3x4x4 'images', recording every latent batch it renders."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.weight, self.calls = weight, []

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.calls.append(z.detach().clone())
        return torch.tanh(z @ self.weight).view(len(z), 3, 4, 4)


class Target(nn.Module):
    """A linear classifier over the 'images'; `official` returns (feature, logits) as the official models do."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, official: bool):
        super().__init__()
        self.weight, self.bias, self.official = weight, bias, official

    def forward(self, x: torch.Tensor):
        logits = x.flatten(1) @ self.weight + self.bias
        return (x.flatten(1), logits) if self.official else logits


def inputs() -> dict[str, torch.Tensor]:
    g = seeded(9)
    weights = {"generator": torch.randn(Z_DIM, 48, generator=g), "target": torch.randn(48, CLASSES, generator=g)}
    start = torch.randn(Z_DIM, generator=g).clamp(-1.5, 1.5)
    label = (torch.tanh(start @ weights["generator"]) @ weights["target"]).argmax()
    bias = torch.zeros(CLASSES)
    bias[label] = BIAS  # a wide class region: the sphere expands a few times before points leave it
    return {**weights, "bias": bias, "start": start, "target_class": label}


def trajectory(calls: list[torch.Tensor], target: nn.Module, wanted: int) -> dict[str, torch.Tensor]:
    """Final point, last accepted expansion point and sphere rounds, read from the generator's recorded calls."""
    final, last_expansion, rounds, i, expansions = None, None, 0, 0, 0
    while i < len(calls):
        assert len(calls[i]) == SETTINGS["sphere_points_count"], "an iteration starts with its sphere points"
        rounds += 1
        singles = []
        i += 1
        while i < len(calls) and len(calls[i]) == 1:
            singles.append(calls[i][0])
            i += 1
        expanded, candidate = len(singles) == 2, singles[-1]
        image = torch.tanh(candidate @ GENERATOR).view(1, 3, 4, 4)
        expansions += expanded
        if int(target(image)[-1].argmax()) == wanted:
            final = candidate
            if expanded:
                last_expansion = candidate
    print(f"official walk: {rounds} sphere rounds, {expansions} expansions")
    return {"final": final, "last_expansion": last_expansion, "sphere_rounds": torch.tensor(rounds)}


GENERATOR = inputs()["generator"]


def ours(golden: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """mibench's walk from the same start, its sphere draws from the official stream's seed."""
    from mibench.api.context import RunContext
    from mibench.attacks.brepmi import BREPMIParams, boundary_repulsion

    generator, target = Recorder(golden["generator"]), Target(golden["target"], golden["bias"], official=False)

    def labels_of(z: torch.Tensor) -> torch.Tensor:
        return target(generator(z)).argmax(1)

    class Context(RunContext):
        def generator(self, *parts, device="cpu"):  # the official stream: torch.manual_seed(SEED)
            return torch.Generator().manual_seed(SEED)

    params = BREPMIParams(sphere_points=32, initial_radius=2.0, expansion=1.3, clamp=1.5, patience=PATIENCE,
                          max_iterations=100_000)  # fmt: skip
    wanted = golden["target_class"].view(1)
    walk = boundary_repulsion(labels_of, golden["start"][None].clone(), wanted, params, Context())
    rounds = int(walk["queries"][0]) // (params.sphere_points + 1)
    return {"final": walk["final"][0], "last_expansion": walk["last_expansion"][0],
            "sphere_rounds": torch.tensor(rounds)}  # fmt: skip


def main() -> None:
    path = official_checkout(REPO, COMMIT)
    x = inputs()
    generator, target = Recorder(x["generator"]), Target(x["target"], x["bias"], official=True)
    wanted = int(x["target_class"])
    with official_modules(path, "brep_mi", "brep_mi_utils", "utils", "classify", "facenet", "evolve"), on_cpu():
        import brep_mi

        brep_mi.save_tensor_images = lambda *a, **k: None  # the official walk saves PNGs of its progress
        brep_mi.decision_Evaluator = lambda imgs, model, **k: torch.tensor([-1])  # the evaluator verdict only
        torch.manual_seed(SEED)
        with tempfile.TemporaryDirectory() as folder:
            brep_mi.attack_single_target(x["start"].clone(), wanted, None, generator, target, None, dict(SETTINGS),
                                         nn.CrossEntropyLoss(), folder)  # fmt: skip
    official = trajectory(generator.calls, target, wanted)
    write_golden(
        "brepmi",
        {**x, **official},
        outputs=sorted(official),
        method="brepmi",
        repository=REPO,
        commit=COMMIT,
        files=["brep_mi.py (gen_points_on_sphere, attack_single_target)", "brep_mi_utils.py (is_target_class)"],
        functions=["attack_single_target: the whole walk of one class to its termination"],
        units="the walk of one class: its final point, its last accepted expansion point, its number of sphere "
        "rounds (termination)",
        injected="the sphere directions: the official global stream and mibench's sphere generator both seeded 21 "
        "(one class walks, so both draw 32 x z_dim normals per round in the same order); generator and target are "
        "linear stand-ins; the evaluator verdict (accuracy only) and the progress PNGs are switched off",
        not_covered="the initial-point search, the GMI generator itself, several classes walking at once (mibench "
        "batches them; each has its own stream), the evaluator's low2high input",
        difference=largest_difference(ours(x), official),
    )


if __name__ == "__main__":
    main()
