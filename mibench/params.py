"""Base class for every typed parameter block (method `Params`, suite sections)."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer


class Params(BaseModel):
    """Strict, immutable parameters: unknown keys are errors, values are validated and frozen.

    Dumps hash into cache keys. A field added to an existing block whose default leaves the computation as it was
    (an option off) is named in `added_later` with that default: params holding it dump as they did before the field
    existed, so adding it changes no key; any other value is dumped, and keyed.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    added_later: ClassVar[dict[str, Any]] = {}

    @model_serializer(mode="wrap")
    def _without_added_defaults(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            for name, default in self.added_later.items():
                if name in data and getattr(self, name) == default:
                    del data[name]
        return data


class NoParams(Params):
    """For plug-ins without parameters."""
