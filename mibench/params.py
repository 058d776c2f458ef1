"""Base class for every typed parameter block (method `Params`, suite sections)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Params(BaseModel):
    """Strict, immutable parameters: unknown keys are errors, values are validated and frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(Params):
    """For plug-ins without parameters."""
