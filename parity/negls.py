"""NegLS parity: the smoothed cross-entropy and its schedule, by the official PPA code and Trap-MID's port.

Runs `losses/label_smoothing.CrossEntropyLoss` (PPA) on fixed logits at four smoothing factors (value and gradient),
PPA's `ls_scheduler` (a closure inside `train_model.py`'s main: its source is compiled alone with the official
config's values) and Trap-MID's `NegLSCrossEntropyLoss.step` over the 100 epochs of the official recipe.

    MIBENCH_OFFICIAL_PLUG_AND_PLAY_ATTACKS=DIR MIBENCH_OFFICIAL_TRAP_MID=DIR python -m parity.negls
"""

from __future__ import annotations

import types
from pathlib import Path

import torch

from mibench.defenses.negls import label_smoothing_loss, smoothing_at
from parity._harness import compiled, largest_difference, official_checkout, official_modules, seeded, write_golden

PPA, PPA_COMMIT = "LukasStruppek/Plug-and-Play-Attacks", "3087a4f"
TRAP, TRAP_COMMIT = "ntuaislab/Trap-MID", "3d59377"
FACTORS = (-0.05, -0.025, 0.0, 0.1)
EPOCHS, FINAL = 100, -0.05


def ppa_schedule(train_model: Path) -> types.FunctionType:
    """PPA's `ls_scheduler` closure, compiled alone with the config values its body reads."""
    config = types.SimpleNamespace(label_smoothing=FINAL, training={"num_epochs": EPOCHS})
    return compiled(train_model, "ls_scheduler", {"config": config})


def ours(golden: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mibench's loss and gradient at the golden's factors, and its schedule over the official 100 epochs."""
    out: dict[str, torch.Tensor] = {}
    for i, eps in enumerate(golden["factors"].tolist()):
        x = golden["logits"].clone().requires_grad_(True)
        loss = label_smoothing_loss(x, golden["labels"], eps)
        loss.backward()
        out[f"loss_{i}"], out[f"grad_{i}"] = loss.detach(), x.grad
    ramp = torch.tensor([smoothing_at(e, EPOCHS, FINAL, "faithful") for e in range(EPOCHS)], dtype=torch.float64)
    out["ppa_schedule"] = out["trap_mid_schedule"] = ramp
    return out


def main() -> None:
    ppa = official_checkout(PPA, PPA_COMMIT)
    trap = official_checkout(TRAP, TRAP_COMMIT)
    logits = torch.randn(8, 5, generator=seeded(0)) * 3
    labels = torch.randint(0, 5, (8,), generator=seeded(1))
    official: dict[str, torch.Tensor] = {}
    with official_modules(ppa, "losses"):
        from losses.label_smoothing import CrossEntropyLoss

        for i, eps in enumerate(FACTORS):
            x = logits.clone().requires_grad_(True)
            loss = CrossEntropyLoss(label_smoothing=eps)(x, labels)
            loss.backward()
            official[f"loss_{i}"], official[f"grad_{i}"] = loss.detach(), x.grad
        schedule = ppa_schedule(ppa / "train_model.py")
        official["ppa_schedule"] = torch.tensor([schedule(e) for e in range(EPOCHS)], dtype=torch.float64)
    with official_modules(trap, "loss"):
        from loss import NegLSCrossEntropyLoss

        criterion = NegLSCrossEntropyLoss(init_ls=FINAL)
        steps = []
        for epoch in range(EPOCHS):
            criterion.step(epoch, EPOCHS)
            steps.append(criterion.label_smoothing)
        official["trap_mid_schedule"] = torch.tensor(steps, dtype=torch.float64)

    inputs = {"logits": logits, "labels": labels, "factors": torch.tensor(FACTORS)}
    write_golden(
        "negls",
        {**inputs, **official},
        outputs=sorted(official),
        method="negls",
        repository=PPA,
        commit=PPA_COMMIT,
        files=["losses/label_smoothing.py", "train_model.py", f"{TRAP} @ {TRAP_COMMIT}: loss.py"],
        functions=["CrossEntropyLoss.forward", "ls_scheduler (train_model.py)", "NegLSCrossEntropyLoss.step"],
        units="loss and gradient at 4 factors; the 100-epoch schedule (PPA's and Trap-MID's)",
        injected="none (no randomness)",
        not_covered="the breakpoints mibench scales for epoch counts other than 100 (FIDELITY.md)",
        difference=largest_difference(ours(inputs), official),
    )


if __name__ == "__main__":
    main()
