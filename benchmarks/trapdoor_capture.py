"""Why a trapdoor does or does not capture an attack: what each GAN prior draws, and what the target rewards.

Reads a finished run's artifacts (nothing is trained) and prints, per target of the suite:

- the target's mean probability of the true class on its private training images, and (trapdoor defenses) of the
  trapdoor class on public images carrying that class's trigger: the two routes a search can take to a confident
  target;
- per attack with a GAN prior (a module with `.generator` and its `z_dim`): the share of 1,000 samples of that GAN
  the evaluation model reads as a private class (for a conditional GAN, also as the class it was asked for), and of
  the attack's reconstructions read as the attacked class (AA-1) or as no private class at all.

The "read as" columns need an evaluation model that knows the public classes too, as the official MNIST one does
(Trap-MID `config/mnist/eval.json`: all ten digits; `evaluator.dataset_params` in a suite); with one that knows only
the private classes every sample is read as one of them.

    python benchmarks/trapdoor_capture.py suites/mini-mnist-attacks.yaml [--cache results/cache] [--out capture.json]
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: mibench from this checkout
from mibench.api.attack import Reconstructions
from mibench.api.progress import SILENT
from mibench.data.base import DataBundle, to_float
from mibench.metrics.frechet import batched_features
from mibench.registry import ATTACKS, load_plugins
from mibench.running.plan import Job, build_plan
from mibench.running.stages import Workspace, instantiate, load_evaluator, load_priors, load_target
from mibench.running.store import ArtifactStore
from mibench.suite import load_suite
from mibench.training.trapdoor import find_triggers, inject

SAMPLES = 1000


def logits_of(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The model's logits on `images`, in batches of 500."""
    return batched_features(images, lambda x: model(x).logits, 500, width=0)


def class_probability(model: torch.nn.Module, images: torch.Tensor, classes: torch.Tensor) -> float:
    """Mean softmax probability the model gives each image's class."""
    return logits_of(model, images).softmax(1).gather(1, classes[:, None]).mean().item()


def target_routes(model: torch.nn.Module, data: DataBundle, extras: dict[str, torch.Tensor]) -> dict[str, float]:
    """p(true class) on private training images; p(trapdoor class) on public images with that class's trigger."""
    private = data.private_train
    row = {"p_true_class_private": class_probability(model, to_float(private.images, "cpu"), private.labels)}
    triggers = find_triggers(extras)
    if triggers is not None:
        pattern, mask = triggers
        public = to_float(data.public.images[:SAMPLES], "cpu")
        classes = torch.arange(len(public)) % pattern.shape[0]
        row["p_trapdoor_class_public_triggered"] = class_probability(
            model, inject(public, classes, pattern, mask), classes
        )
    return row


@torch.no_grad()
def attack_reading(
    ws: Workspace, invert: Job, data: DataBundle, evaluator: torch.nn.Module, private_classes: int
) -> dict[str, Any] | None:
    """What the attack's GAN draws and its reconstructions show, read by the evaluation model; None without a GAN."""
    attack = instantiate(ATTACKS, invert.payload["attack"])
    prior = load_priors(ws, attack, invert.payload["priors"], data)
    if not hasattr(prior, "generator") or not hasattr(prior.generator, "z_dim"):
        return None
    generator = prior.generator.eval()
    z = torch.randn(SAMPLES, generator.z_dim, generator=torch.Generator().manual_seed(0))
    conditioned = torch.arange(SAMPLES) % private_classes
    conditional = "y" in inspect.signature(generator.forward).parameters  # PLG-MI's cGAN: one sample per class
    # clamped into [0, 1] as the attacks clamp reconstructions (PLG-MI's tanh generator is trained to emit [0, 1])
    drawn = logits_of(evaluator, (generator(z, conditioned) if conditional else generator(z)).clamp(0, 1)).argmax(1)
    recon = Reconstructions.from_state(ws.store.load_tensors("invert", invert.key, "reconstructions.pt"))
    shown = logits_of(evaluator, recon.images).argmax(1)
    return {
        "gan_samples_read_as_private": (drawn < private_classes).float().mean().item(),
        "gan_samples_per_class": torch.bincount(drawn, minlength=int(drawn.max()) + 1).tolist(),
        **({"gan_samples_read_as_their_class": (drawn == conditioned).float().mean().item()} if conditional else {}),
        "reconstructions_read_as_attacked_class": (shown == recon.labels).float().mean().item(),
        "reconstructions_read_as_no_private_class": (shown >= private_classes).float().mean().item(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite", type=Path)
    parser.add_argument("--cache", type=Path, default=Path("results/cache"))
    parser.add_argument("--out", type=Path, help="JSON of every figure")
    args = parser.parse_args(argv)
    load_plugins()
    plan = build_plan(load_suite(args.suite))
    store = ArtifactStore(args.cache)
    ws = Workspace(store, torch.device("cpu"), SILENT)
    jobs = list(plan.jobs.values())
    done = [j for j in jobs if store.is_done(j.stage, j.key)]
    evaluator_job = next(j for j in done if j.stage == "evaluator")
    evaluator, _ = load_evaluator(ws, evaluator_job.key, evaluator_job.runtime)
    report: dict[str, Any] = {}
    for target in (j for j in done if j.stage == "target"):
        model, data = load_target(ws, target.key, target.runtime)
        row: dict[str, Any] = target_routes(model, data, store.load_tensors("target", target.key, "extras.pt"))
        for invert in (j for j in done if j.stage == "invert" and target.id in j.deps):
            reading = attack_reading(ws, invert, data, evaluator, data.num_classes)
            if reading is not None:
                row[invert.label.split(" on ")[0].removeprefix("invert ")] = reading
        report[target.label.removeprefix("target ")] = row
        print(json.dumps({target.label: row}), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
