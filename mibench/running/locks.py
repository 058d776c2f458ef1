"""Artifact locks that say who holds them.

A lock is a `filelock.FileLock` on `<stage>/.<key>.lock`; its holder writes `<stage>/.<key>.lock.json` (pid, host,
start time, what it builds) so that a waiting run can say whom it waits for. A lock whose recorded holder is a
process of this host that no longer exists is stale (a lock file on a file system where locks outlive their
process, or a holder killed between lock and record) and is taken over with a message. A waiter reports the holder
when it starts waiting and every `REPORT_EVERY_S`; with a `timeout` it gives up with an error naming the holder.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Any

from filelock import FileLock, Timeout

from mibench.errors import MibenchError
from mibench.fileio import refuse_link, write_atomic

LockReporter = Callable[[str], None]
POLL_S = 0.5
REPORT_EVERY_S = 300.0


class LockTimeout(MibenchError):
    """Another process held an artifact's lock for longer than the run would wait."""


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def holder_text(holder: dict[str, Any] | None) -> str:
    """'pid P on HOST (since T)' of a recorded holder."""
    if not holder:
        return "an unknown process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return f"pid {holder.get('pid')} on {holder.get('host')} (since {since})"


def read_holder(path: Path) -> dict[str, Any] | None:
    """A holder record (pid, host, since), None if absent or unreadable."""
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def holder_gone(holder: dict[str, Any] | None) -> bool:
    """Whether a recorded holder is a process of this host that no longer exists."""
    return (
        holder is not None
        and holder.get("host") == socket.gethostname()
        and isinstance(holder.get("pid"), int)
        and holder["pid"] != os.getpid()
        and not pid_alive(holder["pid"])
    )


def holder_record(what: str) -> dict[str, Any]:
    """This process as a holder."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "what": what}


class ArtifactLock:
    """Context manager: acquire, record the holder, release on exit.

    Waiting is reported and stale locks are taken over as the module docstring says.
    """

    def __init__(self, path: Path, *, what: str, report: LockReporter | None = None, timeout: float | None = None):
        for own in (path, path.with_name(path.name + ".json")):
            refuse_link(own, "lock")  # the lock library opens with O_TRUNC: a planted link would empty its target
        self.path = path
        self.info_path = path.with_name(path.name + ".json")
        self.what = what
        self.report = report or (lambda _message: None)
        self.timeout = timeout
        self._lock = FileLock(str(path))

    def __enter__(self) -> ArtifactLock:
        start = time.monotonic()
        reported: float | None = None
        while True:
            try:
                self._lock.acquire(timeout=POLL_S)
                break
            except Timeout:
                holder = read_holder(self.info_path)
                if holder_gone(holder):
                    self.report(f"taking over the stale lock of {self.what}: its holder {holder_text(holder)} is gone")
                    self.path.unlink(missing_ok=True)
                    self.info_path.unlink(missing_ok=True)
                    self._lock = FileLock(str(self.path))
                    continue
                waited = time.monotonic() - start
                if self.timeout is not None and waited >= self.timeout:
                    raise LockTimeout(
                        f"{self.what} is being built by {holder_text(holder)}; gave up after {waited:.0f}s "
                        f"(if that process is stuck, stop it; if it is gone, delete {self.path})"
                    ) from None
                if reported is None or waited - reported >= REPORT_EVERY_S:
                    self.report(f"waiting for {self.what}: {holder_text(holder)} is building it")
                    reported = waited
        with suppress(OSError):  # the lock still works; only the waiters' message loses its holder
            write_atomic(self.info_path, json.dumps(holder_record(self.what)))
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.info_path.unlink(missing_ok=True)
        self._lock.release()


@contextmanager
def try_lock(path: Path) -> Iterator[bool]:
    """Hold `path`'s lock if it is free right now (yields True), else yield False without waiting."""
    if not path.parent.is_dir():
        yield True
        return
    if path.is_symlink():  # never opened (the lock library truncates): treated as held, so nothing is deleted
        yield False
        return
    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()
