"""The undefended baseline ("-" / "Unprotected" in the papers' tables)."""

from __future__ import annotations

from typing import ClassVar

from mibench.api.defense import Defense
from mibench.params import NoParams
from mibench.registry import DEFENSES


@DEFENSES.register
class NoDefense(Defense):
    """Plain cross-entropy training with the shared recipe; every other defense is compared against it."""

    name: ClassVar[str] = "none"
    paper: ClassVar[str] = "baseline (no defense)"
    Params = NoParams
