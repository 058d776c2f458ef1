"""The workloads `benchmarks/stages.py` times: the paper's shapes on random images, each stage of mibench's own code
(a target epoch per defense, the bare-loop equivalent, a prior's training, an attack's search) built untimed and
returned as a callable, and the timing helpers (CUDA-synchronised, interleaved rounds, median and spread).

Module-level builders (`prior_run`) so that the co-run probe's separate processes can build their own.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.projection import PAPER
from mibench.api.attack import DataInfo
from mibench.api.context import RunContext
from mibench.api.oracle import Access, TargetOracle
from mibench.api.recipe import TrainSpec
from mibench.data.base import DataBundle, ImageSet
from mibench.models.base import build_classifier, freeze
from mibench.registry import ATTACKS, DEFENSES, load_plugins
from mibench.running.execution import configure_device
from mibench.training.classifier import epoch_batches
from mibench.training.stack import DefenseStack

CPU = torch.device("cpu")


@dataclass(frozen=True)
class Preset:
    """How big a benchmark run is."""

    classes: int  # private identities of the target
    attacked: int  # classes attacked in the latent-search benchmarks
    train_steps: int  # target-training steps timed per defense
    gan_steps: int
    search_iterations: int
    public_images: int
    per_class_probe: int  # classes timed one by one for the batched-vs-per-class comparison
    repeats: int = 3  # interleaved timed runs per target-training candidate (the median is reported)


PRESETS = {
    "paper": Preset(1000, 300, 60, 60, 20, 30000, 3),
    "cpu": Preset(50, 10, 4, 4, 2, 1600, 2),
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(device: torch.device, fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """(fn(*args), seconds) with CUDA synchronised on both sides."""
    sync(device)
    start = time.perf_counter()
    out = fn(*args)
    sync(device)
    return out, time.perf_counter() - start


def random_images(n: int, size: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=gen, dtype=torch.uint8)


def make_data(preset: Preset, train_images: int) -> DataBundle:
    labels = torch.arange(train_images) % preset.classes
    test = 2 * preset.classes
    return DataBundle(
        ImageSet(random_images(train_images, 64, 0), labels),
        ImageSet(random_images(test, 64, 1), torch.arange(test) % preset.classes),
        ImageSet(random_images(preset.public_images, 64, 2), torch.full((preset.public_images,), -1)),
        preset.classes,
        "random-64",
    )


def vgg16(classes: int) -> torch.nn.Module:
    return build_classifier("vgg16", {}, num_classes=classes, in_channels=3, image_size=64)



def interleaved_seconds(
    candidates: dict[str, Callable[[], Callable[[], Any]]], repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds of `repeats` timed runs of each candidate, after one warm-up run of each.

    A candidate is a factory: it prepares a run untimed (builds a fresh network, as a job does once) and returns the
    callable that is timed. Rounds interleave the candidates (a, b, c, a, b, c, ...), so that a slow phase of the
    machine (another process, clock or thermal changes) spreads over all of them instead of biasing whichever ran then.
    """
    for prepare in candidates.values():
        timed(device, prepare())  # warm-up: CUDA context, kernels, allocator, caches, each on its own
    seconds: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, prepare in candidates.items():
            seconds[name].append(timed(device, prepare())[1])
    return seconds


def rate_summary(units: float, seconds: list[float]) -> dict[str, float]:
    """Units per second at the median run, and at the slowest and fastest."""
    ordered = sorted(seconds)
    return {
        "per_s": units / statistics.median(ordered),
        "per_s_min": units / ordered[-1],
        "per_s_max": units / ordered[0],
        "runs": len(ordered),
    }



def bare_loop_epoch(preset: Preset, device: torch.device, test: ImageSet) -> Callable[[], None]:
    """One epoch of a plain PyTorch loop on a fresh VGG16, same data and settings (AMP, channels_last on CUDA), and
    the per-epoch test-set evaluation the recipe (and the official code) does: the harness's work, without it."""
    model = vgg16(preset.classes).to(device)
    cuda = device.type == "cuda"
    fmt = torch.channels_last if cuda else torch.contiguous_format
    model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    images = random_images(preset.train_steps * 64, 64, 0).to(device)
    labels = (torch.arange(len(images)) % preset.classes).to(device)
    test_images, test_labels = test.images.to(device), test.labels.to(device)

    def epoch() -> None:
        model.train()
        perm = torch.randperm(len(images), device=device)
        for i in range(preset.train_steps):
            idx = perm[i * 64 : (i + 1) * 64]
            x = (images[idx].float() / 255).contiguous(memory_format=fmt)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                loss = F.cross_entropy(model(x).logits, labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            for i in range(0, len(test_images), 256):
                x = (test_images[i : i + 256].float() / 255).contiguous(memory_format=fmt)
                (model(x).logits.argmax(1) == test_labels[i : i + 256]).sum().item()

    return epoch


def target_candidates(
    preset: Preset, device: torch.device, defenses: list[str]
) -> tuple[dict[str, Callable[[], Callable[[], Any]]], dict[str, dict[str, Any]]]:
    """Per defense (and the bare loop): a factory of one untimed-prepared epoch, and the epoch's facts."""
    data = make_data(preset, preset.train_steps * 64)
    ctx = RunContext(device=device, seed=0)
    candidates: dict[str, Callable[[], Any]] = {}
    facts: dict[str, dict[str, Any]] = {}
    for name in defenses:
        defense = DEFENSES.get(name)
        stack = DefenseStack([defense(defense.Params())])
        setup = stack.setup(TrainSpec())
        batch = setup.spec.batch_size
        steps = preset.train_steps * 64 // batch
        one_epoch = type(setup)(**{**setup.__dict__, "spec": setup.spec.model_copy(update={"epochs": 1})})
        sub = DataBundle(
            data.private_train.subset(torch.arange(steps * batch)), data.private_test, data.public, preset.classes, ""
        )

        def prepare(stack=stack, sub=sub, one_epoch=one_epoch) -> Callable[[], Any]:
            model = stack.wrap(vgg16(preset.classes))  # a fresh network per run, built untimed
            return lambda: stack.fitter.fit(model, sub, one_epoch, ctx)

        candidates[name] = prepare
        # the images an epoch really trains on: the identity-balanced sampler (MID, BiDO) drops some
        batches = epoch_batches(sub.private_train.labels, setup.spec, torch.Generator(), torch.Generator(), CPU)
        images = sum(len(idx) for idx, _ in batches)
        facts[name] = {"images": images, "batch_size": batch, "paper_epochs": setup.spec.epochs}
    candidates["bare_loop"] = lambda: bare_loop_epoch(preset, device, data.private_test)
    facts["bare_loop"] = {"images": preset.train_steps * 64}
    return candidates, facts



def white_box(model: torch.nn.Module, classes: int) -> TargetOracle:
    return TargetOracle(freeze(model), Access.WHITE_BOX, num_classes=classes, image_shape=(3, 64, 64))


PRIOR_CASES = {
    # prior: (attack, params override given the step count, unit)
    "gmi-wgan-gp": ("gmi", lambda n: {"gan": {"max_steps": n}}, "critic steps"),
    "kedmi-gan": ("kedmi", lambda n: {"gan": {"max_steps": n}}, "discriminator steps"),
    "plgmi-cgan": ("plgmi", lambda n: {"cgan": {"iterations": n}}, "generator iterations (x5 D steps)"),
}


def probe_units(preset: Preset, label: str) -> int:
    """What one prior probe does, in its unit: `gan_steps` steps, or LOMMA's public images distilled."""
    return min(preset.public_images, preset.gan_steps * 64) if label == "lomma-students" else preset.gan_steps


def prior_run(preset: Preset, device_name: str, label: str) -> Callable[[], Any]:
    """One `gan_steps` probe of a prior's training (`PRIOR_CASES`, or "lomma-students": one distillation epoch of
    `gan_steps` x 64 public images), built here; module-level so that co-run processes can build their own."""
    device = torch.device(device_name)
    load_plugins()
    configure_device(device)
    data = make_data(preset, 64)
    info = DataInfo(3, 64, preset.classes)
    oracle = white_box(vgg16(preset.classes).to(device), preset.classes)
    ctx = RunContext(device=device, seed=0)
    if label == "lomma-students":
        lomma = ATTACKS.get("lomma-gmi")
        attack = lomma(lomma.Params.model_validate({"lomma": {"distill": {"epochs": 1}}}))
        public = data.public.subset(torch.arange(probe_units(preset, label)))
    else:
        name, override, _ = PRIOR_CASES[label]
        cls = ATTACKS.get(name)
        attack, public = cls(cls.Params.model_validate(override(preset.gan_steps))), data.public
    prior = attack.build_prior(info, label)
    return lambda: attack.train_prior(prior, public, oracle, ctx, label)


def paper_prior_units(label: str) -> int:
    """What the paper protocol asks of a prior, in the unit its probe is counted in."""
    if label == "lomma-students":
        return ATTACKS.get("lomma-gmi").Params().lomma.distill.epochs * PAPER["public_images"]
    full = ATTACKS.get(PRIOR_CASES[label][0]).Params()
    if label == "plgmi-cgan":
        return full.cgan.iterations
    return full.gan.epochs * (PAPER["public_images"] // full.gan.batch_size)



def _attack_priors(attack, info: DataInfo, data: DataBundle, oracle: TargetOracle, device: torch.device) -> Any:
    """Untrained priors (throughput does not depend on weights), except LOMMA's feature mean, which must exist."""
    priors = {}
    for spec in attack.priors():
        prior = attack.build_prior(info, spec.name)
        if spec.name == "lomma-students":
            tiny = attack.params.model_dump()
            tiny["lomma"]["distill"]["epochs"] = 1
            type(attack)(type(attack.params).model_validate(tiny)).train_prior(
                prior, data.public.subset(torch.arange(64)), oracle, RunContext(device=device), spec.name
            )
        priors[spec.name] = prior
    return priors if len(priors) > 1 else next(iter(priors.values()))


def search_run(preset: Preset, device: torch.device, name: str) -> Callable[..., Any]:
    """`search_iterations` of an attack's latent search over the first n (default `attacked`) classes."""
    data = make_data(preset, 64)
    info = DataInfo(3, 64, preset.classes)
    cls = ATTACKS.get(name)
    attack = cls(cls.Params.model_validate({"iterations": preset.search_iterations}))
    oracle = white_box(vgg16(preset.classes).to(device), preset.classes)
    prior = _attack_priors(attack, info, data, oracle, device)
    ctx = RunContext(device=device, seed=0)
    return lambda n=preset.attacked: attack.invert(prior, oracle, torch.arange(n), ctx)

