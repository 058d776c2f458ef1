"""Run a plan: skip finished artifacts, build the rest in dependency order, then write the run's records.

The runner alone knows about caching, seeds, devices and execution; methods only see a `RunContext`.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mibench.api.progress import Reporter
from mibench.api.records import RECORDS_FILE, Record, read_records, write_records
from mibench.errors import MibenchError, RunInterrupted
from mibench.running.execution import resolved_execution
from mibench.running.executors import Executor, JobOutcome, SequentialExecutor
from mibench.running.locks import holder_gone, holder_record, holder_text, read_holder
from mibench.running.plan import STAGES, Job, Plan
from mibench.running.stages import read_values
from mibench.running.store import ArtifactStore, read_json_file, write_json_atomic


@dataclass
class RunSummary:
    """What a run did."""

    run_dir: Path
    ran: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # job id -> error
    skipped: list[str] = field(default_factory=list)  # downstream of a failure
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


def check_cached(plan: Plan, store: ArtifactStore, redo: set[str], *, rebuild: bool, reporter: Reporter) -> None:
    """Verify every finished artifact the plan reuses (sizes and SHA-256); set invalid ones aside to be rebuilt.

    With `rebuild` False an invalid artifact stops the run before any work, naming each job and file.
    """
    invalid: list[tuple[Job, str]] = []
    for job in plan.jobs.values():
        if job.id not in redo and store.is_done(job.stage, job.key):
            problem = store.verify(job.stage, job.key)
            if problem is not None:
                invalid.append((job, problem))
    if invalid and not rebuild:
        lines = [f"  {job.stage}/{job.key} ({job.label}): {problem}" for job, problem in invalid]
        raise MibenchError(
            f"{len(invalid)} cached artifact(s) are corrupt (--no-rebuild given; run without it to rebuild them, or "
            "`mibench cache verify --repair`):\n" + "\n".join(lines)
        )
    for job, problem in invalid:
        reporter.log(f"rebuilding {job.label} ({job.stage}/{job.key}): {problem}")
        store.quarantine(job.stage, job.key)


def run_plan(
    plan: Plan,
    *,
    store: ArtifactStore,
    run_dir: Path,
    device: torch.device,
    reporter: Reporter,
    force: Iterable[str] = (),
    executor: Executor | None = None,
    retry_failed: bool = False,
    rebuild: bool = True,
) -> RunSummary:
    """Execute the missing jobs of `plan` as their dependencies finish, then assemble records into `run_dir`.

    Cached artifacts are verified first (`check_cached`). A failed job keeps its error in the store; the jobs
    downstream of it are skipped and every independent job still runs. A job that failed in an earlier run is not
    retried unless `retry_failed`. Ctrl-C or SIGTERM (as KeyboardInterrupt) stops the workers, writes the records of
    what finished, and raises `RunInterrupted`.
    """
    start = time.perf_counter()
    summary = RunSummary(run_dir)
    redo = forced_jobs(plan, force)
    store.claim()  # a folder that is not a mibench cache is refused here, before any work; nothing in it is touched
    for spare in store.clean_spares():
        reporter.log(f"removed {spare} (left by an interrupted build)")
    check_cached(plan, store, redo, rebuild=rebuild, reporter=reporter)
    executor = executor or SequentialExecutor(store, device, reporter)
    jobs = list(plan.jobs.values())
    finished: set[str] = set()
    pending: list[Job] = []
    for job in jobs:
        if job.id not in redo and store.is_done(job.stage, job.key):
            summary.cached.append(job.id)
            finished.add(job.id)
        elif job.id not in redo and not retry_failed and (old := store.failure(job.stage, job.key)) is not None:
            summary.failed[job.id] = f"failed earlier (use --retry-failed): {old['error']}"
        else:
            pending.append(job)
    report_other_settings(plan, store, summary.cached, device, reporter)
    run_dir.mkdir(parents=True, exist_ok=True)
    marker = mark_running(run_dir, plan.suite.suite.name)
    try:
        _execute(plan, pending, finished, summary, executor, redo, reporter)
    except KeyboardInterrupt:
        write_run(run_dir, plan, store, summary)
        raise RunInterrupted(
            f"interrupted: {len(summary.ran)} job(s) finished in this run and are kept ({len(summary.cached)} were "
            f"cached, {len(plan.jobs) - len(summary.ran) - len(summary.cached)} not done); run the same command "
            "again to resume"
        ) from None
    finally:
        marker.unlink(missing_ok=True)
    write_run(run_dir, plan, store, summary)
    summary.wall_time_s = time.perf_counter() - start
    return summary


def report_other_settings(
    plan: Plan, store: ArtifactStore, cached: list[str], device: torch.device, reporter: Reporter
) -> list[str]:
    """Name the reused artifacts that were built under other execution settings than this run's; returns their ids.

    A job's bytes are promised for its key *and* its execution settings (threads, deterministic algorithms, device
    type): CPU reductions split work by thread. The settings are not part of the key, so that a cache shared by
    machines of different sizes is still shared; reusing what another setting built is said here, and each record
    carries the settings its artifact was built under.
    """
    other: list[tuple[str, dict]] = []
    for job_id in cached:
        job = plan.jobs[job_id]
        meta = store.meta(job.stage, job.key)
        built = meta.get("execution") or {}
        threads, deterministic = resolved_execution(job.runtime.get("execution", {}))
        device_type = str(meta.get("device", device.type)).split(":")[0]
        if built and (built.get("threads"), built.get("deterministic"), device_type) != (
            threads,
            deterministic,
            device.type,
        ):
            other.append((job_id, built))
    if other:
        first, built = other[0]
        reporter.log(
            f"reusing {len(other)} artifact(s) built under other execution settings than this run's (e.g. "
            f"{plan.jobs[first].label}: {built.get('threads')} threads, deterministic {built.get('deterministic')}); "
            "the same key with other settings may hold other bytes; their records carry the settings they were built "
            "under"
        )
    return [job_id for job_id, _ in other]


def write_run(run_dir: Path, plan: Plan, store: ArtifactStore, summary: RunSummary) -> None:
    """The run folder's records (of every finished job) and `plan.json`."""
    summary.records = assemble_records(plan, store)
    write_records(run_dir / RECORDS_FILE, summary.records)
    write_json_atomic(
        run_dir / "plan.json",
        {
            "suite": plan.suite.suite.model_dump(mode="json"),
            "source": plan.suite.source,
            "cache": str(store.root),
            "jobs": [{"id": j.id, "label": j.label, "deps": list(j.deps)} for j in plan.jobs.values()],
            "failed": summary.failed,
            "skipped": summary.skipped,
        },
    )


RUNNING = ".running.json"


def mark_running(run_dir: Path, suite: str) -> Path:
    """Say in the run folder that a run is writing it (pid, host, start), so that a report can tell.

    A folder another live run is writing is refused, naming that run: two runs (of two suites, or of one suite with
    other settings) must not interleave their records and plans in one folder.
    """
    path = run_dir / RUNNING
    holder = read_holder(path)
    mine = holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()
    if holder is not None and not mine and not holder_gone(holder):
        raise MibenchError(
            f"{run_dir} is being written by another run ({holder.get('what', 'a run')}, {holder_text(holder)}): "
            f"wait for it, give this run another --out, or delete {path} if that run is gone"
        )
    write_json_atomic(path, holder_record(f"suite {suite}"))
    return path


def running_note(run_dir: Path) -> str | None:
    """A warning when a run is writing `run_dir` now, or one was killed before finishing it."""
    holder = read_holder(run_dir / RUNNING)
    if holder is None:
        return None
    if holder_gone(holder):
        return f"{run_dir}: a run ({holder_text(holder)}) stopped before finishing; its records may be incomplete"
    return (
        f"{run_dir}: a run is writing this folder now ({holder_text(holder)}); the records shown may be from before it"
    )


def _execute(
    plan: Plan,
    pending: list[Job],
    finished: set[str],
    summary: RunSummary,
    executor: Executor,
    redo: set[str],
    reporter: Reporter,
) -> None:
    """Submit ready jobs as slots free up until nothing is pending; on interrupt, stop the executor's workers.

    Among ready jobs, those starting the heaviest chains go first (`Plan.critical_paths`): with several slots, the
    long per-target priors start as soon as their targets exist, and short inversions and measurements fill in.
    A job the executor has no room for now (`fits`: a packing budget) waits, and lighter ready jobs may pass it.
    """
    running: dict[Future, Job] = {}
    count = 0
    weight = plan.critical_paths()
    try:
        while pending or running:
            blocked = plan.descendants(set(summary.failed)) - set(summary.failed)
            for job in [j for j in pending if j.id in blocked]:
                pending.remove(job)
                summary.skipped.append(job.id)
            ready = [j for j in pending if all(d in finished for d in j.deps)]
            for job in sorted(ready, key=lambda j: -weight[j.id]):  # long chains first; ties in plan order
                if len(running) >= executor.slots:
                    break
                if not executor.fits(job):  # a packing budget has no room for it now; a lighter job may fit
                    continue
                pending.remove(job)
                count += 1
                reporter.log(f"[{count}] {job.label} ({job.key})")
                running[executor.submit(job, job.id in redo)] = job
            executor.flush()  # one scheduling round: a cluster executor submits it as arrays
            if not running:
                if pending:  # cannot happen with a valid plan; never spin
                    raise RuntimeError(f"no runnable job among {len(pending)} pending: {pending[0].id}")
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                job = running.pop(future)
                outcome: JobOutcome = future.result()
                if outcome.status == "failed":
                    summary.failed[job.id] = outcome.error or "failed"
                    reporter.log(f"        FAILED {job.label}: {outcome.error}")
                    continue
                finished.add(job.id)
                (summary.ran if outcome.status == "ran" else summary.cached).append(job.id)
                if outcome.status == "ran":
                    reporter.log(f"        done {job.label} in {outcome.wall_time_s:.1f}s")
                else:  # another process built it while this run waited for its lock
                    reporter.log(f"        {job.label}: built by another run meanwhile; reused")
    except KeyboardInterrupt:
        abort = getattr(executor, "abort", None)
        if abort is not None:
            abort()
        raise
    finally:
        executor.close()


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
        if not store.is_done(stage, key):  # failed or skipped: no values
            continue
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
                    execution=meta.get("execution"),
                    wall_time_s=meta["wall_time_s"],
                    created=meta["created"],
                )
            )
    return records


def verify_records(path: Path, store: ArtifactStore) -> tuple[list[str], int]:
    """(problems, records checked): each record of `path` against the artifact its job key names.

    A record is backed when its artifact is in the store, intact (sizes and SHA-256 of every file), and its
    `values.json` holds the same value for the metric; each other record is one line naming its file line.
    """
    problems: list[str] = []
    records = read_records(path)
    values: dict[tuple[str, str], dict[str, object] | str] = {}
    for i, r in enumerate(records, 1):
        artifact = (r.stage, r.job_key)
        if artifact not in values:
            problem = store.verify(*artifact) if store.path(*artifact).is_dir() else "no such artifact in the cache"
            values[artifact] = problem or {v["metric"]: v["value"] for v in read_values(store, *artifact)}
        what = f"record {i} ({r.metric} of {r.defense} / {r.attack or '-'} seed {r.seed}, {r.stage}/{r.job_key})"
        found = values[artifact]
        if isinstance(found, str):
            problems.append(f"{what}: {found}")
        elif r.metric not in found:
            problems.append(f"{what}: its artifact has no {r.metric}")
        elif found[r.metric] != r.value:
            problems.append(f"{what}: recorded {r.value}, its artifact says {found[r.metric]}")
    return problems, len(records)


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


def run_folders(root: Path) -> list[Path]:
    """Run folders (holding plan.json) directly under `root`, newest first."""
    if not root.is_dir():
        return []
    found = [p.parent for p in root.glob("*/plan.json")]
    return sorted(found, key=lambda p: (p / "plan.json").stat().st_mtime, reverse=True)


def load_plan_info(run_dir: Path) -> dict:
    """The run's `plan.json` (suite as resolved); an unreadable one is an error naming it."""
    info = read_json_file(run_dir / "plan.json", "the run's plan")
    if not isinstance(info, dict) or "suite" not in info:
        raise MibenchError(f"{run_dir / 'plan.json'}: not a plan written by mibench run")
    return info
