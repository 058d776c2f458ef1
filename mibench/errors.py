"""Exceptions with messages meant for the person who wrote the suite or plugged in a method."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MibenchError(Exception):
    """Base class of every error mibench raises on purpose; the CLI prints its message and exits 2."""


class RunInterrupted(MibenchError):
    """Ctrl-C or SIGTERM stopped a run; finished artifacts and records are kept (the message says how to resume)."""


class ConfigError(MibenchError):
    """A suite file is invalid. Holds every problem found, each naming the key path."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        noun = "problem" if len(problems) == 1 else "problems"
        lines = [f"{source}: {len(problems)} {noun}"] + [f"  - {p}" for p in problems]
        super().__init__("\n".join(lines))


class UnknownNameError(MibenchError, KeyError):
    """A name that no registry entry carries; the message suggests the closest names."""

    def __init__(self, kind: str, name: str, allowed: Iterable[str]):
        self.kind = kind
        self.name = name
        self.allowed = sorted(allowed)
        super().__init__(unknown_name_message(kind, name, self.allowed))

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class AccessDenied(MibenchError):
    """An attack asked the target for more than the access it declared."""


class QueryBudgetExceeded(MibenchError):
    """An attack used more target queries than the cap allows."""


class DataError(MibenchError):
    """A dataset file is missing or malformed; the message names the file and where it should be."""


class CheckpointError(MibenchError):
    """A checkpoint does not match the architecture it is loaded into."""


def suggest(name: str, allowed: Iterable[str]) -> list[str]:
    """Return the allowed names closest to `name` (for did-you-mean hints).

    Only names about as close as the best one are kept, so that 'gmii' suggests
    'gmi' and not also every other name ending in 'gmi'.
    """
    matches = difflib.get_close_matches(name, list(allowed), n=3, cutoff=0.6)
    if not matches:
        return []
    scores = [difflib.SequenceMatcher(None, name, m).ratio() for m in matches]
    return [m for m, s in zip(matches, scores, strict=True) if s >= scores[0] - 0.1]


def unknown_name_message(kind: str, name: str, allowed: Iterable[str]) -> str:
    """Format "unknown <kind> 'x'; did you mean 'y'? allowed: ..."."""
    allowed = sorted(allowed)
    hint = suggest(name, allowed)
    text = f"unknown {kind} {name!r}"
    if hint:
        text += "; did you mean " + " or ".join(repr(h) for h in hint) + "?"
    return text + f" allowed: {', '.join(allowed) if allowed else '(none registered)'}"
