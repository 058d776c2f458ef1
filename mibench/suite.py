"""The suite file: schema, loading and validation.

A suite is YAML read with `yaml.safe_load` and validated twice: first its shape (pydantic models with
`extra="forbid"`), then every method it names against the registries and each method's own `Params`. All problems
are collected and raised together, each naming the file, the key path and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from mibench.errors import ConfigError, unknown_name_message
from mibench.params import Params
from mibench.registry import ARCHITECTURES, ATTACKS, DATASETS, DEFENSES, METRICS, Registry
from mibench.suite_checks import missing_packages, pairing_problems
from mibench.suite_settings import ClusterSpec, ExecutionSpec, OutputSpec, ReportSpec
from mibench.suite_text import bounded_yaml, expand_env, pydantic_problems

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


class TrainSpec(Params):
    """Classifier training hyperparameters; defaults are the KED-MI/Trap-MID VGG16 recipe (spec §3)."""

    epochs: int = Field(50, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0)
    weight_decay: float = Field(1e-4, ge=0)
    milestones: list[int] = Field(default_factory=list, description="MultiStepLR epochs; none in the official recipe")
    gamma: float = Field(0.1, gt=0)
    hflip: bool = Field(True, description="random horizontal flip, p = 0.5 (the dataset-level augmentation)")
    crop_scale: tuple[float, float] | None = Field(
        None, description="random resized crop with this area range, e.g. PPA's [0.85, 1]; none by default"
    )
    crop_ratio: tuple[float, float] = Field((1.0, 1.0), description="its aspect-ratio range (PPA's configs: square)")
    color_jitter: tuple[float, float, float, float] | None = Field(
        None, description="ColorJitter (brightness, contrast, saturation, hue), e.g. PPA's [0.2, 0.2, 0.1, 0.1]"
    )
    drop_last: bool = True
    sampler: Literal["shuffle", "identity"] = Field(
        "shuffle", description="identity: batches of batch_size / images_per_identity identities (BiDO's sampler)"
    )
    images_per_identity: int = Field(4, ge=1)
    # The official code keeps the epoch with the best *test* accuracy (test-set model selection). It is the
    # default for faithfulness; `last` is the methodologically clean choice.
    selection: Literal["best_test", "last"] = "best_test"
    # Throughput on CUDA only (ignored on CPU): bf16 autocast and channels_last memory format. The official code
    # trains in float32, so float32 is the default; `amp: true` is an explicit speed option, recorded with the target.
    amp: bool = False
    channels_last: bool = True


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


# --------------------------------------------------------------------------------------------------------------------
# Loading


def load_suite(path: str | os.PathLike[str], budget: float | None = None) -> ResolvedSuite:
    """Read, validate and resolve a suite file; raises `ConfigError` listing every problem.

    `budget` overrides the suite's `attack_budget` (the CLI's `--budget`).
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [f"cannot read the suite file: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(source, [f"not UTF-8 text (byte {exc.start})"]) from None
    raw = bounded_yaml(text, source)
    if budget is not None and isinstance(raw, dict):
        raw = {**raw, "attack_budget": budget}
    return resolve_suite(raw, source)


def resolve_suite(raw: Any, source: str = "<suite>") -> ResolvedSuite:
    """Validate a parsed suite mapping (see `load_suite`)."""
    if not isinstance(raw, dict):
        raise ConfigError(source, ["the top level must be a mapping of keys (name, data, target, ...)"])
    raw = expand_env(raw, source)
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(source, pydantic_problems(exc, Suite)) from None

    problems: list[str] = []

    def resolve(registry: Registry, spec: Any, where: str, label: str | None = None) -> ResolvedMethod | None:
        name = spec.name if isinstance(spec, MethodSpec) else spec.dataset
        if name not in registry:
            problems.append(f"{where}.name: {unknown_name_message(registry.kind, name, registry.names())}")
            return None
        cls = registry.get(name)
        try:
            params = cls.Params.model_validate(spec.params)
        except ValidationError as exc:
            problems.extend(pydantic_problems(exc, cls.Params, prefix=f"{where}.params"))
            return None
        return ResolvedMethod(name, label or name, cls, params)

    def resolve_list(registry: Registry, specs: Sequence[MethodSpec], section: str) -> list[ResolvedMethod]:
        out = [resolve(registry, s, f"{section}[{i}]", s.display) for i, s in enumerate(specs)]
        return [r for r in out if r is not None]

    def resolve_arch(spec: ModelSpec, where: str) -> ResolvedMethod | None:
        return resolve(ARCHITECTURES, MethodSpec(name=spec.architecture, params=spec.params), where)

    defenses = []
    for i, spec in enumerate(suite.defenses):
        if spec.stack is None:
            members = [resolve(DEFENSES, MethodSpec(name=spec.name, params=spec.params), f"defenses[{i}]")]
        else:
            members = [resolve(DEFENSES, m, f"defenses[{i}].stack[{j}]") for j, m in enumerate(spec.stack)]
        if all(m is not None for m in members):
            defenses.append(ResolvedDefense(spec.display, members))
            problems += [f"defenses[{i}]: {m}" for m in missing_packages(members)]
        if spec.stack is not None:
            names = [m.name for m in spec.stack]
            if "none" in names:
                problems.append(f"defenses[{i}].stack: 'none' cannot be stacked (it is the undefended target)")
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                problems.append(f"defenses[{i}].stack: {', '.join(repeated)} appears more than once")
    attacks = []
    for i, spec in enumerate(suite.attacks):
        resolved = resolve(ATTACKS, spec, f"attacks[{i}]", spec.display)
        if resolved is not None:
            budget = spec.budget or suite.attack_budget
            restriction = tuple(spec.defenses) if spec.defenses else None
            attacks.append(
                dataclasses.replace(resolved, params=scale_budget(resolved.params, budget), defenses=restriction)
            )
    problems += pairing_problems(defenses, attacks)
    metrics = resolve_list(METRICS, suite.metrics, "metrics")
    dataset = resolve(DATASETS, suite.data, "data")
    public = resolve(DATASETS, suite.data.public, "data.public") if suite.data.public else None
    if suite.data.public:  # public images from another dataset come without identity labels (stages.load_bundle)
        problems += [
            f"attacks[{i}] ({a.label}) trains on labelled public identities, which data.public's images lack"
            for i, a in enumerate(attacks)
            if a.cls(a.params).needs_public_identities()
        ]
    target_arch = resolve_arch(suite.target, "target.architecture")
    evaluator_arch = resolve_arch(suite.evaluator, "evaluator.architecture")
    evaluator_dataset = None
    if suite.target.dataset_params is not None:
        problems.append("target.dataset_params: only the evaluator trains on other data than the suite's")
    if suite.evaluator.dataset_params is not None and dataset is not None:
        merged = {**suite.data.params, **suite.evaluator.dataset_params}
        evaluator_dataset = resolve(
            DATASETS, DataSpec(**{**suite.data.model_dump(), "params": merged}), "evaluator.dataset_params"
        )
        problems = [q.replace("evaluator.dataset_params.params", "evaluator.dataset_params") for q in problems]
    problems = [p.replace(".architecture.name:", ".architecture:") for p in problems]
    for where, spec in (("data", suite.data), ("data.public", suite.data.public)):
        if spec is not None and spec.dataset in DATASETS and DATASETS.get(spec.dataset).needs_root and not spec.root:
            problems.append(f"{where}.root: dataset {spec.dataset!r} reads files; give the folder that holds them")
    known = dataset.cls.class_count(dataset.params) if dataset is not None else None
    if known is not None and max(suite.classes()) >= known:
        problems.append(
            f"attacked_classes: class {max(suite.classes())} is beyond the {known} private classes of "
            f"dataset {dataset.name!r}"
        )
    if not isinstance(suite.data.image_size, int):
        size = "x".join(map(str, suite.data.image_size))
        if dataset is not None and not dataset.cls.rectangular:
            problems.append(f"data.image_size: dataset {dataset.name!r} makes square images only, got {size}")
        for where, arch in (("target", target_arch), ("evaluator", evaluator_arch)):
            square_input = where == "evaluator" and suite.evaluator.input_size
            if arch is not None and not arch.cls.rectangular_input and not square_input:
                problems.append(
                    f"{where}.architecture: {arch.name!r} needs square images, data.image_size is {size}"
                    + (" (give evaluator.input_size)" if where == "evaluator" else "")
                )
    if problems:
        raise ConfigError(source, problems)
    return ResolvedSuite(
        suite, source, defenses, attacks, metrics, dataset, public, target_arch, evaluator_arch, evaluator_dataset
    )
