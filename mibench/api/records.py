"""Records: one JSON object per measured value, with its provenance. Reports are computed from records only."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from mibench.fileio import write_atomic

RECORDS_FILE = "records.jsonl"


class Record(BaseModel):
    """A measured value and where it came from.

    `higher_is_better` is the direction for the defender (see `mibench.api.metric`); `value` is None when undefined
    (e.g. a Fréchet distance over fewer than two successful reconstructions).
    """

    model_config = ConfigDict(extra="forbid")

    suite: str
    seed: int | None
    defense: str | None
    attack: str | None
    metric: str
    value: float | None
    higher_is_better: bool | None
    unit: str
    stage: str
    job_key: str
    details: dict[str, Any]
    versions: dict[str, Any]
    device: str
    wall_time_s: float
    created: str
    execution: dict[str, Any] | None = None  # threads and determinism settings the job ran under (None: older runs)


def clean_value(value: float) -> float | None:
    """NaN and infinities become None (JSON has no NaN)."""
    return None if value is None or not math.isfinite(value) else float(value)


def write_records(path: Path, records: list[Record]) -> None:
    """Write JSON lines atomically (temp file, then rename; a planted link is replaced, never followed)."""
    write_atomic(path, "".join(json.dumps(r.model_dump(mode="json"), sort_keys=True, allow_nan=False) + "\n"
                               for r in records))  # fmt: skip


MAX_RECORDS_BYTES = 1 << 30  # a table1 run's records are a few MB
MAX_RECORD_LINE = 1 << 20


def _bounded_lines(path: Path) -> Iterator[str]:
    """The lines of a records file, read one by one: a line or a file past its bound is an error naming it."""
    size = path.stat().st_size
    if size > MAX_RECORDS_BYTES:
        raise ValueError(f"{path}: {size:,} bytes; records files are limited to {MAX_RECORDS_BYTES:,}")
    with path.open("rb") as f:
        for i, raw in enumerate(iter(lambda: f.readline(MAX_RECORD_LINE + 1), b""), 1):
            if len(raw) > MAX_RECORD_LINE:
                raise ValueError(f"{path}:{i}: a line over {MAX_RECORD_LINE:,} bytes: not a records file")
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"{path}:{i}: not UTF-8 text (byte {exc.start}): not a records file") from None


def read_records(path: Path) -> list[Record]:
    """Read a records file; every problem names the file and line.

    A malformed line, a NaN or infinite value (JSON has none; mibench writes null), or two lines for the same
    measurement (job key, seed, defense, attack, metric) with different values are errors; an identical duplicate
    (two runs' files joined with `cat`) counts once, so it is never averaged as if it were another seed.
    """
    records: list[Record] = []
    first_line: dict[tuple, tuple[int, Record]] = {}
    first_job: dict[tuple, tuple[int, str]] = {}  # (seed, defense, attack, metric) -> the line and job it came from
    for i, line in enumerate(_bounded_lines(path), 1):
        if not line.strip():
            continue
        try:
            record = Record.model_validate_json(line)
        except ValueError as exc:
            raise ValueError(f"{path}:{i}: not a valid record: {exc}") from None
        if record.value is not None and not math.isfinite(record.value):
            raise ValueError(f"{path}:{i}: value {record.value} is not a finite number (undefined values are null)")
        key = (record.job_key, record.seed, record.defense, record.attack, record.metric)
        if key in first_line:
            j, earlier = first_line[key]
            if earlier.value != record.value:
                raise ValueError(
                    f"{path}:{i}: {record.metric} of job {record.job_key} is {record.value} here and {earlier.value} "
                    f"on line {j}: conflicting duplicate records"
                )
            continue
        first_line[key] = (i, record)
        slot = (record.seed, record.defense, record.attack, record.metric)
        if slot in first_job and first_job[slot][1] != record.job_key:
            j, other = first_job[slot]
            raise ValueError(
                f"{path}:{i}: {record.metric} of {record.defense} / {record.attack or '-'} seed {record.seed} comes "
                f"from job {record.job_key} here and from job {other} on line {j}: records of runs with other "
                "settings are not averaged as seeds (report each run folder on its own)"
            )
        first_job.setdefault(slot, (i, record.job_key))
        records.append(record)
    return records
