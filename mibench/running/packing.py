"""Packing several jobs onto one device by a measured memory and utilisation budget (issue #21).

Per-target GANs and LOMMA's students at 64x64 with batch 64 keep an H100 busy a fraction of the time; two to four of
them side by side finish in little more than the time of one. Which jobs may share a device is decided from a
*packing profile*: per job kind, the peak device memory and the share of the device's compute one job of that kind
keeps busy when it runs alone, as `benchmarks/stages.py --packing-out FILE` measures them. A job may join a device
when the device's jobs and it stay within the memory budget, their utilisation shares sum to at most
`max_utilisation`, and the device holds fewer than `max_jobs_per_device`. A job of a kind the profile does not list
runs alone, and any job runs alone on an empty device, so a missing or stale profile slows a run and never breaks it.

Packing decides only where and when a job runs, never what it computes: every job seeds its generators from its key
and sets its own threads (`mibench.running.stages`), so a packed run writes the records an unpacked one writes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mibench.errors import MibenchError
from mibench.running.plan import Job

MAX_PROFILE_BYTES = 1_000_000


@dataclass(frozen=True)
class Footprint:
    """What one job of a kind takes from a device when it runs alone.

    Attributes:
        memory_gib: Peak memory allocated on the device (GiB).
        utilisation: Share of the device's time its kernels keep it busy, in (0, 1].
    """

    memory_gib: float
    utilisation: float


def job_kind(job: Job) -> str:
    """The kind a profile lists a job under.

    "target:<defense>[+<defense>...]", "prior:<prior>", "invert:<attack>", "measure" or "evaluator".
    """
    payload = job.payload
    if job.stage == "target":
        return "target:" + "+".join(m["name"] for m in payload["defense"])
    if job.stage == "prior":
        return f"prior:{payload['prior']}"
    if job.stage == "invert":
        return f"invert:{payload['attack']['name']}"
    return job.stage


@dataclass(frozen=True)
class PackingBudget:
    """How many jobs of which kinds may share one device.

    Attributes:
        footprints: Per job kind (`job_kind`), its measured footprint.
        device_memory_gib: Memory of one device usable by jobs (GiB).
        max_utilisation: The most the utilisation shares of a device's jobs may sum to.
        max_jobs_per_device: Worker processes per device, hence jobs side by side at most.
    """

    footprints: Mapping[str, Footprint]
    device_memory_gib: float
    max_utilisation: float = 1.0
    max_jobs_per_device: int = 4

    def footprint(self, job: Job) -> Footprint:
        """The job's measured footprint; one that fills a device when its kind was not measured."""
        found = self.footprints.get(job_kind(job))
        return found if found is not None else Footprint(self.device_memory_gib, math.inf)


def read_budget(path: Path) -> PackingBudget:
    """A packing profile as written by `benchmarks/stages.py --packing-out`; a bad one is an error naming file and key.

    Format: {"device_memory_gib": float, "max_utilisation": float (optional, default 1), "max_jobs_per_device": int
    (optional, default 4), "footprints": {kind: {"memory_gib": float, "utilisation": float}}}; other keys (the GPU's
    name, the date) are kept by the file and ignored here.
    """
    path = Path(path)
    if not path.is_file():
        raise MibenchError(f"{path}: packing profile not found (write one with benchmarks/stages.py --packing-out)")
    if path.stat().st_size > MAX_PROFILE_BYTES:
        raise MibenchError(f"{path}: packing profile larger than {MAX_PROFILE_BYTES} bytes")
    try:
        raw = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MibenchError(f"{path}: packing profile is not JSON ({exc})") from None
    return budget_from_profile(raw, str(path))


def budget_from_profile(raw: object, where: str) -> PackingBudget:
    """The budget a parsed profile (`read_budget`'s format) describes; errors name `where` and the key."""
    if not isinstance(raw, dict):
        raise MibenchError(f"{where}: packing profile must be a JSON object")
    memory = _positive(raw.get("device_memory_gib"), where, "device_memory_gib")
    utilisation = _positive(raw.get("max_utilisation", 1.0), where, "max_utilisation")
    jobs = raw.get("max_jobs_per_device", 4)
    if not isinstance(jobs, int) or isinstance(jobs, bool) or not 1 <= jobs <= 64:
        raise MibenchError(f"{where}: max_jobs_per_device must be an integer from 1 to 64, got {jobs!r}")
    entries = raw.get("footprints")
    if not isinstance(entries, dict):
        raise MibenchError(f"{where}: footprints must be an object of job kind -> {{memory_gib, utilisation}}")
    footprints = {}
    for kind, entry in entries.items():
        key = f"footprints.{kind}"
        if not isinstance(entry, dict):
            raise MibenchError(f"{where}: {key} must be an object with memory_gib and utilisation")
        share = _positive(entry.get("utilisation"), where, f"{key}.utilisation")
        footprints[kind] = Footprint(_positive(entry.get("memory_gib"), where, f"{key}.memory_gib"), min(share, 1.0))
    return PackingBudget(footprints, memory, utilisation, jobs)


def _positive(value: object, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise MibenchError(f"{where}: {key} must be a positive number, got {value!r}")
    return float(value)


@dataclass
class DeviceLedger:
    """Which jobs run on which device now, against a `PackingBudget`."""

    budget: PackingBudget
    devices: int
    running: list[dict[str, Footprint]] = field(init=False)  # per device: job id -> its footprint
    peak: int = field(default=0, init=False)  # the most jobs one device held at once

    def __post_init__(self) -> None:
        self.running = [{} for _ in range(self.devices)]

    def place(self, job: Job) -> int | None:
        """The device the job may start on now (the least loaded that has room), or None."""
        need = self.budget.footprint(job)
        candidates = [d for d in range(self.devices) if self._fits(d, need)]
        if not candidates:
            return None
        return min(candidates, key=lambda d: (self.load(d), d))

    def _fits(self, device: int, need: Footprint) -> bool:
        jobs = self.running[device]
        if not jobs:  # anything may run alone
            return True
        if len(jobs) >= self.budget.max_jobs_per_device:
            return False
        memory = sum(f.memory_gib for f in jobs.values()) + need.memory_gib
        return memory <= self.budget.device_memory_gib and self.load(device) + need.utilisation <= (
            self.budget.max_utilisation + 1e-9
        )

    def load(self, device: int) -> float:
        """The summed utilisation shares of the device's jobs."""
        return sum(f.utilisation for f in self.running[device].values())

    def start(self, job: Job, device: int) -> None:
        """Book the job on the device."""
        self.running[device][job.id] = self.budget.footprint(job)
        self.peak = max(self.peak, len(self.running[device]))

    def finish(self, job: Job, device: int) -> None:
        """Release what the job booked."""
        self.running[device].pop(job.id, None)
