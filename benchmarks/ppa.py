"""PPA at paper scale: W-space optimisation steps/s on a StyleGAN2 generator and a 224x224 target, and the projected
cost of suites/table19-ppa.yaml.

Runs mibench's own PPA (`attacks/ppa.py`: render, crop, Poincaré loss, Adam on w) on a randomly initialised StyleGAN2
of the released FFHQ shape (throughput does not depend on the weights) against a randomly initialised ResNet-152.
A step is one Adam update of `batch` latents; the per-step time is the difference of two inversions with different
iteration counts, so candidate search and selection cancel out.

    python benchmarks/ppa.py --preset paper --device cuda   # StyleGAN2 1024, ResNet-152 at 224, batch 25
    python benchmarks/ppa.py --preset cpu                   # StyleGAN2 64, ResNet-18 at 64, batch 4

Results go to benchmarks/results/ppa-<preset>-<device>.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mibench.api.context import RunContext
from mibench.api.oracle import Access, TargetOracle
from mibench.attacks.ppa import PPA, PPAParams, StyleGANParams
from mibench.gan.stylegan2 import StyleGAN2Config, StyleGAN2Generator
from mibench.gan.stylegan2_files import save_stylegan2
from mibench.models.base import build_classifier, freeze
from mibench.running.execution import configure_device

PRESETS = {
    "paper": {"resolution": 1024, "target": "resnet152", "size": 224, "batch": 25, "steps": (3, 8)},
    "cpu": {"resolution": 64, "target": "resnet18", "size": 64, "batch": 4, "steps": (1, 3)},
}
# Table 19 protocol (spec §9): 1,000 CelebA identities x 200 candidates x 70 steps, per defended target.
TABLE19 = {"classes": 1000, "candidates": 200, "iterations": 70, "targets": 3}


def invert_seconds(attack: PPA, oracle: TargetOracle, batch: int, device: torch.device) -> float:
    """Wall time of one PPA inversion of `batch` classes with one candidate each."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    attack.invert(None, oracle, torch.arange(batch), RunContext(device=device, seed=0))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    configure_device(device)
    p = PRESETS[args.preset]
    torch.manual_seed(0)
    weights = Path(__file__).parent / "results" / f"stylegan2-{p['resolution']}-random.pt"
    weights.parent.mkdir(parents=True, exist_ok=True)
    config = StyleGAN2Config(resolution=p["resolution"])
    save_stylegan2(StyleGAN2Generator(config), weights)
    target = freeze(build_classifier(p["target"], {}, num_classes=1000, in_channels=3, image_size=p["size"]))
    oracle = TargetOracle(target.to(device), Access.WHITE_BOX, num_classes=1000, image_shape=(3, p["size"], p["size"]))
    rates = {}
    seconds = []
    for steps in p["steps"]:
        params = PPAParams(
            gan=StyleGANParams(generator="stylegan2", checkpoint=str(weights)),
            pool=p["batch"],
            candidates=1,
            select=1,
            iterations=steps,
            selection_transforms=1,
            batch_size=p["batch"],
        )
        attack = PPA(params)
        if not seconds:
            invert_seconds(attack, oracle, p["batch"], device)  # warm-up (cuDNN autotuning, allocator)
        seconds.append(invert_seconds(attack, oracle, p["batch"], device))
    per_step = (seconds[1] - seconds[0]) / (p["steps"][1] - p["steps"][0])
    rates["steps_per_s"] = 1 / per_step
    rates["latents_per_s"] = p["batch"] / per_step
    work = TABLE19["classes"] * TABLE19["candidates"] * TABLE19["iterations"]  # latent-steps per target
    rates["table19_hours_per_target"] = work / rates["latents_per_s"] / 3600
    rates["table19_hours"] = TABLE19["targets"] * rates["table19_hours_per_target"]
    if device.type == "cuda":
        rates["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    result = {"preset": args.preset, **p, "device": str(device), "torch": torch.__version__, **rates}
    out = args.out or Path(__file__).parent / "results" / f"ppa-{args.preset}-{device.type}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    weights.unlink()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
