"""Profile a few steps of an attack's prior training (torch.profiler), to find where a stage spends its time.

    python benchmarks/profile_prior.py --attack plgmi --steps 5 [--device cuda]

Prints the top operators by device time and by CPU time; random data and weights at the paper's shapes.
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.workloads import PRESETS, make_data, vgg16, white_box
from mibench.api.attack import DataInfo
from mibench.api.context import RunContext
from mibench.registry import ATTACKS, load_plugins
from mibench.running.execution import configure_device

BUDGET_KEY = {"plgmi": {"cgan": {"iterations": None}}, "gmi": {"gan": {"max_steps": None}}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--attack", default="plgmi", choices=sorted(BUDGET_KEY))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    load_plugins()
    device = torch.device(args.device)
    configure_device(device)
    preset = PRESETS["paper" if device.type == "cuda" else "cpu"]
    data = make_data(preset, 64)
    oracle = white_box(vgg16(preset.classes).to(device), preset.classes)
    section, field = next(iter(BUDGET_KEY[args.attack].items()))
    cls = ATTACKS.get(args.attack)
    attack = cls(cls.Params.model_validate({section: {next(iter(field)): args.steps}}))
    prior = attack.build_prior(DataInfo(3, 64, preset.classes))
    ctx = RunContext(device=device)
    attack.train_prior(prior, data.public, oracle, ctx)  # warm-up
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        attack.train_prior(prior, data.public, oracle, ctx)
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=25))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
