"""Executors: where jobs run. The runner decides what is ready; an executor runs it.

* `SequentialExecutor`: in this process, one job at a time (the default; what tests and CPUs use).
* `LocalPoolExecutor`: a pool of worker processes, one slot per visible GPU times `jobs_per_gpu`, each worker
  pinned to its GPU with CUDA_VISIBLE_DEVICES; on a CPU machine, `jobs` workers sharing the cores. With a packing
  budget (`packing`), jobs share a device by their measured memory and utilisation instead. Every job sets
  the suite's thread count itself (`execution.threads`), so a pool builds the bytes a sequential run builds;
  workers end with their parent, however it ends.
* `SubmititExecutor`: SLURM jobs through submitit, one job array per stage of the jobs that became ready together
  (`pip install 'mibench[slurm]'`); submitit's `local` and `debug` clusters run the same path without SLURM.
* `RayExecutor`: Ray tasks with GPU/CPU reservations on an existing cluster or a local one (`mibench[ray]`).

The interface is `slots` (jobs in flight at most), `fits(job)` (whether it may start now; only a packing budget says
no), `submit(job, force) -> Future[JobOutcome]`, `flush()` (hand the
submissions of one scheduling round over, so a cluster executor can batch them) and `close()`. Cluster executors need
the cache on storage every node sees; a job opens its own workspace there.

Jobs are idempotent and content-addressed, and every artifact is built under a file lock, so any executor can resume
any run, and two runs over one cache never build the same artifact twice. A job that raises leaves its error and
traceback in the store (`<cache>/failed/<stage>/<key>.json`) and returns a failed outcome; it never kills the run.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import traceback
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import torch

from mibench.api.progress import SILENT, Reporter
from mibench.errors import MibenchError
from mibench.running.execution import default_device
from mibench.running.packing import DeviceLedger, PackingBudget
from mibench.running.plan import Job
from mibench.running.stages import Workspace, run_job
from mibench.running.store import ArtifactStore, CorruptArtifact
from mibench.suite.settings import RaySpec, SlurmSpec


@dataclass(frozen=True)
class JobOutcome:
    """What happened to one job."""

    job_id: str
    status: Literal["ran", "cached", "failed"]
    wall_time_s: float = 0.0
    error: str | None = None


class Executor(Protocol):
    """What the runner needs from an executor (see the module docstring)."""

    slots: int

    def fits(self, job: Job) -> bool:
        """Whether the job may start now besides those in flight (a packing budget may say no)."""
        ...

    def submit(self, job: Job, force: bool) -> Future:
        """Start (or hold) a job; the future completes with its `JobOutcome`."""
        ...

    def flush(self) -> None:
        """Hand over what this scheduling round submitted."""
        ...

    def close(self) -> None:
        """Release workers; called once, after the last result."""
        ...


def execute(job: Job, workspace: Workspace, force: bool) -> JobOutcome:
    """Run one job under its artifact lock, unless it is (or meanwhile became) done; record a failure if it raises.

    An upstream artifact found corrupt while loading is taken out of use (the next run rebuilds it) and named in
    the job's error.
    """
    store = workspace.store
    report, timeout = workspace.reporter.log, workspace.lock_timeout
    try:
        with store.lock(job.stage, job.key, label=job.label, report=report, timeout=timeout):
            if not force and store.is_done(job.stage, job.key):  # another process built it meanwhile
                return JobOutcome(job.id, "cached")
            start = time.perf_counter()
            run_job(job, workspace)
        store.clear_failure(job.stage, job.key)
        return JobOutcome(job.id, "ran", time.perf_counter() - start)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, CorruptArtifact):
            store.quarantine(exc.stage, exc.key)
            error += "; it was set aside and is rebuilt by the next run"
        info = {"label": job.label, "error": error, "traceback": traceback.format_exc()}
        return JobOutcome(job.id, "failed", error=record_failure(store, job, info))


def record_failure(store: ArtifactStore, job: Job, info: dict[str, str]) -> str:
    """Keep a failure in the store; returns the error, extended when even that fails (a full or read-only disk)."""
    try:
        store.record_failure(job.stage, job.key, {**info, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    except OSError as exc:
        return f"{info['error']} (and its record could not be written: {exc.strerror or exc})"
    return info["error"]


class SequentialExecutor:
    """Jobs run here, one at a time."""

    def __init__(
        self, store: ArtifactStore, device: torch.device, reporter: Reporter, lock_timeout: float | None = None
    ):
        self.workspace = Workspace(store, device, reporter)
        self.workspace.lock_timeout = lock_timeout
        self.slots = 1

    def fits(self, job: Job) -> bool:
        """Always: `slots` alone bounds what runs."""
        return True

    def submit(self, job: Job, force: bool) -> Future:
        """Run now; the returned future is already done."""
        future: Future = Future()
        future.set_result(execute(job, self.workspace, force))
        return future

    def flush(self) -> None:
        """Nothing is held back."""

    def close(self) -> None:
        """Nothing to release."""


# Per worker process: its workspace (memoised data and models live as long as the worker).
_WORKER: dict[str, Workspace] = {}


def _init_worker(cache: str, device: str, slot_queue, lock_timeout: float | None) -> None:
    # Ctrl-C reaches the whole process group: the parent alone handles it and stops the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent(os.getppid())
    slot, visible = slot_queue.get()
    if visible is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible
    _WORKER["ws"] = Workspace(ArtifactStore(cache), torch.device(device), SILENT)
    _WORKER["ws"].lock_timeout = lock_timeout
    _WORKER["slot"] = slot


def _exit_with_parent(parent: int, poll_s: float = 1.0) -> None:
    """A daemon thread that ends this worker when its parent dies (even by SIGKILL, which runs no cleanup)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="mibench-parent-watch", daemon=True).start()


def _execute_in_worker(job: Job, force: bool) -> JobOutcome:
    return execute(job, _WORKER["ws"], force)


class LocalPoolExecutor:
    """A process pool: `jobs_per_gpu` workers per visible GPU, or `jobs` CPU workers.

    With a `budget` (`mibench.running.packing`), each device (each visible GPU; on a CPU machine, the machine) gets
    `budget.max_jobs_per_device` workers of its own, and a job starts only where the measured memory and utilisation
    of the jobs already there leave room for it (`fits`); a job of an unmeasured kind runs alone.
    """

    def __init__(
        self,
        store: ArtifactStore,
        device: torch.device,
        *,
        jobs: int | None = None,
        jobs_per_gpu: int = 1,
        lock_timeout: float | None = None,
        budget: PackingBudget | None = None,
    ):
        gpus = _visible_gpus() if device.type == "cuda" else []
        worker_device = "cuda" if gpus else str(device)  # each GPU worker sees one GPU, as device 0
        devices: list[str | None] = list(gpus) if gpus else [None]
        if budget is not None:
            per_device = budget.max_jobs_per_device
            groups = [[(i * per_device + k, d) for k in range(per_device)] for i, d in enumerate(devices)]
            self.ledger: DeviceLedger | None = DeviceLedger(budget, len(devices))
        elif gpus:
            groups = [[(i, gpus[i // jobs_per_gpu]) for i in range(len(gpus) * jobs_per_gpu)]]
            self.ledger = None
        else:
            groups = [[(i, None) for i in range(jobs or 1)]]
            self.ledger = None
        self.slots = sum(len(g) for g in groups)
        self.pools = [_start_pool(store, worker_device, group, lock_timeout) for group in groups]
        self._lock = threading.Lock()  # the ledger is released from the pools' threads

    def fits(self, job: Job) -> bool:
        """Whether a device has room for the job now (always, without a budget: `slots` bounds the pool)."""
        if self.ledger is None:
            return True
        with self._lock:
            return self.ledger.place(job) is not None

    def submit(self, job: Job, force: bool) -> Future:
        """Queue the job on the pool (with a budget: on the device `fits` found, booked until it ends)."""
        if self.ledger is None:
            return self.pools[0].submit(_execute_in_worker, job, force)
        with self._lock:
            device = self.ledger.place(job)
            if device is None:
                raise RuntimeError(f"{job.id}: submitted without room on any device (ask fits first)")
            self.ledger.start(job, device)
        outer: Future = Future()

        def finished(inner: Future) -> None:
            with self._lock:  # released before the runner hears of it, so its next round sees the room
                self.ledger.finish(job, device)
            if inner.exception() is not None:
                outer.set_exception(inner.exception())
            else:
                outer.set_result(inner.result())

        self.pools[device].submit(_execute_in_worker, job, force).add_done_callback(finished)
        return outer

    def flush(self) -> None:
        """The pool starts jobs as they are submitted."""

    def close(self) -> None:
        """Wait for the workers to exit."""
        for pool in self.pools:
            pool.shutdown(wait=True, cancel_futures=True)

    def abort(self) -> None:
        """Stop the workers now (an interrupted run): their unfinished artifacts are never published."""
        for pool in self.pools:
            for process in list(getattr(pool, "_processes", {}).values()):
                process.terminate()
            pool.shutdown(wait=True, cancel_futures=True)


def _start_pool(
    store: ArtifactStore, worker_device: str, assignments: list[tuple[int, str | None]], lock_timeout: float | None
) -> ProcessPoolExecutor:
    """Worker processes, one per (slot, visible GPU or None) assignment."""
    context = multiprocessing.get_context("spawn")  # CUDA and forked workers do not mix
    queue = context.Queue()
    for a in assignments:
        queue.put(a)
    return ProcessPoolExecutor(
        max_workers=len(assignments),
        mp_context=context,
        initializer=_init_worker,
        initargs=(str(store.root), worker_device, queue, lock_timeout),
    )


def _visible_gpus() -> list[str]:
    """The GPU ids this process may use (CUDA_VISIBLE_DEVICES, else all torch sees)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


# ---------------------------------------------------------------------------------------------------------------------
# Cluster executors


def run_detached(job: Job, cache: str, device: str | None, force: bool) -> JobOutcome:
    """A job in a process of a cluster (a SLURM task, a Ray worker): one workspace per process and cache.

    `device` None means the node's own default (CUDA when it has a GPU).
    """
    ws = _WORKER.get("ws")
    if ws is None or str(ws.store.root) != cache:
        ws = _WORKER["ws"] = Workspace(
            ArtifactStore(cache), torch.device(device) if device else default_device(), SILENT
        )
    return execute(job, ws, force)


def _missing_extra(package: str, extra: str) -> MibenchError:
    return MibenchError(f"--executor {extra} needs the {package!r} package: pip install 'mibench[{extra}]'")


class SubmititExecutor:
    """SLURM through submitit (or submitit's `local` and `debug` clusters, the same path without SLURM).

    `cluster` "local" runs each job in a subprocess, "debug" in this process when its result is awaited.
    Submissions are held until `flush`, then each stage's jobs go out as one job array with that stage's time limit.
    A job SLURM kills (time limit, node failure) comes back failed with submitit's error, and is recorded in the store
    like any failure, so `--retry-failed` picks it up.
    """

    def __init__(self, store: ArtifactStore, spec: SlurmSpec, *, cluster: str = "slurm", device: str | None = None):
        try:
            import submitit
        except ImportError as exc:
            raise _missing_extra("submitit", "slurm") from exc
        self.store, self.spec, self.device = store, spec, device
        folder = Path(spec.logs)
        self.executor = submitit.AutoExecutor(
            folder=folder if folder.is_absolute() else store.root / folder, cluster=cluster
        )
        params: dict[str, object] = {
            "name": "mibench",
            "gpus_per_node": spec.gpus_per_job,
            "cpus_per_task": spec.cpus_per_job,
            "mem_gb": spec.mem_gb,
            "slurm_array_parallelism": spec.array_parallelism,
        }
        params.update({f"slurm_{k}": getattr(spec, k) for k in ("partition", "account", "qos") if getattr(spec, k)})
        self.executor.update_parameters(**params)
        # debug jobs run in the awaiting thread, and jobs seed torch's global RNG: one at a time keeps them exact
        self.slots = 1 if cluster == "debug" else spec.max_jobs
        self._waiters = ThreadPoolExecutor(max_workers=self.slots)
        self._held: list[tuple[Job, bool, Future]] = []

    def fits(self, job: Job) -> bool:
        """Always: `slots` alone bounds what runs."""
        return True

    def submit(self, job: Job, force: bool) -> Future:
        """Hold the job until `flush`."""
        future: Future = Future()
        self._held.append((job, force, future))
        return future

    def flush(self) -> None:
        """One job array per stage among the held jobs."""
        held, self._held = self._held, []
        for stage in dict.fromkeys(job.stage for job, _, _ in held):
            group = [(job, force, future) for job, force, future in held if job.stage == stage]
            self.executor.update_parameters(timeout_min=self.spec.stage_time_min.get(stage, self.spec.time_min))
            with self.executor.batch():
                submitted = [
                    self.executor.submit(run_detached, job, str(self.store.root), self.device, force)
                    for job, force, _ in group
                ]
            for (job, _, future), handle in zip(group, submitted, strict=True):
                self._waiters.submit(self._await, job, handle, future)

    def _await(self, job: Job, handle, future: Future) -> None:
        try:
            outcome = handle.result()
        except Exception as exc:  # killed or lost by the scheduler: the job never reported back
            info = {"label": job.label, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            outcome = JobOutcome(job.id, "failed", error=record_failure(self.store, job, info))
        future.set_result(outcome)

    def close(self) -> None:
        """Wait for the threads that await jobs (the runner has collected every result by then)."""
        self._waiters.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """Ray tasks reserving `gpus_per_job` GPUs and `cpus_per_job` CPUs each (Ray sets CUDA_VISIBLE_DEVICES).

    Connects to `spec.address` or starts a local instance (shut down again on `close`). Workers are reused, so data
    and models a worker loaded stay memoised across its jobs.
    """

    def __init__(self, store: ArtifactStore, spec: RaySpec, *, device: str | None = None, **init: object):
        try:
            import ray
        except ImportError as exc:
            raise _missing_extra("ray", "ray") from exc
        self.ray, self.store = ray, store
        self._started = not ray.is_initialized()
        if self._started:
            ray.init(address=spec.address, include_dashboard=False, log_to_driver=False, **init)
        gpus = spec.gpus_per_job if ray.cluster_resources().get("GPU", 0) else 0
        self.device = device or ("cuda" if gpus else "cpu")
        self.task = ray.remote(num_gpus=gpus, num_cpus=spec.cpus_per_job, max_retries=0)(run_detached)
        resources = ray.cluster_resources()
        fits = resources.get("GPU", 0) / gpus if gpus else resources.get("CPU", 1) / spec.cpus_per_job
        self.slots = spec.max_jobs or max(1, int(fits))

    def fits(self, job: Job) -> bool:
        """Always: `slots` alone bounds what runs."""
        return True

    def submit(self, job: Job, force: bool) -> Future:
        """Start the task; its ObjectRef's future completes with the outcome."""
        ref = self.task.remote(job, str(self.store.root), self.device, force)
        future: Future = Future()

        def done(inner: Future) -> None:
            try:
                future.set_result(inner.result())
            except Exception as exc:  # the worker died: record it like any failure
                info = {"label": job.label, "error": f"{type(exc).__name__}: {exc}", "traceback": repr(exc)}
                future.set_result(JobOutcome(job.id, "failed", error=record_failure(self.store, job, info)))

        ref.future().add_done_callback(done)
        return future

    def flush(self) -> None:
        """Tasks start as they are submitted."""

    def close(self) -> None:
        """Shut down the local Ray instance this executor started."""
        if self._started:
            self.ray.shutdown()
