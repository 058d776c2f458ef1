"""Canonical JSON, content keys and derived seeds.

Every cached artifact is addressed by the SHA-256 of the canonical JSON of everything that determines it, so that
key order in a YAML file or the spelling of a default never changes a key, and any change of a value always does.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

KEY_LENGTH = 20


def canonical_json(obj: Any) -> str:
    """Serialise `obj` deterministically: sorted keys, no whitespace, NaN forbidden."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_key(payload: Any) -> str:
    """Hex key of a JSON-serialisable payload."""
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:KEY_LENGTH]


def derive_seed(*parts: Any) -> int:
    """A 31-bit seed derived from `parts` (e.g. the run seed and a job's role).

    Jobs of one run get decorrelated streams, while the same parts always give the same seed.
    """
    digest = hashlib.sha256(canonical_json(list(parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**31 - 1)


def hash_file(path: Path) -> str:
    """Hex SHA-256 of one file, read in blocks (never memoised: integrity checks must read the bytes)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
