"""Run a plan: skip finished artifacts, build the rest in dependency order, then write the run's records.

The runner alone knows about caching, seeds, devices and execution; methods only see a `RunContext`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mibench.plan import STAGES, Plan
from mibench.progress import Reporter
from mibench.records import RECORDS_FILE, Record, write_records
from mibench.stages import Workspace, read_values, run_job
from mibench.store import ArtifactStore, write_json_atomic


@dataclass
class RunSummary:
    """What a run did."""

    run_dir: Path
    ran: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    wall_time_s: float = 0.0


def forced_jobs(plan: Plan, force: Iterable[str]) -> set[str]:
    """Jobs of the forced stages and everything downstream of them (their inputs change)."""
    force = set(force)
    unknown = force - set(STAGES) - {"all"}
    if unknown:
        raise ValueError(f"unknown stage(s) to force: {sorted(unknown)}; allowed: all, {', '.join(STAGES)}")
    roots = {j.id for j in plan.jobs.values() if "all" in force or j.stage in force}
    return plan.descendants(roots)


def run_plan(
    plan: Plan,
    *,
    store: ArtifactStore,
    run_dir: Path,
    device: torch.device,
    reporter: Reporter,
    force: Iterable[str] = (),
) -> RunSummary:
    """Execute the missing jobs of `plan` sequentially, then assemble records into `run_dir`."""
    start = time.perf_counter()
    summary = RunSummary(run_dir)
    redo = forced_jobs(plan, force)
    workspace = Workspace(store, device, reporter)
    jobs = list(plan.jobs.values())
    for i, job in enumerate(jobs, 1):
        if job.id not in redo and store.is_done(job.stage, job.key):
            summary.cached.append(job.id)
            continue
        with store.lock(job.stage, job.key):
            if job.id not in redo and store.is_done(job.stage, job.key):  # another process built it meanwhile
                summary.cached.append(job.id)
                continue
            reporter.log(f"[{i}/{len(jobs)}] {job.label} ({job.key})")
            t0 = time.perf_counter()
            run_job(job, workspace)
            reporter.log(f"        done in {time.perf_counter() - t0:.1f}s")
        summary.ran.append(job.id)
    summary.records = assemble_records(plan, store)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_records(run_dir / RECORDS_FILE, summary.records)
    write_json_atomic(
        run_dir / "plan.json",
        {
            "suite": plan.suite.suite.model_dump(mode="json"),
            "source": plan.suite.source,
            "cache": str(store.root),
            "jobs": [{"id": j.id, "label": j.label, "deps": list(j.deps)} for j in jobs],
        },
    )
    summary.wall_time_s = time.perf_counter() - start
    return summary


def _upstream_methods(plan: Plan, store: ArtifactStore, job_id: str) -> dict[str, int]:
    """Versions of every method in a job's upstream chain (a measurement depends on the attack and defense too)."""
    methods: dict[str, int] = {}
    for dep in plan.jobs[job_id].deps:
        methods.update(_upstream_methods(plan, store, dep))
    stage, key = job_id.split("/")
    methods.update(store.meta(stage, key)["versions"]["methods"])
    return methods


def assemble_records(plan: Plan, store: ArtifactStore) -> list[Record]:
    """Join each finished job's values with the labels the plan gives it."""
    records = []
    suite = plan.suite.suite.name
    for source in plan.sources:
        stage, key = source.job_id.split("/")
        meta = store.meta(stage, key)
        versions = {**meta["versions"], "methods": _upstream_methods(plan, store, source.job_id)}
        for v in read_values(store, stage, key):
            records.append(
                Record(
                    suite=suite,
                    seed=source.seed,
                    defense=source.defense,
                    attack=source.attack,
                    metric=v["metric"],
                    value=v["value"],
                    higher_is_better=v["higher_is_better"],
                    unit=v["unit"],
                    stage=stage,
                    job_key=key,
                    details=v["details"],
                    versions=versions,
                    device=meta["device"],
                    wall_time_s=meta["wall_time_s"],
                    created=meta["created"],
                )
            )
    return records


def describe_plan(plan: Plan, store: ArtifactStore) -> str:
    """A dry-run listing: every job, cached or to run."""
    lines = []
    todo = 0
    for job in plan.jobs.values():
        done = store.is_done(job.stage, job.key)
        todo += not done
        lines.append(f"  {'cached' if done else 'to run':7} {job.stage:9} {job.key}  {job.label}")
    header = f"{len(plan.jobs)} jobs, {todo} to run, {len(plan.jobs) - todo} cached (cache: {store.root})"
    return "\n".join([header, *lines])


def load_plan_info(run_dir: Path) -> dict:
    """The run's `plan.json` (suite as resolved)."""
    return json.loads((run_dir / "plan.json").read_text())
