"""The suite: what a YAML suite file may say, how it is read, and the checks it passes before any work runs.

`schema` holds the file's shape (pydantic models), `settings` the execution, cluster, output and report sections,
`text` the bounded YAML reading and `${VAR}` expansion, `checks` the cross-entry checks, `resolved` the validated
suite and `loading` the reading itself. This package may import `mibench.api` and the base modules below it, never
the running or reporting packages above it. The names below are the suite's public surface.
"""

from mibench.api.recipe import TrainSpec
from mibench.suite.loading import load_suite, resolve_suite
from mibench.suite.resolved import ResolvedDefense, ResolvedMethod, ResolvedSuite
from mibench.suite.schema import (
    MAX_CLASSES,
    AttackSpec,
    DataSpec,
    DefenseSpec,
    MethodSpec,
    ModelSpec,
    PublicDataSpec,
    Suite,
    scale_budget,
)

__all__ = [
    "MAX_CLASSES",
    "AttackSpec",
    "DataSpec",
    "DefenseSpec",
    "MethodSpec",
    "ModelSpec",
    "PublicDataSpec",
    "ResolvedDefense",
    "ResolvedMethod",
    "ResolvedSuite",
    "Suite",
    "TrainSpec",
    "load_suite",
    "resolve_suite",
    "scale_budget",
]
