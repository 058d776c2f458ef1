"""How the runner sets up a job's process: device, threads, deterministic algorithms, allocator and global seeds.

Methods never call these; they receive the outcome through `mibench.api.RunContext`.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from mibench.running.hostmem import keep_freed_host_memory


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def configure_device(device: torch.device) -> None:
    """Throughput settings on CUDA: TF32 matmuls and convolutions.

    Results then differ from float32 in the last bits, as any GPU run's do; nothing changes on CPU. cuDNN autotuning
    follows the suite's `execution.deterministic` (see `apply_execution`).
    """
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.allow_tf32 = True


def available_cores() -> int:
    """The CPU cores this process may use (its affinity mask: what SLURM or taskset granted)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolved_execution(settings: dict[str, Any]) -> tuple[int, bool]:
    """(threads, deterministic) a job with the suite's `execution` settings runs under in this process."""
    return settings.get("threads") or available_cores(), bool(settings.get("deterministic", True))


def apply_execution(settings: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Fix the host allocator, threads and deterministic algorithms of a job; returns the latter two for provenance.

    The allocator (`hostmem`) changes where bytes live, never their values. The same settings give the same
    bytes for a job key on every executor of one machine (CPU reductions split work by thread, so the thread count is
    part of what makes a result). GPU kernels are not bitwise reproducible across runs even so (atomics in some
    backward passes), which the returned record says.
    """
    keep_freed_host_memory()  # no page faults on every CPU step's large buffers; values unchanged (see hostmem)
    threads, deterministic = resolved_execution(settings)
    torch.set_num_threads(threads)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's requirement, before its first use
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = device.type == "cuda" and not deterministic
    return {"threads": threads, "deterministic": deterministic, "bitwise_reproducible": device.type == "cpu"}


@contextmanager
def isolated_global_rng() -> Iterator[None]:
    """Run a block without moving torch's, numpy's or Python's global random streams.

    Loading an upstream artifact builds modules (whose initialisation draws from torch's global stream) only in the
    first job of a process that needs it; the memo would otherwise make a job's stream depend on process history.
    """
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA) and numpy's and Python's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
