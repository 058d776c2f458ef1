"""Conditional purifier parity: the toolbox's `_ConditionMLP1d` and `ConditionPurifierTrainer.calc_loss` against
mibench's `ConditionalMLP` and `purification_loss`.

Both are compiled from the toolbox's source at the commit (`models/classifiers/wrappers.py`,
`train/classifier/base.py`), alone: the toolbox's package imports much that the units never call. The MLP is built
as `ConditionPurifierWrapper` builds it for a target whose feature width equals its class count (the only case the
toolbox runs: its output layer is sized by the feature width), with weights from one seeded stream in its order.
The trainer's `loss_fn` ('cross_entropy', the toolbox's ClassificationLoss) is given as torch's cross-entropy. The
adversarial purifier has no runnable official unit (FIDELITY.md: the toolbox's version does not run).

    MIBENCH_OFFICIAL_MODEL_INVERSION_ATTACK_TOOLBOX=DIR python -m parity.purifiers
"""

from __future__ import annotations

import types
from pathlib import Path

import torch
from torch import nn

from parity._harness import compiled, largest_difference, official_checkout, seeded, write_golden

REPO, COMMIT = "ffhibnese/Model-Inversion-Attack-ToolBox", "d9ad48f"
CLASSES, EMBEDDING, COEF = 6, 16, 0.1


def seeded_parameters(module: nn.Module) -> None:
    g = seeded(17)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def inputs() -> dict[str, torch.Tensor]:
    return {"logits": torch.randn(10, CLASSES, generator=seeded(18)) * 2}


def official_mlp(path: Path) -> nn.Module:
    cls = compiled(path / "src/modelinversion/models/classifiers/wrappers.py", "_ConditionMLP1d",
                   {"nn": nn, "torch": torch})  # fmt: skip
    # ConditionPurifierWrapper's arguments, with feature_dim = num_classes
    mlp = cls(in_features=CLASSES, cond_features_num=CLASSES, cond_features_dim=EMBEDDING,
              hidden_features=EMBEDDING // 2, out_features=CLASSES, act_layer=nn.ReLU)  # fmt: skip
    seeded_parameters(mlp)
    return mlp


def ours(golden: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from mibench.defenses.purifiers import ConditionalMLP, purification_loss

    mlp = ConditionalMLP(CLASSES, EMBEDDING)
    names = {"embedding.weight": "cond_embedding.weight"}  # the toolbox's order: fc1, fc2, cond_embedding
    official_order = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "cond_embedding.weight"]
    g, state = seeded(17), {}
    shapes = {names.get(k, k): v.shape for k, v in mlp.state_dict().items()}
    for name in official_order:
        state[name] = torch.randn(shapes[name], generator=g) * 0.3
    mlp.load_state_dict({k: state[names.get(k, k)] for k in mlp.state_dict()})
    z = golden["logits"].clone().requires_grad_(True)
    purified = mlp(z)
    loss = purification_loss(purified, z.detach(), COEF)
    (grad,) = torch.autograd.grad(loss, z)
    return {"purified": purified.detach(), "loss": loss.detach(), "grad": grad}


def main() -> None:
    path = official_checkout(REPO, COMMIT)
    x = inputs()
    mlp = official_mlp(path)
    assert [n for n, _ in mlp.named_parameters()] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias",
                                                      "cond_embedding.weight"]  # fmt: skip
    names = {"nn": nn, "torch": torch, "LongTensor": torch.LongTensor, "InceptionOutputs": tuple}
    trainer_source = path / "src/modelinversion/train/classifier/base.py"
    calc_loss = compiled(trainer_source, "ConditionPurifierTrainer.calc_loss", names)
    z = x["logits"].clone().requires_grad_(True)
    purified = mlp(z, torch.argmax(z, dim=-1))  # ConditionPurifierWrapper._forward_impl
    trainer = types.SimpleNamespace(loss_fn=nn.CrossEntropyLoss(), config=types.SimpleNamespace(cls_loss_coef=COEF))
    loss = calc_loss(trainer, None, (purified, {"ori_logits": z.detach()}), None)
    (grad,) = torch.autograd.grad(loss, z)
    official = {"purified": purified.detach(), "loss": loss.detach(), "grad": grad}
    write_golden(
        "purifiers",
        {**x, **official},
        outputs=sorted(official),
        method="conditional-purifier",
        repository=REPO,
        commit=COMMIT,
        files=["src/modelinversion/models/classifiers/wrappers.py", "src/modelinversion/train/classifier/base.py"],
        functions=["_ConditionMLP1d (as ConditionPurifierWrapper builds it)", "ConditionPurifierTrainer.calc_loss"],
        units="the purified logits, the training loss (CE to the predicted class + 0.1 MSE) and its gradient",
        injected="weights from one seeded stream in the toolbox's parameter order; the trainer's loss_fn as "
        "torch's cross-entropy",
        not_covered="the training recipe (the toolbox gives none), the adversarial purifier (its official version "
        "does not run), the wrapper's gradient blocking",
        difference=largest_difference(ours(x), official),
    )


if __name__ == "__main__":
    main()
