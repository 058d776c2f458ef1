"""Writing files without following links: the one way mibench creates a file outside a fresh artifact folder."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from mibench.errors import MibenchError


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write a file through a new temporary sibling and a rename.

    Readers never see half a file, and a symbolic link planted where the file belongs is replaced by the file, never
    followed: nothing outside the folder is written (the temporary file is created exclusively, so no planted link
    can stand in for it either).
    """
    payload = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def refuse_link(path: Path, what: str) -> None:
    """A symbolic link where mibench keeps its own file or folder is an error naming it (never followed)."""
    if path.is_symlink():
        raise MibenchError(f"{path} is a symbolic link where mibench keeps its {what}; remove it (mibench never "
                           "follows links out of its own folders)")  # fmt: skip
