"""Reading a suite file: bounded YAML, the schema, then every method against the registries and its `Params`.

All problems are collected and raised together as one `ConfigError`, each naming the file and the key path.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mibench.api.defense import RecipeParams
from mibench.errors import ConfigError, unknown_name_message
from mibench.registry import ARCHITECTURES, ATTACKS, DATASETS, DEFENSES, METRICS, Registry
from mibench.suite.checks import missing_packages, pairing_problems
from mibench.suite.resolved import ResolvedDefense, ResolvedMethod, ResolvedSuite
from mibench.suite.schema import DataSpec, DefenseSpec, MethodSpec, ModelSpec, Suite, scale_budget
from mibench.suite.sweeps import apply_setting, expand_sweep
from mibench.suite.text import bounded_yaml, expand_env, pydantic_problems


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


def _with_recipe(name: str | None, params: dict[str, Any], recipe: str) -> dict[str, Any]:
    """`recipe: baseline`: a defense with a paper recipe of its own (`params.recipe`) keeps the suite's instead."""
    if recipe != "baseline" or name not in DEFENSES or "recipe" not in DEFENSES.get(name).Params.model_fields:
        return params
    return {**params, "recipe": dict.fromkeys(RecipeParams.model_fields)}


def _sweep_points(spec: DefenseSpec, where: str, problems: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """(label, values) of each row a defense entry gives: itself, or one per value of its `sweep`."""
    if spec.sweep is None:
        return [(spec.display, {})]
    points, bad = expand_sweep(spec.name, spec.display, spec.sweep, where)
    problems += bad
    if spec.stack is not None:
        members = {m.name for m in spec.stack}
        for key in points[0].setting if points else {}:
            if key.split(".")[0] not in members:
                problems.append(f"{where}.sweep: {key!r} names no stack member; use member.param ({sorted(members)})")
    return [(point.label, point.setting) for point in points]


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
        for label, setting in _sweep_points(spec, f"defenses[{i}]", problems):
            where = f"defenses[{i}]" + (f" ({label})" if setting else "")
            if spec.stack is None:
                params = _with_recipe(spec.name, apply_setting(spec.params, setting), spec.recipe)
                members = [resolve(DEFENSES, MethodSpec(name=spec.name, params=params), where)]
            else:
                members = [
                    resolve(DEFENSES, MethodSpec(name=m.name, params=_with_recipe(
                        m.name, apply_setting(m.params, setting, m.name), spec.recipe)), f"{where}.stack[{j}]")
                    for j, m in enumerate(spec.stack)
                ]  # fmt: skip
            if all(m is not None for m in members):
                family = spec.display if setting else None
                defenses.append(ResolvedDefense(label, members, family, tuple(setting.items())))
                problems += [f"{where}: {m}" for m in missing_packages(members)]
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
    if target_arch is not None:
        problems += [
            f"defenses ({d.label}): {problem}"
            for d in defenses
            for m in d.members
            if (problem := m.cls.architecture_problem(target_arch.cls)) is not None
        ]
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
