"""The interfaces a method author implements or calls, importable from this one place.

A defense subclasses `Defense` (model, data, params -> a trained target), an attack subclasses `Attack` or
`GenerativeAttack` (declares its `Access` level; a target, through a `TargetOracle`, -> `Reconstructions`), a metric
subclasses `Metric` (`MeasureInputs` -> `Measurement`s). Each registers with its registry's decorator
(`@DEFENSES.register`, ...) and declares its typed `Params`, whose defaults are the official code's. Methods receive
a `RunContext` (device, seed, progress) and never pick devices or seeds themselves; what a run measured is a
`Record`. The modules here may import the models, data and base modules below them, never the method packages,
the machinery (`training`, `inversion`, `gan`), the suite, running or reporting above them.
"""

from mibench.api.attack import Attack, DataInfo, GenerativeAttack, IdentityLoss, PriorSpec, Reconstructions
from mibench.api.context import RunContext
from mibench.api.defense import (
    Criterion,
    Defense,
    ExtraTerm,
    RecipeParams,
    TrainedTarget,
    TrainingSetup,
    cross_entropy,
)
from mibench.api.metric import MeasureInputs, Measurement, Metric
from mibench.api.oracle import Access, DefenderKnowledge, TargetOracle
from mibench.api.progress import SILENT, Reporter
from mibench.api.recipe import TrainSpec
from mibench.api.records import Record, read_records
from mibench.params import NoParams, Params
from mibench.registry import ARCHITECTURES, ATTACKS, DATASETS, DEFENSES, METRICS, Registry

__all__ = [
    "ARCHITECTURES",
    "ATTACKS",
    "DATASETS",
    "DEFENSES",
    "METRICS",
    "SILENT",
    "Access",
    "Attack",
    "Criterion",
    "DataInfo",
    "DefenderKnowledge",
    "Defense",
    "ExtraTerm",
    "GenerativeAttack",
    "IdentityLoss",
    "MeasureInputs",
    "Measurement",
    "Metric",
    "NoParams",
    "Params",
    "PriorSpec",
    "RecipeParams",
    "Reconstructions",
    "Record",
    "Registry",
    "Reporter",
    "RunContext",
    "TargetOracle",
    "TrainSpec",
    "TrainedTarget",
    "TrainingSetup",
    "cross_entropy",
    "read_records",
]
