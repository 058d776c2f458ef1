"""Host allocation (running.hostmem): large freed blocks are reused instead of faulted in again on every step."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mibench.running.hostmem import OPT_OUT_VARIABLE, _glibc

# Allocate, write and free a 64 MiB tensor (over glibc's largest mmap threshold, like the 50 MiB buffers of a CPU
# GAN step) ten times, after five warm-up rounds (glibc's aligned allocations take a few rounds to find a freed block
# that fits); print the minor page faults of those ten rounds and whether the setting took.
FAULTS_OF_TEN_ROUNDS = """
import resource, sys, torch
from mibench.running.execution import apply_execution
apply_execution({"threads": 1}, torch.device("cpu"))
from mibench.running.hostmem import keep_freed_host_memory
def round_trip():
    t = torch.empty(16 * 2**20)  # 64 MiB of float32
    t.fill_(1.0)
    del t
for _ in range(5):
    round_trip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    round_trip()
print(keep_freed_host_memory(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def faults_of_ten_rounds(allocator: str | None) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if k != OPT_OUT_VARIABLE}
    if allocator is not None:
        env[OPT_OUT_VARIABLE] = allocator
    out = subprocess.run(
        [sys.executable, "-c", FAULTS_OF_TEN_ROUNDS], capture_output=True, text=True, check=True, env=env
    )
    took, faults = out.stdout.split()
    return took == "True", int(faults)


@pytest.mark.skipif(_glibc() is None, reason="the setting exists on glibc only")
def test_a_job_reuses_large_freed_blocks_instead_of_faulting_them_in_again():
    pages = 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    took, faults = faults_of_ten_rounds(None)
    assert took and faults < pages // 10, faults  # the block stays in the heap
    took, faults = faults_of_ten_rounds("default")  # opted out: glibc maps and unmaps the block every round
    assert not took and faults >= 9 * pages, faults
