"""A suite after validation: every method entry resolved to its registered class and typed parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mibench.params import Params
from mibench.suite.schema import Suite


@dataclass(frozen=True)
class ResolvedMethod:
    """A method entry after validation: its class and typed parameters."""

    name: str
    label: str
    cls: type
    params: Params
    defenses: tuple[str, ...] | None = None  # an attack's restriction to these defense labels

    def params_json(self) -> dict[str, Any]:
        """Validated params with defaults filled in, as JSON (what cache keys hash)."""
        return self.params.model_dump(mode="json")


@dataclass(frozen=True)
class ResolvedDefense:
    """A defense entry after validation: one or more stacked defenses and the label tables use."""

    label: str
    members: list[ResolvedMethod]
    family: str | None = None  # the suite entry's label, for a row a sweep expanded (see `mibench.suite.sweeps`)
    setting: tuple[tuple[str, Any], ...] = ()  # the swept values of that row

    @property
    def name(self) -> str:
        """Member names joined by '+'."""
        return "+".join(m.name for m in self.members)


@dataclass(frozen=True)
class ResolvedSuite:
    """A validated suite with every method and architecture resolved against the registries."""

    suite: Suite
    source: str
    defenses: list[ResolvedDefense]
    attacks: list[ResolvedMethod]
    metrics: list[ResolvedMethod]
    dataset: ResolvedMethod
    public_dataset: ResolvedMethod | None
    target_arch: ResolvedMethod
    evaluator_arch: ResolvedMethod
    evaluator_dataset: ResolvedMethod | None = None  # the evaluator's own training data, when it differs
