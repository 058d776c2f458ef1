"""Packing jobs onto a device by a measured memory and utilisation budget (issue #21): the ledger's admission rule,
the profile file's errors, the runner's use of it, and a packed run giving an unpacked run's records."""

from __future__ import annotations

import json
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml

from mibench.api.progress import SILENT
from mibench.errors import MibenchError
from mibench.running.executors import JobOutcome, LocalPoolExecutor
from mibench.running.packing import DeviceLedger, Footprint, PackingBudget, job_kind, read_budget
from mibench.running.plan import Job, build_plan
from mibench.running.runner import run_plan
from mibench.running.store import ArtifactStore
from mibench.suite import load_suite
from tests.conftest import artifact_bytes, write_suite

ROOT = Path(__file__).resolve().parents[1]


def job(stage: str, name: str, key: str) -> Job:
    payload = {
        "target": {"defense": [{"name": name}]},
        "prior": {"prior": name},
        "invert": {"attack": {"name": name}},
    }.get(stage, {})
    return Job(stage, key, payload, (), f"{stage} {name} {key}")


BUDGET = PackingBudget(
    footprints={"prior:plgmi-cgan": Footprint(3.0, 0.3), "invert:gmi": Footprint(7.0, 0.1)},
    device_memory_gib=10.0,
    max_utilisation=1.0,
    max_jobs_per_device=3,
)


def test_job_kinds_name_the_method_of_each_stage():
    assert job_kind(job("target", "trap-mid", "a")) == "target:trap-mid"
    assert job_kind(Job("target", "b", {"defense": [{"name": "trap-mid"}, {"name": "negls"}]}, (), "")) == (
        "target:trap-mid+negls"
    )
    assert job_kind(job("prior", "plgmi-cgan", "c")) == "prior:plgmi-cgan"
    assert job_kind(job("invert", "gmi", "d")) == "invert:gmi"
    assert job_kind(job("measure", "", "e")) == "measure"


def test_jobs_share_a_device_only_within_its_memory_utilisation_and_worker_budget():
    ledger = DeviceLedger(BUDGET, devices=1)
    cgans = [job("prior", "plgmi-cgan", str(i)) for i in range(4)]
    for cgan in cgans[:3]:  # 3 x (3 GiB, 0.3): within 10 GiB and 1.0
        assert ledger.place(cgan) == 0
        ledger.start(cgan, 0)
    assert ledger.place(cgans[3]) is None  # a fourth: 12 GiB, 1.2, and more than 3 workers
    assert ledger.load(0) == pytest.approx(0.9)
    ledger.finish(cgans[0], 0)
    assert ledger.place(job("invert", "gmi", "x")) is None  # 6 + 7 GiB > 10: memory binds before utilisation
    ledger.finish(cgans[1], 0)
    assert ledger.place(job("invert", "gmi", "x")) == 0  # 3 + 7 = 10 GiB
    target = job("target", "none", "t")  # not in the profile: it fills a device
    assert ledger.place(target) is None
    ledger.finish(cgans[2], 0)
    assert ledger.place(target) == 0  # anything runs alone on an empty device
    ledger.start(target, 0)
    assert ledger.place(job("prior", "plgmi-cgan", "y")) is None  # and nothing joins it


def test_a_job_goes_to_the_least_loaded_device_with_room():
    ledger = DeviceLedger(BUDGET, devices=2)
    first, second, third = (job("prior", "plgmi-cgan", str(i)) for i in range(3))
    ledger.start(first, ledger.place(first))
    assert ledger.place(second) == 1  # device 0 holds 0.3
    ledger.start(second, 1)
    ledger.start(third, ledger.place(third))
    assert [ledger.load(d) for d in range(2)] == [pytest.approx(0.6), pytest.approx(0.3)]


def write_profile(path: Path, **fields) -> Path:
    profile = {
        "gpu": "test",
        "device_memory_gib": 10,
        "footprints": {"prior:plgmi-cgan": {"memory_gib": 3, "utilisation": 0.3}},
        **fields,
    }
    path.write_text(json.dumps(profile))
    return path


def test_a_profile_file_is_read_and_bad_ones_are_one_line_errors_naming_file_and_key(tmp_path):
    budget = read_budget(write_profile(tmp_path / "p.json"))
    assert budget.footprints == {"prior:plgmi-cgan": Footprint(3.0, 0.3)}
    assert (budget.device_memory_gib, budget.max_utilisation, budget.max_jobs_per_device) == (10.0, 1.0, 4)
    assert math.isinf(budget.footprint(job("target", "none", "t")).utilisation)
    bad = {
        "device_memory_gib": (write_profile(tmp_path / "a.json", device_memory_gib=-1), "device_memory_gib"),
        "footprint": (
            write_profile(tmp_path / "b.json", footprints={"invert:gmi": {"memory_gib": 1, "utilisation": "x"}}),
            "footprints.invert:gmi.utilisation",
        ),
        "jobs": (write_profile(tmp_path / "c.json", max_jobs_per_device=0), "max_jobs_per_device"),
    }
    for path, key in bad.values():
        with pytest.raises(MibenchError, match=key) as err:
            read_budget(path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "d.json").write_text("{not json")
    with pytest.raises(MibenchError, match="not JSON"):
        read_budget(tmp_path / "d.json")
    with pytest.raises(MibenchError, match="not found"):
        read_budget(tmp_path / "missing.json")


class LedgerExecutor:
    """Runs nothing but holds each job for a moment on a thread, through the budget, recording every overlap."""

    def __init__(self, budget: PackingBudget):
        self.ledger, self.slots = DeviceLedger(budget, devices=1), budget.max_jobs_per_device
        self.lock, self.threads = threading.Lock(), ThreadPoolExecutor(max_workers=self.slots)
        self.violations: list[str] = []
        self.started: list[Job] = []
        self.most_at_once = 0

    def fits(self, job: Job) -> bool:
        with self.lock:
            return self.ledger.place(job) is not None

    def submit(self, job: Job, force: bool):
        with self.lock:
            device = self.ledger.place(job)
            self.ledger.start(job, device)
            jobs = self.ledger.running[0]
            self.started.append(job)
            self.most_at_once = max(self.most_at_once, len(jobs))
            memory = sum(f.memory_gib for f in jobs.values())
            if len(jobs) > 1 and (memory > 10 or self.ledger.load(0) > 1 + 1e-9):
                self.violations.append(job.id)

        def hold() -> JobOutcome:
            time.sleep(0.02)
            with self.lock:
                self.ledger.finish(job, device)
            return JobOutcome(job.id, "ran")

        return self.threads.submit(hold)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.threads.shutdown(wait=True)


def test_the_runner_keeps_to_the_budget_and_lets_lighter_ready_jobs_pass(tmp_path, tiny_suite):
    from mibench.running.runner import RunSummary, _execute

    tiny_suite["seeds"] = [0, 1, 2]
    tiny_suite["attacks"].append(
        {"name": "plgmi", "label": "PLG-MI", "params": {"cgan": {"ch": 8, "z_dim": 8, "iterations": 2}}}
    )
    plan = build_plan(load_suite(write_suite(tmp_path / "s.yaml", tiny_suite)))
    # per-target cGANs pack three to a device; everything else (targets, GANs, inversions) runs alone
    executor = LedgerExecutor(BUDGET)
    summary = RunSummary(tmp_path)
    _execute(plan, list(plan.jobs.values()), set(), summary, executor, set(), SILENT)
    assert len(summary.ran) == len(plan.jobs) and not executor.violations
    assert executor.most_at_once == 3  # the three seeds' cGANs side by side
    for done in executor.started:
        assert all(executor.started.index(plan.jobs[d]) < executor.started.index(done) for d in done.deps)


def smoke_subset(tmp_path: Path) -> Path:
    """The smoke suite's data, networks and attack settings, cut to what packing can get wrong in a minute: one
    seed, the undefended and MID targets, GMI (one GAN shared by both) and PLG-MI (a cGAN per target), AA-1 and KNN."""
    smoke = yaml.safe_load((ROOT / "suites" / "smoke.yaml").read_text())
    smoke["seeds"] = [0]
    smoke["defenses"] = [d for d in smoke["defenses"] if d.get("label") in ("-", "MID")]
    smoke["attacks"] = [a for a in smoke["attacks"] if a["label"] in ("GMI", "PLG-MI")]
    smoke["metrics"] = ["attack-accuracy", "knn-distance"]
    smoke["attack_budget"] = 0.25  # a quarter of the search iterations (keys change, code paths do not)
    smoke["attacks"][0]["params"]["gan"]["epochs"] = 12  # and of GMI's GAN epochs (with the budget: 3)
    smoke["evaluator"]["train"]["epochs"] = 3
    return write_suite(tmp_path / "smoke-subset.yaml", smoke)


def test_a_packed_run_gives_the_bytes_and_records_of_an_unpacked_run_on_the_smoke_suite(tmp_path):
    """Sequential in this process vs a packed pool of two spawned workers: every artifact's files (SHA-256) and
    values, hence every record, are identical; and jobs did share the machine."""
    plan = build_plan(load_suite(smoke_subset(tmp_path)))
    cpu = torch.device("cpu")
    sequential = ArtifactStore(tmp_path / "seq")
    unpacked = run_plan(plan, store=sequential, run_dir=tmp_path / "r1", device=cpu, reporter=SILENT)
    # everything but the evaluator and the targets may share the machine, two at a time
    kinds = ("prior:gmi-wgan-gp", "prior:plgmi-cgan", "invert:gmi", "invert:plgmi", "measure")
    profile = write_profile(
        tmp_path / "profile.json",
        max_jobs_per_device=2,
        footprints={kind: {"memory_gib": 1, "utilisation": 0.5} for kind in kinds},
    )
    packed_store = ArtifactStore(tmp_path / "packed")
    pool = LocalPoolExecutor(packed_store, cpu, budget=read_budget(profile))
    assert pool.slots == 2
    packed = run_plan(plan, store=packed_store, run_dir=tmp_path / "r2", device=cpu, reporter=SILENT, executor=pool)
    assert not unpacked.failed and not packed.failed and len(packed.ran) == len(plan.jobs)
    assert pool.ledger.peak == 2  # jobs did share the machine
    for job in plan.jobs.values():
        assert artifact_bytes(packed_store, job.stage, job.key) == artifact_bytes(sequential, job.stage, job.key), (
            job.label
        )
    target = next(job for job in plan.jobs.values() if job.stage == "target")
    assert packed_store.meta("target", target.key)["execution"] == {
        "threads": len(os.sched_getaffinity(0)),
        "deterministic": True,
        "bitwise_reproducible": True,
    }

    def by_key(summary):
        return {(r.job_key, r.metric): r.value for r in summary.records if not r.metric.endswith("time_s")}

    assert by_key(packed) == by_key(unpacked) and len(by_key(packed)) >= 8
