"""Executors and failure handling: failures are kept and do not stop a run, concurrent runs over one cache build
every artifact once, ready jobs start heaviest chain first (a pool giving the sequential bytes and records: see
test_packing.py)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

import mibench.running.stages as stages
from mibench.api.progress import SILENT
from mibench.api.records import read_records
from mibench.errors import RunInterrupted
from mibench.running.plan import build_plan
from mibench.running.runner import run_plan
from mibench.running.store import ArtifactStore
from mibench.suite import load_suite
from tests.conftest import MID_SHUFFLED, write_suite

pytestmark = pytest.mark.slow


def values(records):
    return {(r.seed, r.defense, r.attack, r.metric): r.value for r in records if not r.metric.endswith("time_s")}


def sequential_values(plan, tmp_path):
    cpu = torch.device("cpu")
    seq = run_plan(plan, store=ArtifactStore(tmp_path / "seq"), run_dir=tmp_path / "rseq", device=cpu, reporter=SILENT)
    return values(seq.records)


def test_submitit_debug_cluster_gives_the_sequential_records(tmp_path, tiny_suite):
    from mibench.running.executors import SubmititExecutor
    from mibench.suite.settings import SlurmSpec

    path = write_suite(tmp_path / "s.yaml", tiny_suite)
    plan = build_plan(load_suite(path))
    store = ArtifactStore(tmp_path / "cache")
    executor = SubmititExecutor(store, SlurmSpec(stage_time_min={"prior": 600}), cluster="debug", device="cpu")
    out = run_plan(
        plan, store=store, run_dir=tmp_path / "run", device=torch.device("cpu"), reporter=SILENT, executor=executor
    )
    assert out.failed == {} and len(out.ran) == len(plan.jobs)
    assert values(out.records) == sequential_values(plan, tmp_path)
    assert (store.root / "slurm-logs").is_dir()  # submitit's job folder lives with the cache


def test_a_run_killed_under_one_executor_finishes_under_another_without_redoing_work(tmp_path, tiny_suite, monkeypatch):
    from mibench.running.executors import SubmititExecutor
    from mibench.suite.settings import SlurmSpec

    path = write_suite(tmp_path / "s.yaml", tiny_suite)
    plan = build_plan(load_suite(path))
    store = ArtifactStore(tmp_path / "cache")
    original = stages.RUNNERS["invert"]

    def killed(job, ws, ctx):
        raise KeyboardInterrupt  # the process dies at its first inversion

    monkeypatch.setitem(stages.RUNNERS, "invert", killed)
    cpu = torch.device("cpu")
    with pytest.raises(RunInterrupted, match=r"interrupted: 4 job\(s\) finished .* run the same command again"):
        run_plan(plan, store=store, run_dir=tmp_path / "run", device=cpu, reporter=SILENT)
    assert len(read_records(tmp_path / "run" / "records.jsonl")) > 0  # what finished is already reported
    done_before = {j.id for j in plan.jobs.values() if store.is_done(j.stage, j.key)}
    assert done_before and len(done_before) < len(plan.jobs)
    monkeypatch.setitem(stages.RUNNERS, "invert", original)
    executor = SubmititExecutor(store, SlurmSpec(), cluster="debug", device="cpu")
    out = run_plan(plan, store=store, run_dir=tmp_path / "run", device=cpu, reporter=SILENT, executor=executor)
    assert set(out.cached) == done_before and set(out.ran) == set(plan.jobs) - done_before


def test_ray_local_instance_gives_the_sequential_records(tmp_path, tiny_suite):
    pytest.importorskip("ray")
    from mibench.running.executors import RayExecutor
    from mibench.suite.settings import RaySpec

    path = write_suite(tmp_path / "s.yaml", tiny_suite)
    plan = build_plan(load_suite(path))
    store = ArtifactStore(tmp_path / "cache")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # Ray workers get one thread per reserved CPU: compare like with like
    try:
        expected = sequential_values(plan, tmp_path)
    finally:
        torch.set_num_threads(threads)
    executor = RayExecutor(store, RaySpec(gpus_per_job=0, cpus_per_job=1), device="cpu", num_cpus=2)
    assert executor.slots == 2
    out = run_plan(
        plan, store=store, run_dir=tmp_path / "run", device=torch.device("cpu"), reporter=SILENT, executor=executor
    )
    assert out.failed == {} and len(out.ran) == len(plan.jobs)
    assert values(out.records) == expected


def test_cluster_executors_explain_a_missing_extra(tmp_path, monkeypatch):
    import builtins

    from mibench.errors import MibenchError
    from mibench.running.executors import RayExecutor, SubmititExecutor
    from mibench.suite.settings import RaySpec, SlurmSpec

    real_import = builtins.__import__

    def no_cluster_packages(name, *args, **kwargs):
        if name in ("ray", "submitit"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_cluster_packages)
    with pytest.raises(MibenchError, match=r"mibench\[slurm\]"):
        SubmititExecutor(ArtifactStore(tmp_path), SlurmSpec())
    with pytest.raises(MibenchError, match=r"mibench\[ray\]"):
        RayExecutor(ArtifactStore(tmp_path), RaySpec())


def test_a_failed_job_is_recorded_and_independent_jobs_finish(tmp_path, tiny_suite, monkeypatch):
    tiny_suite["defenses"].append({"name": "mid", "label": "MID", "params": MID_SHUFFLED})
    path = write_suite(tmp_path / "s.yaml", tiny_suite)
    plan = build_plan(load_suite(path))
    store = ArtifactStore(tmp_path / "cache")
    original = stages.RUNNERS["target"]
    calls = []

    def flaky(job, ws, ctx):
        calls.append(job.label)
        if job.payload["defense"][0]["name"] == "mid":
            raise RuntimeError("out of memory (simulated)")
        return original(job, ws, ctx)

    monkeypatch.setitem(stages.RUNNERS, "target", flaky)
    cpu = torch.device("cpu")
    summary = run_plan(plan, store=store, run_dir=tmp_path / "run", device=cpu, reporter=SILENT)
    mid_targets = [j for j in plan.jobs.values() if j.stage == "target" and "MID" in j.label]
    assert set(summary.failed) == {j.id for j in mid_targets}
    assert all("out of memory (simulated)" in e for e in summary.failed.values())
    assert set(summary.skipped) == plan.descendants({j.id for j in mid_targets}) - set(summary.failed)
    failure = store.failure("target", mid_targets[0].key)
    assert "RuntimeError: out of memory" in failure["error"] and "Traceback" in failure["traceback"]
    assert {r.defense for r in summary.records} >= {"-"} and "MID" not in {r.defense for r in summary.records}

    calls.clear()  # without --retry-failed the failures stand and nothing reruns
    again = run_plan(plan, store=store, run_dir=tmp_path / "run", device=cpu, reporter=SILENT)
    assert calls == [] and set(again.failed) == set(summary.failed) and again.ran == []

    monkeypatch.setitem(stages.RUNNERS, "target", original)
    fixed = run_plan(plan, store=store, run_dir=tmp_path / "run", device=cpu, reporter=SILENT, retry_failed=True)
    assert fixed.failed == {} and set(fixed.ran) == set(summary.failed) | set(summary.skipped)
    assert store.failure("target", mid_targets[0].key) is None


def test_two_concurrent_runs_build_each_artifact_once(tmp_path, tiny_suite):
    path = write_suite(tmp_path / "s.yaml", tiny_suite)
    n_jobs = len(build_plan(load_suite(path)).jobs)
    cmd = [sys.executable, "-m", "mibench.cli", "run", str(path), "--device", "cpu"]
    runs = [
        subprocess.Popen([*cmd, "--out", str(tmp_path / f"run{i}")], stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]
    ran = []
    for proc in runs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        ran.append(int(re.search(r"ran (\d+) jobs", err).group(1)))
        assert err.count("        done ") == ran[-1]  # a run's log calls only its own builds done
    assert sum(ran) == n_jobs  # every artifact built by exactly one of the two runs


def test_cli_runs_a_suite_through_the_slurm_executor_path(tmp_path, tiny_suite, capsys):
    from mibench.cli import main

    tiny_suite["seeds"] = [0]
    tiny_suite["cluster"] = {"slurm": {"time_min": 30, "logs": str(tmp_path / "logs")}}
    path = write_suite(tmp_path / "s.yaml", tiny_suite)
    code = main(["run", str(path), "--device", "cpu", "--executor", "slurm", "--slurm-cluster", "debug", "--quiet"])
    assert code == 0
    assert "AA-1" in capsys.readouterr().out
    assert (tmp_path / "logs").is_dir()  # the suite's cluster section reached submitit


def test_ready_jobs_start_with_the_heaviest_chain_so_per_target_priors_precede_inversions(tmp_path, tiny_suite):
    """With one slot, every prior (a per-target cGAN, the shared GAN) is started before any inversion."""
    from concurrent.futures import Future

    from mibench.running.executors import JobOutcome
    from mibench.running.runner import RunSummary, _execute

    tiny_suite["attacks"].append(
        {"name": "plgmi", "label": "PLG-MI", "params": {"cgan": {"ch": 8, "z_dim": 8, "iterations": 2}}}
    )
    plan = build_plan(load_suite(write_suite(tmp_path / "s.yaml", tiny_suite)))
    started = []

    class Recorder:  # runs nothing: the order of submission is what is checked
        slots = 1

        def fits(self, job):
            return True

        def submit(self, job, force):
            started.append(job)
            future = Future()
            future.set_result(JobOutcome(job.id, "ran"))
            return future

        def flush(self):
            pass

        def close(self):
            pass

    _execute(plan, list(plan.jobs.values()), set(), RunSummary(tmp_path), Recorder(), set(), SILENT)
    stages_in_order = [job.stage for job in started]
    assert len(started) == len(plan.jobs) and stages_in_order.count("prior") == 3  # GMI's GAN, a cGAN per seed
    last_prior = max(i for i, s in enumerate(stages_in_order) if s == "prior")
    assert last_prior < stages_in_order.index("invert")
    for job in started:  # and never before what it depends on
        assert all(started.index(plan.jobs[d]) < started.index(job) for d in job.deps)
