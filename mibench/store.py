"""The content-addressed artifact store.

Artifacts live in `<root>/<stage>/<key>/`. A job writes into a temporary sibling folder, writes `done.json` last,
then renames the folder into place, so a killed job never leaves a half-written artifact that looks finished, and
a finished one is never lost. File locks keep two processes from building the same artifact at once.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock

DONE = "done.json"


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to `path` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")
    os.replace(tmp, path)


class ArtifactStore:
    """Artifacts addressed by (stage, key) under `root`."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)

    def path(self, stage: str, key: str) -> Path:
        """Folder of an artifact (it exists only when finished)."""
        return self.root / stage / key

    def is_done(self, stage: str, key: str) -> bool:
        """Whether the artifact is complete."""
        return (self.path(stage, key) / DONE).is_file()

    def meta(self, stage: str, key: str) -> dict[str, Any]:
        """The artifact's `done.json`."""
        return json.loads((self.path(stage, key) / DONE).read_text())

    def failure_path(self, stage: str, key: str) -> Path:
        """Where a failed job's error and traceback are kept (`<root>/failed/<stage>/<key>.json`)."""
        return self.root / "failed" / stage / f"{key}.json"

    def record_failure(self, stage: str, key: str, info: dict[str, Any]) -> None:
        """Keep a failed job's error (its artifact folder is never published)."""
        path = self.failure_path(stage, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, info)

    def failure(self, stage: str, key: str) -> dict[str, Any] | None:
        """The recorded failure of a job, if any."""
        path = self.failure_path(stage, key)
        return json.loads(path.read_text()) if path.is_file() else None

    def clear_failure(self, stage: str, key: str) -> None:
        """Forget a failure (the job has now succeeded)."""
        self.failure_path(stage, key).unlink(missing_ok=True)

    def lock(self, stage: str, key: str) -> FileLock:
        """An inter-process lock for building this artifact."""
        folder = self.root / stage
        folder.mkdir(parents=True, exist_ok=True)
        return FileLock(str(folder / f".{key}.lock"))

    @contextmanager
    def build(self, stage: str, key: str) -> Iterator[tuple[Path, dict[str, Any]]]:
        """Yield (temporary folder, meta dict); on success `meta` is written as `done.json` and the folder published.

        An exception discards the temporary folder and leaves any earlier artifact untouched.
        """
        final = self.path(stage, key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{key}.{uuid.uuid4().hex}.tmp"
        tmp.mkdir()
        meta: dict[str, Any] = {}
        try:
            yield tmp, meta
            write_json_atomic(tmp / DONE, meta)
            if final.exists():  # forced rebuild: swap the old artifact out, then delete it
                old = final.parent / f".{key}.{uuid.uuid4().hex}.old"
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
