"""What a job takes from its device, and what running several side by side gains (issue #21).

* `footprint`: the peak memory and the busy share of one run of a stage. On CUDA: the allocator's peak reservation
  plus a CUDA context, and the summed kernel time (torch.profiler) over the wall time. On a CPU: the process's peak
  resident memory (Linux, reset first through /proc/self/clear_refs) and its CPU time over wall time x threads.
* `corun_speedup`: n spawned processes each run the same prior-training probe at once, after warm-ups and a barrier;
  the aggregate speed-up over one alone is n x t(1) / t(n). It is what the packed projection assumes for n jobs.

`mibench run --packing PROFILE` reads the footprints `benchmarks/stages.py --packing-out PROFILE` writes.
"""

from __future__ import annotations

import json
import multiprocessing
import queue
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

GIB = 1024**3
CUDA_CONTEXT_GIB = 0.5  # a CUDA context and cuDNN/cuBLAS workspaces per worker process, outside the allocator


def _clear_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
        return True
    except OSError:
        return False


def _peak_rss_gib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / GIB
    except OSError:
        pass
    return None


def kernel_seconds(prof: Any) -> float:
    """Summed device time of the kernels a profile recorded (seconds)."""
    total_us = 0.0
    for event in prof.key_averages():
        if getattr(event, "device_type", None) is not None and "CUDA" in str(event.device_type):
            total_us += getattr(event, "self_device_time_total", 0.0)
    return total_us / 1e6


def footprint(device: torch.device, run: Callable[[], Any]) -> dict[str, float | None]:
    """Peak memory (GiB) and utilisation share of one call of `run` (already warmed up)."""
    if device.type == "cuda":
        from torch.profiler import ProfilerActivity, profile

        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            run()
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - start
        memory = torch.cuda.max_memory_reserved(device) / GIB + CUDA_CONTEXT_GIB
        return {"memory_gib": memory, "utilisation": min(1.0, kernel_seconds(prof) / wall), "seconds": wall}
    cleared = _clear_peak_rss()
    cpu0, start = time.process_time(), time.perf_counter()
    run()
    wall = time.perf_counter() - start
    busy = (time.process_time() - cpu0) / (wall * torch.get_num_threads())
    return {"memory_gib": _peak_rss_gib() if cleared else None, "utilisation": min(1.0, busy), "seconds": wall}


def _corun_worker(make_run: Callable[[], Callable[[], Any]], barrier: Any, out: Any) -> None:
    run = make_run()
    run()  # warm-up, before the others start timing
    barrier.wait()
    start = time.perf_counter()
    run()
    out.put(time.perf_counter() - start)


def corun_speedup(make_run: Callable[[], Callable[[], Any]], counts: tuple[int, ...]) -> dict[int, dict[str, float]]:
    """Per n in `counts`: the wall time of n simultaneous runs (the slowest) and the speed-up n x t(1) / t(n).

    `make_run` must be picklable (a module-level function or a `functools.partial` of one): each spawned process
    builds its own run, so nothing is shared but the device.
    """
    context = multiprocessing.get_context("spawn")
    seconds: dict[int, float] = {}
    for n in counts:
        barrier, out = context.Barrier(n), context.Queue()
        workers = [context.Process(target=_corun_worker, args=(make_run, barrier, out)) for _ in range(n)]
        for w in workers:
            w.start()
        times: list[float] = []
        while len(times) < n:
            try:
                times.append(out.get(timeout=5))
            except queue.Empty:
                dead = [w.exitcode for w in workers if w.exitcode not in (None, 0)]
                if dead:  # a crashed worker would leave the others waiting at the barrier for ever
                    for w in workers:
                        w.kill()
                    raise RuntimeError(f"a co-run worker exited with code {dead[0]}") from None
        for w in workers:
            w.join()
        seconds[n] = max(times)
    one = seconds[min(seconds)] / min(seconds)
    return {n: {"seconds": s, "speedup": n * one / s} for n, s in seconds.items()}


def packing_profile(machine: str, memory_gib: float, footprints: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The packing profile of measured footprints (the format `mibench.running.packing.read_budget` reads): 90% of the
    device's memory, kinds whose memory was measured, busy shares of at least 1%."""
    usable = {k: v for k, v in footprints.items() if v.get("memory_gib") and v.get("utilisation")}
    return {
        "machine": machine,
        "date": time.strftime("%Y-%m-%d"),
        "device_memory_gib": round(memory_gib * 0.9, 2),  # headroom for fragmentation
        "max_utilisation": 1.0,
        "max_jobs_per_device": 4,
        "footprints": {
            k: {"memory_gib": round(v["memory_gib"], 3), "utilisation": round(max(v["utilisation"], 0.01), 3)}
            for k, v in usable.items()
        },
    }


def write_profile(path: Path, machine: str, memory_gib: float, footprints: dict[str, dict[str, Any]]) -> None:
    """Write `packing_profile` for `mibench run --packing`."""
    path.write_text(json.dumps(packing_profile(machine, memory_gib, footprints), indent=2) + "\n")
