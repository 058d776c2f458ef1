"""Per-stage throughput of mibench at the paper's shapes, and the projected wall time of suites/table1.yaml.

Every stage runs mibench's own code (the shared training loop with each defense, the GAN loops, each attack's latent
search, the metrics) on random uint8 images of the paper's shapes for a short, fixed number of steps; a rate is
units per second, with CUDA synchronised around each timed region. Target training and the bare loop are compared
under the same conditions: each candidate is warmed up on its own, then timed `repeats` times in interleaved rounds
(one run of each per round), and the median is the rate, with the slowest and fastest runs as its spread. The
projection multiplies each rate by the work the paper protocol asks for (epochs, GAN steps, iterations, classes,
seeds) and sums over the jobs that `mibench run suites/table1.yaml` plans. The workloads themselves are built in
`benchmarks/workloads.py`.

    python benchmarks/stages.py --preset paper --device cuda   # 1,000 classes, 300 attacked, VGG16 at 64x64
    python benchmarks/stages.py --preset cpu                   # same networks, fewer classes and steps

Results go to benchmarks/results/<preset>-<device>.json and a Markdown summary beside it (see BENCHMARKS.md).
Weights are random: throughput does not depend on them, and nothing here is an accuracy.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import mibench
from mibench.api.attack import DataInfo
from mibench.api.context import RunContext
from mibench.data.base import to_float
from mibench.metrics.functional import knn_distance
from mibench.models.base import build_classifier, freeze
from mibench.registry import ATTACKS, load_plugins
from mibench.running.execution import configure_device
from mibench.running.hostmem import keep_freed_host_memory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: the `benchmarks` package importable
from benchmarks.packing_probe import GIB, corun_speedup, footprint, write_profile
from benchmarks.projection import PAPER, packed_projection, project_table1, summary_markdown
from benchmarks.workloads import (
    PRESETS,
    PRIOR_CASES,
    Preset,
    bare_loop_epoch,
    interleaved_seconds,
    make_data,
    paper_prior_units,
    prior_run,
    probe_units,
    random_images,
    rate_summary,
    search_run,
    target_candidates,
    timed,
    vgg16,
    white_box,
)

SECTIONS = ["target_training", "bare_loop", "priors", "search", "metrics", "packing"]
SEARCH_ATTACKS = list(PAPER["attacks"])
TRAINING_DEFENSES = ["none", *[d for d in PAPER["defenses"] if d != "none"], "ted", "ted-plus"]


def bench_target_training(preset: Preset, device: torch.device) -> dict[str, Any]:
    """Images/s of one epoch of the shared loop per defense (the defense's own recipe), beside the bare loop.

    Every defense and the bare loop are timed in the same interleaved rounds (`interleaved_seconds`); the bare loop's
    rate is under the key `bare_loop`, so the harness overhead compares runs made under the same conditions.
    """
    candidates, facts = target_candidates(preset, device, TRAINING_DEFENSES)
    seconds = interleaved_seconds(candidates, preset.repeats, device)
    results: dict[str, Any] = {}
    for name, fact in facts.items():
        rate = rate_summary(fact["images"], seconds[name])
        results[name] = {**fact, "images_per_s": rate["per_s"], "spread": rate, "seconds": seconds[name]}
        span = f"{rate['per_s_min']:.1f}-{rate['per_s_max']:.1f}"
        print(f"  target {name:10s} {rate['per_s']:9.1f} img/s (median of {rate['runs']}, {span})")
    return results


def bench_bare_loop(preset: Preset, device: torch.device) -> dict[str, Any]:
    """The bare loop alone (the harness floor); `target_training` also measures it, interleaved with the defenses."""
    test = make_data(preset, 64).private_test
    seconds = interleaved_seconds({"bare": lambda: bare_loop_epoch(preset, device, test)}, preset.repeats, device)
    seconds = seconds["bare"]
    rate = rate_summary(preset.train_steps * 64, seconds)
    print(f"  bare loop       {rate['per_s']:9.1f} img/s (median of {rate['runs']})")
    return {"images_per_s": rate["per_s"], "spread": rate}


def bench_priors(preset: Preset, device: torch.device) -> dict[str, Any]:
    """Steps/s of each attack's prior training at its defaults (GAN width, batch), capped to `gan_steps`; LOMMA's
    three students as distilled images/s."""
    out: dict[str, Any] = {}
    for label in [*PRIOR_CASES, "lomma-students"]:
        run = prior_run(preset, str(device), label)
        if label != "lomma-students":
            run()  # warm-up (same cost; includes one-offs)
        _, seconds = timed(device, run)
        units = probe_units(preset, label)
        unit = PRIOR_CASES[label][2] if label in PRIOR_CASES else "distilled images (all students)"
        paper_units = paper_prior_units(label)
        out[label] = {"unit": unit, "per_s": units / seconds, "paper_units": paper_units}
        hours = paper_units / (units / seconds) / 3600
        print(f"  prior {label:14s} {units / seconds:8.2f} {unit}/s; paper {paper_units} -> {hours:.2f} h")
    return out


def bench_search(preset: Preset, device: torch.device) -> dict[str, Any]:
    """Latent-search iterations/s per attack for `attacked` classes at the attack's defaults (restarts, samples)."""
    info = DataInfo(3, 64, preset.classes)
    target = vgg16(preset.classes).to(device)
    classes = torch.arange(preset.attacked)
    k = preset.search_iterations
    out: dict[str, Any] = {}
    for name in SEARCH_ATTACKS:
        cls = ATTACKS.get(name)
        run = search_run(preset, device, name)
        run(2)  # warm-up
        _, seconds = timed(device, run)
        paper_iterations = cls.Params().iterations
        rate = k / seconds
        out[name] = {"iterations_per_s": rate, "classes": preset.attacked, "paper_iterations": paper_iterations}
        print(f"  search {name:12s} {rate:8.2f} it/s over {preset.attacked} classes")
    # Batched vs per-class (GMI): the official scripts search one class batch at a time.
    gmi = ATTACKS.get("gmi")
    attack = gmi(gmi.Params.model_validate({"iterations": k}))
    oracle = white_box(target, preset.classes)
    prior = attack.build_prior(info)
    ctx = RunContext(device=device, seed=0)
    probe = preset.per_class_probe
    _, seconds = timed(device, lambda: [attack.invert(prior, oracle, classes[c : c + 1], ctx) for c in range(probe)])
    per_class_rate = k / (seconds / probe * preset.attacked)
    out["gmi-per-class"] = {"iterations_per_s": per_class_rate, "classes": preset.attacked}
    if "gmi" in out:
        out["batched_speedup"] = out["gmi"]["iterations_per_s"] / per_class_rate
    print(f"  search gmi one class at a time: {per_class_rate:.2f} it/s")
    return out


def bench_metrics(preset: Preset, device: torch.device) -> dict[str, Any]:
    """Evaluation-model (FaceNet, IR-50 at 112) images/s and the KNN distance against the private training set."""
    evaluator = freeze(build_classifier("facenet", {}, num_classes=preset.classes, in_channels=3, image_size=112))
    evaluator.to(device)
    n = 5 * preset.attacked
    images = random_images(n, 64, 3)

    def features() -> torch.Tensor:
        with torch.no_grad():
            chunks = []
            for i in range(0, n, 256):
                x = F.interpolate(to_float(images[i : i + 256], device), size=112, mode="bilinear")
                chunks.append(evaluator(x).features)
            return torch.cat(chunks)

    features()
    fake, seconds = timed(device, features)
    private_n = min(PAPER["train_images"], 27 * preset.classes)
    real = torch.randn(private_n, fake.shape[1], device=device)
    real_labels = torch.arange(private_n, device=device) % preset.classes
    fake_labels = torch.arange(n, device=device) % preset.attacked
    _, knn_s = timed(device, knn_distance, fake.float(), fake_labels, real, real_labels)
    out = {"evaluator_images_per_s": n / seconds, "knn_seconds": knn_s, "knn_fake": n, "knn_real": private_n}
    print(f"  metrics evaluator {n / seconds:.1f} img/s; KNN {n} vs {private_n}: {knn_s:.3f} s")
    return out


CORUN_PRIOR = ["plgmi-cgan"]  # --corun: the prior whose probes are run side by side


def bench_packing(preset: Preset, device: torch.device) -> dict[str, Any]:
    """Per job kind, the footprint of one warmed-up probe (`packing_probe.footprint`): each paper defense's target
    epoch, each prior's training, each attack's search; and the co-run speed-up of 1..4 probes of one prior (PLG-MI's
    cGAN, the stage packing is for, unless --corun names another) side by side in separate processes (1..2 on a
    CPU)."""
    footprints: dict[str, Any] = {}
    candidates, _ = target_candidates(preset, device, list(PAPER["defenses"]))
    for name in PAPER["defenses"]:
        candidates[name]()()  # warm-up
        footprints[f"target:{name}"] = footprint(device, candidates[name]())
    for label in [*PRIOR_CASES, "lomma-students"]:
        run = prior_run(preset, str(device), label)
        run()
        footprints[f"prior:{label}"] = footprint(device, run)
    for name in SEARCH_ATTACKS:
        run = search_run(preset, device, name)
        run(2)
        footprints[f"invert:{name}"] = footprint(device, run)
    for kind, f in footprints.items():
        memory = "n/a" if f["memory_gib"] is None else f"{f['memory_gib']:.2f} GiB"
        print(f"  footprint {kind:24s} {memory:>10s}, busy {f['utilisation']:.0%}")
    counts = (1, 2, 3, 4) if device.type == "cuda" else (1, 2)
    corun = corun_speedup(functools.partial(prior_run, preset, str(device), CORUN_PRIOR[0]), counts)
    for n, v in corun.items():
        print(f"  {n} {CORUN_PRIOR[0]} probe(s) side by side: {v['seconds']:.1f} s, speed-up {v['speedup']:.2f}x")
    if device.type == "cuda":
        memory = torch.cuda.get_device_properties(device).total_memory / GIB
    else:  # the machine's memory: CPU workers share it
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / GIB
    return {"footprints": footprints, "corun": corun, "corun_prior": CORUN_PRIOR[0], "device_memory_gib": memory}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/...)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run these sections only")
    parser.add_argument("--attacks", nargs="+", default=SEARCH_ATTACKS, help="attacks of the search section")
    parser.add_argument("--defenses", nargs="+", default=TRAINING_DEFENSES, help="defenses of target_training")
    parser.add_argument("--corun", choices=["gmi-wgan-gp", "kedmi-gan", "plgmi-cgan"], default="plgmi-cgan",
                        help="the prior whose probes the packing section runs side by side")
    parser.add_argument(
        "--packing-out", type=Path, help="write the packing section's footprints as a `mibench run --packing` profile"
    )
    args = parser.parse_args(argv)
    SEARCH_ATTACKS[:] = args.attacks
    TRAINING_DEFENSES[:] = args.defenses
    CORUN_PRIOR[:] = [args.corun]
    host_malloc = "keep freed" if keep_freed_host_memory() else "default"  # as every mibench job (MIBENCH_HOST_MALLOC)
    load_plugins()
    device = torch.device(args.device)
    configure_device(device)
    preset = PRESETS[args.preset]
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'cpu'}"
    machine += f", {torch.get_num_threads()} CPU threads"
    r: dict[str, Any] = {
        "preset": args.preset,
        "preset_values": preset.__dict__,
        "device": str(device),
        "machine": machine,
        "torch": torch.__version__,
        "mibench": mibench.__version__,
        "python": sys.version.split()[0],
        "host_malloc": host_malloc,
        "date": time.strftime("%Y-%m-%d"),
    }
    print(f"benchmark on {machine} ({args.preset})")
    sections = {
        "target_training": bench_target_training,
        "bare_loop": bench_bare_loop,
        "priors": bench_priors,
        "search": bench_search,
        "metrics": bench_metrics,
        "packing": bench_packing,
    }
    failed = []
    out = args.out or Path(__file__).parent / "results" / f"{args.preset}-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    for name, bench in sections.items():
        if args.only and name not in args.only:
            continue
        try:  # a failing stage is reported, and the others still run
            r[name] = bench(preset, device)
        except Exception as exc:
            traceback.print_exc()
            r[f"{name}_error"] = f"{type(exc).__name__}: {exc}"
            failed.append(name)
        out.write_text(json.dumps(r, indent=2) + "\n")  # what is measured survives a later crash or timeout
    if "packing" in r and args.packing_out is not None:
        write_profile(args.packing_out, machine, r["packing"]["device_memory_gib"], r["packing"]["footprints"])
        print(f"packing profile: {args.packing_out}")
    core = set(sections) - {"packing"}
    if not failed and core <= set(r) and set(PAPER["defenses"]) <= set(r["target_training"]):
        tt = r["target_training"]
        bare = tt.get("bare_loop", r["bare_loop"])  # the interleaved measurement when there is one
        r["derived"] = {
            "harness_overhead": 1 - tt["none"]["images_per_s"] / bare["images_per_s"],
            "trap_mid_cost_ratio": tt["none"]["images_per_s"] / tt["trap-mid"]["images_per_s"],
        }
        r["projection_table1_hours"] = project_table1(r)
        r["projection_table1_packed"] = packed_projection(r)
        md = summary_markdown(r)
        out.with_suffix(".md").write_text(md)
        print(md)
    out.write_text(json.dumps(r, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
