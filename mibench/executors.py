"""Executors: where jobs run. The runner decides what is ready; an executor runs it, in this process or a pool.

* `SequentialExecutor`: in this process, one job at a time (the default; what tests and CPUs use).
* `LocalPoolExecutor`: a pool of worker processes, one slot per visible GPU times `jobs_per_gpu`, each worker
  pinned to its GPU with CUDA_VISIBLE_DEVICES; on a CPU machine, `jobs` workers sharing the cores.

Jobs are idempotent and content-addressed, and every artifact is built under a file lock, so any executor can resume
any run, and two runs over one cache never build the same artifact twice. A job that raises leaves its error and
traceback in the store (`<cache>/failed/<stage>/<key>.json`) and returns a failed outcome; it never kills the run.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import traceback
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Literal

import torch

from mibench.plan import Job
from mibench.progress import SILENT, Reporter
from mibench.stages import Workspace, run_job
from mibench.store import ArtifactStore


@dataclass(frozen=True)
class JobOutcome:
    """What happened to one job."""

    job_id: str
    status: Literal["ran", "cached", "failed"]
    wall_time_s: float = 0.0
    error: str | None = None


def execute(job: Job, workspace: Workspace, force: bool) -> JobOutcome:
    """Run one job under its artifact lock, unless it is (or meanwhile became) done; record a failure if it raises."""
    store = workspace.store
    try:
        with store.lock(job.stage, job.key):
            if not force and store.is_done(job.stage, job.key):  # another process built it meanwhile
                return JobOutcome(job.id, "cached")
            start = time.perf_counter()
            run_job(job, workspace)
        store.clear_failure(job.stage, job.key)
        return JobOutcome(job.id, "ran", time.perf_counter() - start)
    except Exception as exc:
        info = {
            "label": job.label,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        store.record_failure(job.stage, job.key, info)
        return JobOutcome(job.id, "failed", error=info["error"])


class SequentialExecutor:
    """Jobs run here, one at a time."""

    def __init__(self, store: ArtifactStore, device: torch.device, reporter: Reporter):
        self.workspace = Workspace(store, device, reporter)
        self.slots = 1

    def submit(self, job: Job, force: bool) -> Future:
        """Run now; the returned future is already done."""
        future: Future = Future()
        future.set_result(execute(job, self.workspace, force))
        return future

    def close(self) -> None:
        """Nothing to release."""


# Per worker process: its workspace (memoised data and models live as long as the worker).
_WORKER: dict[str, Workspace] = {}


def _init_worker(cache: str, device: str, slot_queue, threads: int) -> None:
    slot, visible = slot_queue.get()
    if visible is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible
    torch.set_num_threads(threads)
    _WORKER["ws"] = Workspace(ArtifactStore(cache), torch.device(device), SILENT)
    _WORKER["slot"] = slot


def _execute_in_worker(job: Job, force: bool) -> JobOutcome:
    return execute(job, _WORKER["ws"], force)


class LocalPoolExecutor:
    """A process pool: `jobs_per_gpu` workers per visible GPU, or `jobs` CPU workers."""

    def __init__(
        self,
        store: ArtifactStore,
        device: torch.device,
        *,
        jobs: int | None = None,
        jobs_per_gpu: int = 1,
        threads_per_job: int | None = None,
    ):
        gpus = _visible_gpus() if device.type == "cuda" else []
        if gpus:
            assignments = [(i, gpus[i // jobs_per_gpu]) for i in range(len(gpus) * jobs_per_gpu)]
            # Each worker sees one GPU, as device 0.
            worker_device = "cuda"
        else:
            assignments = [(i, None) for i in range(jobs or 1)]
            worker_device = str(device)
        self.slots = len(assignments)
        threads = threads_per_job or max(1, (os.cpu_count() or 1) // self.slots)
        context = multiprocessing.get_context("spawn")  # CUDA and forked workers do not mix
        queue = context.Queue()
        for a in assignments:
            queue.put(a)
        self.pool = ProcessPoolExecutor(
            max_workers=self.slots,
            mp_context=context,
            initializer=_init_worker,
            initargs=(str(store.root), worker_device, queue, threads),
        )

    def submit(self, job: Job, force: bool) -> Future:
        """Queue the job on the pool."""
        return self.pool.submit(_execute_in_worker, job, force)

    def close(self) -> None:
        """Wait for the workers to exit."""
        self.pool.shutdown(wait=True, cancel_futures=True)


def _visible_gpus() -> list[str]:
    """The GPU ids this process may use (CUDA_VISIBLE_DEVICES, else all torch sees)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]
