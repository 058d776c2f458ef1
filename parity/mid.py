"""MID parity: the official `VGG16_vib` bottleneck and `train_vib`'s loss on one batch, with injected noise.

The official model is built with a small convolutional body in place of torchvision's VGG16-BN features (the glue
hands `VGG16_vib` a stand-in `vgg16_bn` whose `features` map 3x4x4 inputs to the 512x2x2 = 2,048 values VGG16's body
gives at 64x64, so its own 2,048 -> 2 x 1,024 statistics layer and head are used unchanged). Its weights and the
noise come from fixed seeds (`weights`, `noise` below), not from the golden: the statistics layer alone is 4 M
values. The noise `torch.FloatTensor(size).normal_()` draws from the global stream is reproduced by seeding it just
before the forward pass and drawing the same shape again.

    MIBENCH_OFFICIAL_MI_DEFENSE=DIR python -m parity.mid
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn

from mibench.defenses.mid import VIBClassifier, gaussian_kl
from parity._harness import (
    largest_difference,
    official_checkout,
    official_modules,
    on_cpu,
    replaced,
    seeded,
    write_golden,
)

REPO, COMMIT = "Jiachen-T-Wang/mi-defense", "23dc853"
CLASSES, BETA, NOISE_SEED = 5, 0.003, 7


def body() -> nn.Module:
    """The stand-in for VGG16-BN's convolutional body: 3 x 4 x 4 -> 512 x 2 x 2."""
    return nn.Sequential(nn.Conv2d(3, 512, 1), nn.ReLU(), nn.AvgPool2d(2))


def weights(module: nn.Module, seed: int = 3) -> None:
    """Every parameter from one seeded stream, in state-dict order, scaled by 1/sqrt(fan-in)."""
    g = seeded(seed)
    with torch.no_grad():
        for p in module.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else p.numel()
            p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)


class Backbone(nn.Module):
    """What mibench's bottleneck reads: the body's flattened output (as VGG16_vib's `feature.view(bs, -1)`)."""

    def __init__(self, features: nn.Module):
        super().__init__()
        self.features = features

    def bottleneck_input(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).flatten(1)


def inputs() -> dict[str, torch.Tensor]:
    g = seeded(4)
    return {"images": torch.rand(6, 3, 4, 4, generator=g), "labels": torch.arange(6) % CLASSES}


def step_outputs(mu, std, logits, loss, head_weight, statistics_weight) -> dict[str, torch.Tensor]:
    grads = torch.autograd.grad(loss, [head_weight, statistics_weight])
    return {
        "mu": mu.detach(),
        "std": std.detach(),
        "logits": logits.detach(),
        "loss": loss.detach(),
        "head_grad": grads[0],
        "statistics_grad_rows": grads[1][:8],
    }


class Layout(nn.Module):
    """VGG16_vib's parameters in its order and names (feature, st_layer, fc_layer), filled from the seeded stream."""

    def __init__(self):
        super().__init__()
        self.feature = body()
        self.st_layer = nn.Linear(2048, 2048)
        self.fc_layer = nn.Linear(1024, CLASSES)
        weights(self)


def ours(golden: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Mibench's bottleneck on the golden's batch and noise, with the seeded weights."""
    layout = Layout()
    net = VIBClassifier(Backbone(layout.feature), 2048, CLASSES, 1024, sample_at_test=True)
    net.statistics.load_state_dict(layout.st_layer.state_dict())
    net.head.load_state_dict(layout.fc_layer.state_dict())
    net.train()
    with replaced(torch, randn_like=lambda t, **kw: golden["noise"]):
        result = net(golden["images"])
    stats = net.statistics(result.features)
    mu, std = stats[:, :1024], F.softplus(stats[:, 1024:] - 5)
    loss = F.cross_entropy(result.logits, golden["labels"]) + BETA * gaussian_kl(mu, std)
    return step_outputs(mu, std, result.logits, loss, net.head.weight, net.statistics.weight)


def main() -> None:
    path = official_checkout(REPO, COMMIT)
    x = inputs()
    import torchvision

    def small_vgg16_bn(pretrained: bool = False, **kwargs) -> types.SimpleNamespace:
        return types.SimpleNamespace(features=body())

    stand_in = replaced(torchvision.models, vgg16_bn=small_vgg16_bn)
    folder = path / "gmi" / "target"
    with stand_in, official_modules(folder, "model", "evolve", "utils", "engine", "dataloader"), on_cpu():
        import model as official_model

        net = official_model.VGG16_vib(CLASSES)
    net.load_state_dict(Layout().state_dict())  # strict: the layout has VGG16_vib's names and shapes
    net.train()
    torch.manual_seed(NOISE_SEED)  # the official noise is the first draw of the global stream after this
    with on_cpu():
        _, mu, std, out = net(x["images"])
    # the official train_vib loss (cross-entropy criterion of train_vib.py, info_loss of engine.train_vib)
    info = -0.5 * (1 + 2 * std.log() - mu.pow(2) - std.pow(2)).sum(dim=1).mean()
    loss = nn.CrossEntropyLoss()(out, x["labels"]) + BETA * info
    official = step_outputs(mu, std, out, loss, net.fc_layer.weight, net.st_layer.weight)
    torch.manual_seed(NOISE_SEED)
    golden = {**x, "noise": torch.FloatTensor(std.shape).normal_()}
    write_golden(
        "mid",
        {**golden, **official},
        outputs=sorted(official),
        method="mid",
        repository=REPO,
        commit=COMMIT,
        files=["gmi/target/model.py", "gmi/target/engine.py", "gmi/target/train_vib.py"],
        functions=["VGG16_vib.__init__/forward", "train_vib's loss (cross-entropy + beta * info_loss)"],
        units="the bottleneck (mu, softplus(s - 5), z = mu + std * eps, head) and the loss on one batch; the "
        "gradient of the loss on the head and on 8 rows of the statistics layer",
        injected="weights from a seeded stream in VGG16_vib's parameter order (`Layout`); the noise: the first "
        "draw of the global stream after torch.manual_seed(7), as the official forward takes it, handed to "
        "mibench's torch.randn_like",
        not_covered="VGG16-BN's body itself (the architecture parity), the identity sampler, the optimiser step",
        difference=largest_difference(ours(golden), official),
    )


if __name__ == "__main__":
    main()
