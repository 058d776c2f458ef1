"""Host-memory allocation on CPU jobs: keep freed blocks for reuse instead of handing them back to the kernel.

glibc's malloc serves every block over its mmap threshold (128 KiB, rising to at most 32 MiB) with its own `mmap`
and returns it with `munmap` when freed. A CPU training step allocates and frees such blocks (buffers of 50 MiB in
the GAN below) every step, so each one comes back as fresh pages that the kernel must fault in and zero: measured on
the mini KED-MI GAN on 2 cores, 40% of the job's CPU time was kernel time, about 260,000 page faults a second. With
`mmap` off for large blocks and the heap never trimmed, freed blocks are reused in place: no page faults, the same
arithmetic on the same values (only where the bytes live changes), at the price of a peak resident size that is not
given back until the process ends (11% to 46% higher in the probes of BENCHMARKS.md).

Only glibc (Linux) has these knobs; elsewhere this does nothing. `MIBENCH_HOST_MALLOC=default` leaves glibc's
behaviour alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from functools import cache

# mallopt(3) parameter numbers from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER_TRIM = 2**31 - 1  # bytes of free heap top kept before trimming (mallopt takes an int): never, in practice
OPT_OUT_VARIABLE = "MIBENCH_HOST_MALLOC"


@cache
def keep_freed_host_memory() -> bool:
    """Ask glibc to serve large blocks from the heap and never trim it; True when the setting took effect.

    Idempotent and cheap after the first call, so every job start may call it (`apply_execution`).
    """
    if os.environ.get(OPT_OUT_VARIABLE, "").strip().lower() == "default":
        return False
    libc = _glibc()
    if libc is None:
        return False
    no_mmap = libc.mallopt(_M_MMAP_MAX, 0) == 1
    no_trim = libc.mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM) == 1
    return no_mmap and no_trim


def _glibc() -> ctypes.CDLL | None:
    """The process's C library when it is glibc (it alone has `gnu_get_libc_version` and these mallopt options)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return None
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return libc
