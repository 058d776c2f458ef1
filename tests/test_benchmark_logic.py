"""The benchmark's measurement logic (not timings): warm-ups first, interleaved rounds, median and spread."""

from __future__ import annotations

import pytest
import torch

from benchmarks.workloads import interleaved_seconds, rate_summary


def test_candidates_are_warmed_up_then_timed_in_interleaved_rounds():
    calls = []

    def factory(name):  # preparation (untimed) and the run (timed) are both recorded
        def prepare():
            calls.append(f"prepare {name}")
            return lambda: calls.append(name)

        return prepare

    candidates = {name: factory(name) for name in ("a", "b", "c")}
    seconds = interleaved_seconds(candidates, repeats=2, device=torch.device("cpu"))
    rounds = [step for name in ("a", "b", "c") for step in (f"prepare {name}", name)]
    assert calls == rounds * 3  # one warm-up each, then two rounds a, b, c, each run freshly prepared
    assert {k: len(v) for k, v in seconds.items()} == {"a": 2, "b": 2, "c": 2}


def test_rate_is_the_median_run_with_slowest_and_fastest():
    rate = rate_summary(100.0, [2.0, 1.0, 4.0])
    assert rate == {"per_s": pytest.approx(50.0), "per_s_min": 25.0, "per_s_max": 100.0, "runs": 3}


# --- packing (issue #21): the projection's replay of the runner, the footprint and co-run probes ---------------------


def _plan(*jobs):
    from mibench.running.plan import Job, Plan

    plan = Plan(suite=None)
    hours = {}
    for stage, key, kind, h, deps in jobs:
        payload = {
            "target": {"defense": [{"name": kind}]},
            "prior": {"prior": kind},
            "invert": {"attack": {"name": kind}},
        }[stage]
        plan.add(Job(stage, key, payload, tuple(f"{d}" for d in deps), key))
        hours[f"{stage}/{key}"] = h
    return plan, hours


def _budget(**footprints):
    from mibench.running.packing import Footprint, PackingBudget

    return PackingBudget({k: Footprint(1.0, u) for k, u in footprints.items()}, 10.0, 1.0, 4)


def test_the_packed_replay_matches_closed_forms():
    from benchmarks.projection import simulate

    twins = _plan(("prior", "a", "cgan", 1.0, ()), ("prior", "b", "cgan", 1.0, ()))
    half = _budget(**{"prior:cgan": 0.5})
    assert simulate(*twins, _budget(), {1: 1.0}) == pytest.approx(2.0)  # unmeasured kinds run alone
    assert simulate(*twins, half, {1: 1.0, 2: 2.0}) == pytest.approx(1.0)  # side by side at full speed each
    assert simulate(*twins, half, {1: 1.0, 2: 1.0}) == pytest.approx(2.0)  # packing that gains nothing
    # a target (alone), then two 2 h priors packed at an aggregate 1.6x, then two 0.5 h inversions (alone)
    chain = _plan(
        ("target", "t", "none", 1.0, ()),
        ("prior", "p", "cgan", 2.0, ("target/t",)),
        ("prior", "q", "cgan", 2.0, ("target/t",)),
        ("invert", "i", "gmi", 0.5, ("target/t", "prior/p")),
        ("invert", "j", "gmi", 0.5, ("target/t", "prior/q")),
    )
    assert simulate(*chain, half, {1: 1.0, 2: 1.6}) == pytest.approx(1.0 + 2.0 / 0.8 + 1.0)
    assert simulate(*chain, _budget(), {1: 1.0}) == pytest.approx(6.0)


def test_the_table1_graph_has_the_planned_jobs_and_one_at_a_time_sums_them():
    from benchmarks.projection import PAPER, packed_projection, project_table1, simulate, table1_graph

    rate = {"images_per_s": 1000.0, "paper_epochs": 50}
    r = {
        "target_training": {d: rate for d in PAPER["defenses"]},
        "priors": {
            p: {"paper_units": 3600, "per_s": 1.0} for p in ("gmi-wgan-gp", "kedmi-gan", "plgmi-cgan", "lomma-students")
        },
        "search": {a: {"iterations_per_s": 1.0, "paper_iterations": 360, "classes": 300} for a in PAPER["attacks"]},
    }
    plan, hours = table1_graph(r)
    targets = PAPER["seeds"] * len(PAPER["defenses"])
    stages = [j.stage for j in plan.jobs.values()]
    assert stages.count("target") == targets and stages.count("invert") == targets * len(PAPER["attacks"])
    assert stages.count("prior") == 1 + 3 * targets  # GMI's GAN; KED-MI's GAN, LOMMA's students, the cGAN per target
    alone = simulate(plan, hours, _budget(), {1: 1.0})
    projected = project_table1(r)
    assert alone == pytest.approx(projected["total"]) == pytest.approx(sum(hours.values()))
    # packed: per-target priors at a quarter of the device each, four side by side at an aggregate 3x
    r["packing"] = {
        "device_memory_gib": 80.0,
        "footprints": {f"prior:{p}": {"memory_gib": 4.0, "utilisation": 0.25} for p in ("kedmi-gan", "plgmi-cgan")},
        "corun": {"1": {"speedup": 1.0}, "2": {"speedup": 1.8}, "3": {"speedup": 2.5}, "4": {"speedup": 3.0}},
        "corun_prior": "plgmi-cgan",
    }
    packed = packed_projection(r)
    assert packed["one_at_a_time_h"] == pytest.approx(alone)
    assert alone - 25 * 2 * 1.0 * (1 - 1 / 3) <= packed["packed_h"] < alone  # at best the cGAN/GAN hours / 3


def _sleep_half_a_second():
    import time

    return lambda: time.sleep(0.5)


def test_corun_speedup_times_simultaneous_processes_and_footprint_reads_this_process():
    from benchmarks.packing_probe import corun_speedup, footprint

    corun = corun_speedup(_sleep_half_a_second, (1, 2))
    assert corun[1]["speedup"] == pytest.approx(1.0)
    assert corun[2]["speedup"] == pytest.approx(2.0, rel=0.15)  # sleeping processes do not contend
    busy = footprint(torch.device("cpu"), lambda: [torch.randn(300, 300) @ torch.randn(300, 300) for _ in range(200)])
    idle = footprint(torch.device("cpu"), lambda: __import__("time").sleep(0.2))
    assert 0 < busy["utilisation"] <= 1 and idle["utilisation"] < 0.1
    assert idle["memory_gib"] is None or idle["memory_gib"] > 0.05  # this process's peak resident memory


class _RouteStub(torch.nn.Module):
    """p = (0.9, 0.1) when the top-left pixel is lit (class 0's trigger), (0.2, 0.8) when the bottom-right one is
    (class 1's), (0.7, 0.3) on a clean image."""

    def forward(self, x):
        from mibench.models.base import ClassifierOutput

        probs = torch.tensor([0.7, 0.3]).repeat(len(x), 1)
        probs[x[:, 0, 0, 0] == 1] = torch.tensor([0.9, 0.1])
        probs[x[:, 0, -1, -1] == 1] = torch.tensor([0.2, 0.8])
        return ClassifierOutput(x.flatten(1), probs.log())


def test_trapdoor_capture_reads_the_two_routes_to_a_confident_target():
    from benchmarks.trapdoor_capture import target_routes
    from mibench.data.base import DataBundle, ImageSet

    blank = torch.zeros(4, 1, 4, 4, dtype=torch.uint8)
    data = DataBundle(
        ImageSet(blank, torch.tensor([0, 0, 1, 1])),
        ImageSet(blank, torch.tensor([0, 1, 0, 1])),
        ImageSet(blank, torch.full((4,), -1)),
        2,
        "stub",
    )
    mask = torch.zeros(2, 1, 4, 4)
    mask[0, :, 0, 0] = mask[1, :, -1, -1] = 1
    routes = target_routes(_RouteStub(), data, {"trap.triggers": torch.ones(2, 1, 4, 4), "trap.trigger_mask": mask})
    assert routes["p_true_class_private"] == pytest.approx((0.7 + 0.7 + 0.3 + 0.3) / 4)
    assert routes["p_trapdoor_class_public_triggered"] == pytest.approx((0.9 + 0.8) / 2)  # classes 0, 1, 0, 1
    assert set(target_routes(_RouteStub(), data, {})) == {"p_true_class_private"}  # no trapdoors, no second route
