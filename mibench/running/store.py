"""The content-addressed artifact store.

Artifacts live in `<root>/<stage>/<key>/`. A job writes into a temporary sibling folder, writes `done.json` last,
then renames the folder into place, so a killed job never leaves a half-written artifact that looks finished, and
a finished one is never lost (a forced rebuild swaps the old artifact out only once the new one is complete).

Integrity: `done.json` lists the size and SHA-256 of every file the artifact holds. `verify` checks them (sizes only,
or the hashes too), and every read through the store (`read_bytes`, `read_json`, `load_tensors`) checks the hash of
the bytes it read, so a flipped byte, a truncated or missing file, or an unreadable marker is a `CorruptArtifact`
naming the stage, key and file, never a silently wrong number. File locks (`locks.ArtifactLock`) keep two processes
from building the same artifact at once.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mibench.errors import MibenchError
from mibench.fileio import refuse_link, write_atomic
from mibench.hashing import KEY_LENGTH, hash_file
from mibench.running.locks import ArtifactLock, LockReporter, try_lock

DONE = "done.json"
FILES = "files"  # the marker's manifest: {relative name: {"size": bytes, "sha256": hex}}
CACHE_MARKER = ".mibench-cache"  # says that a folder is a mibench cache: mibench deletes nothing elsewhere
STAGE_FOLDERS = ("evaluator", "target", "prior", "invert", "measure")  # the job stages, in dependency order
# What a cache's top folder may hold: stage folders, preprocessed data, failure records, the SLURM executor's default
# log folder (`cluster.slurm.logs`), the marker.
OWN_ENTRIES = frozenset((*STAGE_FOLDERS, "data", "failed", "slurm-logs", CACHE_MARKER))
# Folders a build leaves beside finished artifacts: `.{key}.{uuid4 hex}.{tmp|old|corrupt}`, exactly as `build` and
# `quarantine` name them; nothing else in a stage folder is ever deleted.
_SPARE = re.compile(rf"^\.([0-9a-f]{{{KEY_LENGTH}}})\.[0-9a-f]{{32}}\.(tmp|old|corrupt)$")
LEGACY = "written before integrity records; `mibench cache verify --adopt-legacy` records its files instead"


class CorruptArtifact(MibenchError):
    """A finished artifact whose files do not match its marker (or whose marker is unreadable)."""

    def __init__(self, stage: str, key: str, problem: str):
        self.stage, self.key, self.problem = stage, key, problem
        super().__init__(f"artifact {stage}/{key} is corrupt: {problem}")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to `path` (see `write_atomic`)."""
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


def read_json_file(path: Path, what: str) -> Any:
    """A JSON file mibench wrote; a missing, truncated or non-UTF-8 file is one error naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MibenchError(f"{path}: {what} not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MibenchError(f"{path}: {what} is unreadable (truncated or not JSON: {exc})") from None


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def file_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of every file under `folder` (the marker excepted), by path relative to it."""
    manifest = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != DONE):
        manifest[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "sha256": hash_file(path)}
    return manifest


def _linked(folder: Path, name: str) -> bool:
    """Whether the artifact folder, its stage folder, or any part of `name` inside it is a symbolic link."""
    path = folder
    if folder.parent.is_symlink() or folder.is_symlink():
        return True
    for part in Path(name).parts:
        path = path / part
        if path.is_symlink():
            return True
    return False


def _out_of_space(exc: BaseException, folder: Path) -> bool:
    """Whether a write failed for want of space: ENOSPC, or torch's zip writer's 'unexpected pos' on a full disk."""
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOSPC
    text = str(exc)
    torch_writer = "unexpected pos" in text or "PytorchStreamWriter failed" in text
    return torch_writer and shutil.disk_usage(folder).free < _FULL_BELOW


_FULL_BELOW = 64 << 20  # bytes free under which a failed torch write is taken for a full disk


@dataclass
class CacheAudit:
    """What `ArtifactStore.audit` found: artifacts checked, invalid ones (and why), litter removed."""

    checked: int = 0
    invalid: dict[str, str] = field(default_factory=dict)  # "stage/key" -> problem
    removed: list[Path] = field(default_factory=list)
    repaired: bool = False
    adopted: int = 0  # legacy artifacts whose files were recorded

    def lines(self) -> list[str]:
        """A human summary, one line per invalid artifact."""
        out = [f"{name}: {problem}" for name, problem in self.invalid.items()]
        out += [f"removed {path} (left by an interrupted build)" for path in self.removed]
        verdict = f"{self.checked} artifacts checked, {len(self.invalid)} invalid"
        if self.adopted:
            verdict += f", {self.adopted} written before integrity records adopted"
        if self.invalid:
            verdict += "; set aside, the next run rebuilds them" if self.repaired else "; --repair sets them aside"
        return [*out, verdict]


class ArtifactStore:
    """Artifacts addressed by (stage, key) under `root`."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    def path(self, stage: str, key: str) -> Path:
        """Folder of an artifact (it exists only when finished)."""
        return self.root / stage / key

    def claim(self) -> None:
        """Make `root` a mibench cache (`CACHE_MARKER`), or refuse it before any work.

        A new or empty folder, or one that holds only what mibench puts in a cache (a cache written before the
        marker), gets the marker; a folder holding anything else is refused, naming it, so that a mistyped `--cache`
        (a project folder, a home folder) is never written into or cleaned.
        """
        if self.is_claimed():
            return
        if self.root.exists() and not self.root.is_dir():
            raise MibenchError(f"the cache {self.root} is a file, not a folder")
        foreign = sorted(p.name for p in self.root.iterdir() if p.name not in OWN_ENTRIES) if self.root.is_dir() else []
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise MibenchError(
                f"{self.root} is not a mibench cache (no {CACHE_MARKER} in it) and holds what mibench did not write "
                f"({shown}): give a new or empty folder as the cache (output.cache / --cache)"
            )
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            marker = {"mibench": "artifact cache", "since": time.strftime("%Y-%m-%d")}
            write_json_atomic(self.root / CACHE_MARKER, marker)
        except OSError as exc:  # e.g. under /proc: found here, before any job, not job by job
            raise MibenchError(f"the cache {self.root} cannot be used: {exc.strerror or exc}") from None

    def is_claimed(self) -> bool:
        """Whether `root` carries the cache marker."""
        return (self.root / CACHE_MARKER).is_file()

    def is_done(self, stage: str, key: str) -> bool:
        """Whether the artifact has a finished marker (see `verify` for whether it is intact)."""
        return (self.path(stage, key) / DONE).is_file()

    def meta(self, stage: str, key: str) -> dict[str, Any]:
        """The artifact's `done.json`; an unreadable marker, or one without a file list, is `CorruptArtifact`."""
        path = self.path(stage, key) / DONE
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CorruptArtifact(stage, key, f"{DONE} is missing") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptArtifact(stage, key, f"{DONE} is unreadable ({exc})") from None
        if not isinstance(meta, dict) or not isinstance(meta.get(FILES), dict):
            raise CorruptArtifact(stage, key, f"{DONE} lists no files ({LEGACY})")
        return meta

    def adopt_legacy(self, stage: str, key: str) -> bool:
        """Record the current files of an artifact finished before integrity records (trusting them as before).

        Returns whether the marker was such a legacy one; anything else is left as it is.
        """
        path = self.path(stage, key) / DONE
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return False
        if not isinstance(meta, dict) or FILES in meta:
            return False
        write_json_atomic(path, {**meta, FILES: file_manifest(path.parent)})
        return True

    def verify(self, stage: str, key: str, *, hashes: bool = True) -> str | None:
        """None when the artifact is intact, else what is wrong (sizes always; SHA-256 too when `hashes`)."""
        try:
            files = self.meta(stage, key)[FILES]
        except CorruptArtifact as exc:
            return exc.problem
        folder = self.path(stage, key)
        for name, expected in files.items():
            path = folder / name
            if _linked(folder, name):
                return f"{name} is reached through a symbolic link (mibench never follows links out of its cache)"
            if not path.is_file():
                return f"{name} is missing"
            size = path.stat().st_size
            if size != expected["size"]:
                return f"{name} has {size} bytes, its marker says {expected['size']}"
            if hashes and hash_file(path) != expected["sha256"]:
                return f"{name} does not match its SHA-256 (bytes changed since it was written)"
        return None

    def read_bytes(self, stage: str, key: str, name: str) -> bytes:
        """A file of a finished artifact, checked against its marker's size and SHA-256."""
        expected = self.meta(stage, key)[FILES].get(name)
        if expected is None:
            raise CorruptArtifact(stage, key, f"its marker does not list {name}")
        if _linked(self.path(stage, key), name):
            raise CorruptArtifact(stage, key, f"{name} is reached through a symbolic link")
        try:
            data = (self.path(stage, key) / name).read_bytes()
        except FileNotFoundError:
            raise CorruptArtifact(stage, key, f"{name} is missing") from None
        if len(data) != expected["size"] or sha256_bytes(data) != expected["sha256"]:
            raise CorruptArtifact(stage, key, f"{name} does not match its size and SHA-256 (truncated or changed)")
        return data

    def read_json(self, stage: str, key: str, name: str) -> Any:
        """A verified JSON file of a finished artifact."""
        return json.loads(self.read_bytes(stage, key, name))

    def load_tensors(self, stage: str, key: str, name: str) -> Any:
        """A verified tensor file of a finished artifact, loaded with `weights_only=True` onto the CPU."""
        data = self.read_bytes(stage, key, name)
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)

    def quarantine(self, stage: str, key: str) -> None:
        """Take an invalid artifact out of use (renamed aside; `clean_spares` deletes it), so it is rebuilt."""
        final = self.path(stage, key)
        if final.exists():
            os.replace(final, final.parent / f".{key}.{uuid.uuid4().hex}.corrupt")

    def clean_spares(self) -> list[Path]:
        """Delete temporary, swapped-out and quarantined folders that no live build holds; returns what went.

        A swapped-out artifact whose replacement never arrived (a kill between `build`'s two renames) is put back
        instead.

        A builder holds its key's lock while its temporary folder exists, so a folder whose lock is free is litter
        (of a killed run), and one whose lock is held belongs to a build in progress (of this or another run).
        """
        removed: list[Path] = []
        if not self.is_claimed():  # only a folder mibench made its cache is ever cleaned
            return removed
        for stage in STAGE_FOLDERS:
            stage_dir = self.root / stage
            if stage_dir.is_symlink() or not stage_dir.is_dir():
                continue
            for spare in sorted(stage_dir.iterdir()):
                match = _SPARE.match(spare.name)
                if match is None or spare.is_symlink() or not spare.is_dir():
                    continue
                key = match.group(1)
                with try_lock(self.lock_path(stage, key)) as free:
                    if not free:
                        continue
                    final = self.path(stage, key)
                    if match.group(2) == "old" and not final.exists() and (spare / DONE).is_file():
                        # killed between a forced rebuild's two renames: the old artifact is the only finished copy
                        os.replace(spare, final)
                        continue
                    shutil.rmtree(spare, ignore_errors=True)
                    removed.append(spare)
        return removed

    def audit(self, *, repair: bool = False, adopt_legacy: bool = False) -> CacheAudit:
        """Verify every artifact of every stage (sizes and SHA-256).

        With `repair`, invalid artifacts are set aside (the next run rebuilds them) and interrupted builds' litter
        is deleted.
        """
        audit = CacheAudit(repaired=repair)
        for stage in STAGE_FOLDERS:
            folder = self.root / stage
            for artifact in sorted(folder.iterdir()) if folder.is_dir() else ():
                if artifact.name.startswith(".") or not artifact.is_dir():
                    continue
                audit.checked += 1
                if adopt_legacy and self.adopt_legacy(stage, artifact.name):
                    audit.adopted += 1
                problem = self.verify(stage, artifact.name)
                if problem is not None:
                    audit.invalid[f"{stage}/{artifact.name}"] = problem
                    if repair:
                        self.quarantine(stage, artifact.name)
        if repair:
            audit.removed = self.clean_spares()
        return audit

    def failure_path(self, stage: str, key: str) -> Path:
        """Where a failed job's error and traceback are kept (`<root>/failed/<stage>/<key>.json`)."""
        return self.root / "failed" / stage / f"{key}.json"

    def record_failure(self, stage: str, key: str, info: dict[str, Any]) -> None:
        """Keep a failed job's error (its artifact folder is never published)."""
        path = self.failure_path(stage, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, info)

    def failure(self, stage: str, key: str) -> dict[str, Any] | None:
        """The recorded failure of a job, if any (an unreadable record counts as none: the job is retried)."""
        path = self.failure_path(stage, key)
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return info if isinstance(info, dict) and "error" in info else None

    def clear_failure(self, stage: str, key: str) -> None:
        """Forget a failure (the job has now succeeded)."""
        self.failure_path(stage, key).unlink(missing_ok=True)

    def lock_path(self, stage: str, key: str) -> Path:
        """The lock file of an artifact."""
        return self.root / stage / f".{key}.lock"

    def lock(
        self, stage: str, key: str, *, label: str = "", report: LockReporter | None = None, timeout: float | None = None
    ) -> ArtifactLock:
        """An inter-process lock for building this artifact, naming its holder (see `locks.ArtifactLock`)."""
        path = self.lock_path(stage, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return ArtifactLock(
            path, what=f"{stage}/{key}" + (f" ({label})" if label else ""), report=report, timeout=timeout
        )

    @contextmanager
    def build(self, stage: str, key: str) -> Iterator[tuple[Path, dict[str, Any]]]:
        """Yield (temporary folder, meta dict); on success `meta` and the file manifest become `done.json`.

        An exception discards the temporary folder and leaves any earlier artifact untouched; a forced rebuild swaps
        the old artifact out only after the new one is complete, and puts it back if the swap fails.
        """
        final = self.path(stage, key)
        refuse_link(final.parent, f"{stage} artifacts")
        refuse_link(final, f"artifact {stage}/{key}")
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{key}.{uuid.uuid4().hex}.tmp"
        tmp.mkdir()
        meta: dict[str, Any] = {}
        try:
            yield tmp, meta
            write_json_atomic(tmp / DONE, {**meta, FILES: file_manifest(tmp)})
            if final.exists():
                old = final.parent / f".{key}.{uuid.uuid4().hex}.old"
                os.replace(final, old)
                try:
                    os.replace(tmp, final)
                except BaseException:
                    os.replace(old, final)
                    raise
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
        except (OSError, RuntimeError) as exc:
            if _out_of_space(exc, final.parent):
                free = shutil.disk_usage(final.parent).free
                raise MibenchError(
                    f"no space left on the device of {self.root} while writing artifact {stage}/{key} "
                    f"({free / 2**20:.0f} MiB free): free some, or give another --cache; nothing finished was lost"
                ) from exc
            raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
