"""The suite file's shape: pydantic models with `extra="forbid"`, whose defaults are the documented ones.

`mibench.suite.loading` validates a parsed file against these models, then resolves every method it names.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from mibench.api.recipe import TrainSpec
from mibench.params import Params
from mibench.suite.settings import ClusterSpec, ExecutionSpec, OutputSpec, ReportSpec

MAX_CLASSES = 100_000  # more identities than any MI benchmark has; bounds what attacked_classes can ask for
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class MethodSpec(Params):
    """A registered method and its parameters; `label` is how tables name it (default: the name)."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None

    @property
    def display(self) -> str:
        """The label tables use."""
        return self.label or self.name


class AttackSpec(MethodSpec):
    """An attack entry; `budget` scales its iteration counts (see `scale_budget`), overriding the suite's."""

    budget: float | None = Field(None, gt=0, le=1)
    defenses: list[str] | None = Field(
        None, min_length=1, description="labels of the defenses it attacks (default: every defense of the suite)"
    )


# Integer params that count work: latent-search iterations, GAN epochs and steps, distillation epochs.
BUDGET_FIELDS = frozenset({"iterations", "epochs", "max_steps"})


def scale_budget(params: BaseModel, factor: float) -> BaseModel:
    """A copy of `params` with every integer field named in `BUDGET_FIELDS`, at any depth, times `factor`.

    Values are rounded up and stay >= 1; everything else (learning rates, restarts, sizes) is unchanged. The scaled
    params are what the cache keys hash, so a budget run never reuses full-budget artifacts or vice versa.
    """
    if factor == 1:
        return params
    update: dict[str, Any] = {}
    for name in type(params).model_fields:
        value = getattr(params, name)
        if isinstance(value, BaseModel):
            update[name] = scale_budget(value, factor)
        elif isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
            update[name] = [scale_budget(v, factor) for v in value]
        elif name in BUDGET_FIELDS and isinstance(value, int) and not isinstance(value, bool):
            update[name] = max(1, math.ceil(value * factor))
    return params.model_copy(update=update)


class DefenseSpec(Params):
    """A defense (`name` + `params`) or a stack of defenses trained together (`stack`, e.g. Trap-MID with NegLS)."""

    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    label: str | None = None
    stack: list[MethodSpec] | None = Field(None, min_length=1)
    recipe: Literal["official", "baseline"] = Field(
        "official",
        description="official: the defense's paper recipe where it has one (its `params.recipe`); baseline: the "
        "undefended target's recipe, only the defense's own loss and data added",
    )
    sweep: list[Any] | dict[str, list[Any]] | None = Field(
        None,
        description="one row per value: a list sweeps the defense's strength knob, {param: [values]} names it "
        "(`member.param` in a stack; several keys are zipped)",
    )

    @field_validator("stack", mode="before")
    @classmethod
    def _stack_shorthands(cls, v: Any) -> Any:
        return [_shorthand(x) for x in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _name_or_stack(self) -> DefenseSpec:
        if (self.name is None) == (self.stack is None):
            raise ValueError("give either `name` (one defense) or `stack` (a list of defenses), not both or neither")
        if self.stack is not None and self.params:
            raise ValueError("a stack takes `params` per member, not at the top")
        return self

    @property
    def display(self) -> str:
        """The label tables use."""
        return self.label or self.name or "+".join(m.name for m in self.stack or [])


def _shorthand(value: Any) -> Any:
    """Allow `- gmi` for `- {name: gmi}` in method lists."""
    return {"name": value} if isinstance(value, str) else value


class PublicDataSpec(Params):
    """Take the public (auxiliary) images from another dataset, e.g. FFHQ for the distribution-shift setting."""

    dataset: str
    root: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class DataSpec(Params):
    """Private (classifier) and public (attacker) data."""

    dataset: str
    root: str | None = None
    image_size: int | tuple[int, int] = Field(
        64, description="side of square images, or [height, width] (image-folder data, shallow models; AT&T 112x92)"
    )

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, v: int | tuple[int, int]) -> int | tuple[int, int]:
        sides = (v,) if isinstance(v, int) else v
        if any(s <= 0 or s > 4096 for s in sides):
            raise ValueError(f"image sides must be in 1..4096, got {v}")
        if not isinstance(v, int) and v[0] == v[1]:
            return v[0]  # a square given as a pair is the same data as its side (and the same cache key)
        return v

    params: dict[str, Any] = Field(default_factory=dict)
    public: PublicDataSpec | None = None


class ModelSpec(Params):
    """A classifier: architecture, its parameters, how to train it, or a checkpoint to load instead."""

    architecture: str
    params: dict[str, Any] = Field(default_factory=dict)
    train: TrainSpec = Field(default_factory=TrainSpec)
    input_size: int | None = Field(None, gt=0, description="input resolution; default: data.image_size")
    checkpoint: str | None = None
    dataset_params: dict[str, Any] | None = Field(
        None,
        description="evaluator only: the dataset's params for its own training data, over data.params (Trap-MID's "
        "MNIST evaluator learns all ten digits: {private_classes: [0, ..., 9]})",
    )


class Suite(Params):
    """A benchmark suite: defenses x attacks x seeds on one data setting."""

    name: str
    description: str = ""
    seed: int = Field(0, description="base seed of artifacts shared across runs (evaluator, target-free priors)")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4], min_length=1)
    data: DataSpec
    target: ModelSpec
    evaluator: ModelSpec
    defenses: list[DefenseSpec] = Field(min_length=1)
    attacks: list[AttackSpec] = Field(default_factory=list)
    protocol: Literal["standard", "published"] = Field(
        "standard",
        description="metric pipelines: standard (mibench's clean one) or published (each attack's official code, "
        "quirks included, for comparison with papers); metrics may override it",
    )
    attack_budget: float = Field(
        1.0, gt=0, le=1, description="scales every attack's iteration counts (smoke runs); 1 = the papers' budgets"
    )
    attacked_classes: int | list[int] = Field(300, description="N for classes 0..N-1, or an explicit list")

    @field_validator("attacked_classes")
    @classmethod
    def _sane_classes(cls, v: int | list[int]) -> int | list[int]:
        values = [v] if isinstance(v, int) else v
        if isinstance(v, int) and not 1 <= v <= MAX_CLASSES:
            raise ValueError(f"attacked_classes must be between 1 and {MAX_CLASSES}, got {v}")
        if isinstance(v, list) and (not v or any(c < 0 or c >= MAX_CLASSES for c in values)):
            raise ValueError(f"attacked classes must be a non-empty list of class indices in 0..{MAX_CLASSES - 1}")
        return v

    metrics: list[MethodSpec] = Field(min_length=1)
    output: OutputSpec = Field(default_factory=OutputSpec)
    report: ReportSpec = Field(default_factory=ReportSpec)
    cluster: ClusterSpec = Field(default_factory=ClusterSpec)
    execution: ExecutionSpec = Field(default_factory=ExecutionSpec)

    @field_validator("defenses", "attacks", "metrics", mode="before")
    @classmethod
    def _shorthands(cls, v: Any) -> Any:
        return [_shorthand(x) for x in v] if isinstance(v, list) else v

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("use letters, digits, '_', '.', '-' (it names the output folder)")
        return v

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("seeds must be distinct")
        return v

    @model_validator(mode="after")
    def _unique_labels(self) -> Suite:
        for section in ("defenses", "attacks"):
            labels = [m.display for m in getattr(self, section)]
            dup = sorted({x for x in labels if labels.count(x) > 1})
            if dup:
                raise ValueError(f"{section}: labels must be distinct, repeated: {dup}; set `label:` to separate them")
        return self

    def classes(self) -> list[int]:
        """The attacked class indices."""
        if isinstance(self.attacked_classes, int):
            return list(range(self.attacked_classes))
        return list(self.attacked_classes)

    @property
    def output_dir(self) -> Path:
        """The run folder."""
        return Path(self.output.dir or f"results/{self.name}")
