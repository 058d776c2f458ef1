"""The one classifier training loop. Defenses change what a step computes, never the loop itself.

The default recipe is the KED-MI/Trap-MID one (spec §3): SGD, lr 0.01, momentum 0.9, weight decay 1e-4, batch 64,
random horizontal flip, cross-entropy, no LR schedule unless milestones are given, and the epoch with the best test
accuracy kept (test-set model selection, as the official code does; `selection: last` avoids it).

Data stays in memory as uint8 tensors and batches (with their flips) are made on the device, so an epoch does not
decode images; on CUDA the step can run under bf16 autocast (`amp: true`; float32 by default, as the official code) in
channels_last layout (`channels_last`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from mibench.api.context import RunContext
from mibench.api.recipe import TrainSpec
from mibench.data.base import ImageSet, identity_batches, iterate_batches, to_float
from mibench.models.base import ClassifierOutput
from mibench.training.augmentation import (
    AffineAugmentParams,
    random_affine_augment,
    random_color_jitter,
    random_erasing,
)

# A training step: (model, images in [0, 1], labels, epoch) -> named loss terms, of which "loss" is optimised.
StepFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, int], dict[str, torch.Tensor]]


def cross_entropy_step(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, epoch: int
) -> dict[str, torch.Tensor]:
    """The undefended step: mean cross-entropy of the logits (plus that of auxiliary logits, when present)."""
    out: ClassifierOutput = model(images)
    loss = F.cross_entropy(out.logits, labels)
    terms = {"ce": loss.detach()}
    if out.aux_logits is not None:
        aux = F.cross_entropy(out.aux_logits, labels)
        loss, terms["aux_ce"] = loss + aux, aux.detach()
    return {"loss": loss, **terms}


@dataclass
class TrainResult:
    """What training produced: the selected model and how it got there."""

    model: nn.Module
    test_accuracy: float
    best_epoch: int
    wall_time_s: float
    history: list[dict[str, float]] = field(default_factory=list)


# Devices on which `amp`/`channels_last` take effect. CPU bf16 autocast exists but is slower than float32 on most
# CPUs; tests add "cpu" here to run the mixed-precision code paths without a GPU.
MIXED_PRECISION_DEVICES = {"cuda"}


def mixed_precision(spec: TrainSpec, device: torch.device) -> tuple[torch.autocast, torch.memory_format]:
    """The autocast context (bf16 when `spec.amp`) and memory format (`spec.channels_last`) for training on `device`."""
    on = device.type in MIXED_PRECISION_DEVICES
    memory_format = torch.channels_last if on and spec.channels_last else torch.contiguous_format
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=on and spec.amp), memory_format


def precision_label(spec: TrainSpec, device: torch.device) -> str:
    """What the training arithmetic was, for provenance: "bf16-autocast" or "float32"."""
    return "bf16-autocast" if spec.amp and device.type in MIXED_PRECISION_DEVICES else "float32"


def make_optimizer(params: list[nn.Parameter], spec: TrainSpec) -> torch.optim.Optimizer:
    """SGD with momentum and weight decay, or Adam, as the spec says."""
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)


def make_scheduler(optimizer: torch.optim.Optimizer, spec: TrainSpec) -> torch.optim.lr_scheduler.LRScheduler | None:
    """MultiStepLR at `spec.milestones` with `spec.gamma` (stepped once per epoch), or None without milestones."""
    if not spec.milestones:
        return None
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, spec.milestones, spec.gamma)


def random_hflip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image left-right with probability 0.5 (independently per sample)."""
    flip = torch.rand(images.shape[0], generator=generator) < 0.5
    return flip_where(images, flip.to(images.device))


def flip_where(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Images flipped left-right where `flip` (one bool per image) is set."""
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)


def epoch_batches(
    labels: torch.Tensor, spec: TrainSpec, shuffle: torch.Generator, flips: torch.Generator, device: torch.device
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """One epoch's (index batch, flip mask or None) pairs on `device`, shuffled or identity-balanced (`spec.sampler`).

    Drawn on the CPU in the same order as a per-batch `random_hflip` would, then copied to the device once: a copy
    from pageable memory synchronises the CUDA stream, so one per step would stall the GPU every step.
    """
    if spec.sampler == "identity":
        batches = identity_batches(labels.cpu(), spec.batch_size, spec.images_per_identity, shuffle)
    else:
        batches = list(iterate_batches(len(labels), spec.batch_size, generator=shuffle, drop_last=spec.drop_last))
    sizes = [len(b) for b in batches]
    index = torch.cat(batches).to(device).split(sizes)
    if not spec.hflip:
        return [(idx, None) for idx in index]
    masks = torch.cat([torch.rand(k, generator=flips) < 0.5 for k in sizes]).to(device).split(sizes)
    return list(zip(index, masks, strict=True))


def augment_batch(images: torch.Tensor, spec: TrainSpec, generator: torch.Generator) -> torch.Tensor:
    """The optional training augmentations after the flip: random resized crop, then colour jitter (PPA's recipe).

    PPA's torchvision pipeline crops, jitters, then flips; the flip commutes with the (position-uniform) crop and
    with the colour jitter, so the order does not change the distribution.
    """
    if spec.crop_scale is not None:
        crop = AffineAugmentParams(
            crop_scale=spec.crop_scale, crop_ratio=spec.crop_ratio, crop_p=1.0, flip_p=0.0, rotation_p=0.0
        )
        images = random_affine_augment(images, crop, generator)
    if spec.color_jitter is not None:
        images = random_color_jitter(images, spec.color_jitter, generator)
    if spec.erasing is not None:  # after every other augmentation, as MIDRE's torchvision pipeline
        e = spec.erasing
        images = random_erasing(images, e.p, e.scale, e.ratio, e.fill, generator)
    return images


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, data: ImageSet, device: torch.device, batch_size: int = 256) -> float:
    """Top-1 accuracy on every image of `data` (no drop_last, no shuffling), in eval mode."""
    was_training = model.training
    model.eval()
    correct = 0
    for idx in iterate_batches(len(data), batch_size):
        logits = model(to_float(data.images[idx], device)).logits
        correct += (logits.argmax(1).cpu() == data.labels[idx]).sum().item()
    model.train(was_training)
    return correct / max(len(data), 1)


def train_classifier(
    model: nn.Module,
    train: ImageSet,
    test: ImageSet,
    spec: TrainSpec,
    ctx: RunContext,
    *,
    step: StepFn = cross_entropy_step,
    description: str = "train",
) -> TrainResult:
    """Train `model` on `train`, selecting an epoch by accuracy on `test` (see module docstring).

    Args:
        model: The network (already wrapped by a defense if it changes the architecture).
        train: Training images and labels.
        test: Test images and labels; all of them are evaluated every epoch.
        spec: Hyperparameters.
        ctx: Device, seed and progress.
        step: Computes the loss terms of one batch (see `StepFn`).
        description: Label of the progress bar.
    """
    device = ctx.device
    model.to(device)
    autocast, memory_format = mixed_precision(spec, device)
    model.to(memory_format=memory_format)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], spec)
    scheduler = make_scheduler(optimizer, spec)
    shuffle = ctx.generator("shuffle")
    flips = ctx.generator("hflip")
    augment = ctx.generator("augment")
    images, labels = train.images.to(device), train.labels.to(device)
    # Progress-bar estimate; the identity sampler's epochs are somewhat shorter.
    per_epoch = max(1, len(train) // spec.batch_size if spec.drop_last else -(-len(train) // spec.batch_size))

    best_acc, best_epoch, best_state = -1.0, 0, None
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    with ctx.reporter.bar(description, spec.epochs * per_epoch) as advance:
        for epoch in range(spec.epochs):
            model.train()
            totals: dict[str, torch.Tensor] = {}  # summed on the device: a float() per step would sync
            batches = epoch_batches(train.labels, spec, shuffle, flips, device)
            for idx, flip in batches:
                x = to_float(images[idx]).contiguous(memory_format=memory_format)
                if flip is not None:
                    x = flip_where(x, flip)
                x = augment_batch(x, spec, augment)
                with autocast:
                    terms = step(model, x, labels[idx], epoch)
                optimizer.zero_grad(set_to_none=True)
                terms["loss"].backward()
                optimizer.step()
                for k, v in terms.items():
                    totals[k] = totals.get(k, 0.0) + v.detach().float()
                advance(1)
            if scheduler is not None:
                scheduler.step()
            acc = evaluate_accuracy(model, test, device)
            history.append(
                {"epoch": epoch, "test_accuracy": acc, **{k: float(v) / len(batches) for k, v in totals.items()}}
            )
            if spec.selection == "last" or acc > best_acc:
                best_acc, best_epoch = acc, epoch
                if spec.selection == "best_test":
                    best_state = copy.deepcopy(model.state_dict())
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, best_acc, best_epoch, time.perf_counter() - start, history)


def distill(
    student: nn.Module,
    teacher: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    momentum: float,
    weight_decay: float,
    temperature: float,
    ctx: RunContext,
    description: str = "distillation",
) -> nn.Module:
    """Knowledge distillation of `teacher`'s logits into `student` on unlabelled images (LOMMA, spec §5.2).

    Loss: KL(softmax(t / tau) || softmax(s / tau)) summed over classes, averaged over the batch and divided by tau^2
    (as LOMMA's code; tau = 1 there, which makes the factor moot). SGD with momentum and weight decay at a constant
    rate: LOMMA's StepLR(20, 0.5) never fires within its 20 epochs.
    """
    device = ctx.device
    student.to(device).train()
    opt = torch.optim.SGD(student.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    shuffle = ctx.generator("distill-shuffle")
    steps = epochs * -(-len(images) // batch_size)
    with ctx.reporter.bar(description, steps) as advance:
        for _ in range(epochs):
            for idx in iterate_batches(len(images), batch_size, generator=shuffle):
                x = to_float(images[idx], device)
                with torch.no_grad():
                    target = F.softmax(teacher(x) / temperature, dim=1)
                log_student = F.log_softmax(student(x).logits / temperature, dim=1)
                loss = F.kl_div(log_student, target, reduction="batchmean") / temperature**2
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                advance(1)
    return student.eval()
