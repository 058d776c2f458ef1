"""Reading suite text safely, and turning validation errors into 'key.path: problem' lines.

YAML is parsed with `yaml.safe_load` under bounds (file size, alias count, expanded size) so that a small hostile
file cannot exhaust memory or time; `${VAR}` references are expanded from the environment.
"""

from __future__ import annotations

import os
import re
import types
import typing
from collections.abc import Sequence
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from mibench.errors import ConfigError, suggest

MAX_SUITE_BYTES = 1_000_000
MAX_YAML_ALIASES = 1_000
MAX_YAML_NODES = 200_000


def bounded_yaml(text: str, source: str) -> Any:
    """`yaml.safe_load` with bounds: file size, alias count, and the size of the expanded document.

    A small file of nested aliases ("billion laughs") expands to an astronomically large document; it is refused
    with a named error before anything walks it.
    """
    if len(text) > MAX_SUITE_BYTES:
        raise ConfigError(source, [f"the suite file is {len(text)} bytes; suites are limited to {MAX_SUITE_BYTES}"])
    try:
        aliases = sum(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader))
        if aliases > MAX_YAML_ALIASES:
            raise ConfigError(source, [f"{aliases} YAML aliases; at most {MAX_YAML_ALIASES} are allowed"])
        duplicates = duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader))
        if duplicates:
            raise ConfigError(source, duplicates)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [f"not valid YAML: {exc}"]) from None
    pending, seen = [raw], 0
    while pending:  # iterative: deep nesting must not overflow the interpreter's stack either
        node = pending.pop()
        seen += 1
        if seen > MAX_YAML_NODES:
            raise ConfigError(source, [f"the YAML expands to more than {MAX_YAML_NODES} values (nested aliases?)"])
        if isinstance(node, dict):
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return raw


def duplicate_keys(root: yaml.Node | None) -> list[str]:
    """'line N: key K appears twice in one mapping (first on line M)' for every repeated key.

    YAML keeps the last of two equal keys silently, so a suite that sets a value twice would run the second without
    a word. Merge keys (`<<: *anchor`) are overrides by design and exempt.
    """
    problems, pending, seen = [], [root], set()
    while pending:
        node = pending.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key, value in node.value:
                pending.append(value)
                if not isinstance(key, yaml.ScalarNode) or key.value == "<<":
                    continue
                line = key.start_mark.line + 1
                if key.value in first:
                    problems.append(f"line {line}: key {key.value!r} appears twice in one mapping (first on line "
                                    f"{first[key.value]})")  # fmt: skip
                else:
                    first[key.value] = line
        elif isinstance(node, yaml.SequenceNode):
            pending.extend(node.value)
    return sorted(problems, key=lambda p: int(p.split()[1].rstrip(":")))


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def expand_env(value: Any, source: str, where: str = "") -> Any:
    """Expand `${VAR}` in every string (data roots come from the environment); an unset variable is an error."""
    if isinstance(value, dict):
        return {k: expand_env(v, source, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env(v, source, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, str) and "$" in value:
        missing = [a or b for a, b in _ENV.findall(value) if (a or b) not in os.environ]
        if missing:
            raise ConfigError(source, [f"{where}: environment variable {missing[0]} is not set (used in {value!r})"])
        return os.path.expandvars(value)
    return value


# --------------------------------------------------------------------------------------------------------------------
# Error messages


def format_loc(loc: Sequence[Any]) -> str:
    """('defenses', 0, 'params') -> 'defenses[0].params'."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _submodel(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation such as `Foo | None` or `list[Foo]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            found = _submodel(arg)
            if found is not None:
                return found
    return None


def _model_at(model: type[BaseModel], loc: Sequence[Any]) -> type[BaseModel] | None:
    """Walk `loc` (field names and list indices) down nested models."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        sub = _submodel(field.annotation)
        if sub is None:
            return None
        model = sub
    return model


def pydantic_problems(exc: ValidationError, model: type[BaseModel], prefix: str = "") -> list[str]:
    """Turn pydantic errors into 'key.path: what is wrong; what is allowed' lines."""
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = format_loc(((prefix,) if prefix else ()) + loc) or "(top level)"
        kind = err["type"]
        if kind == "extra_forbidden":
            parent = _model_at(model, loc[:-1])
            allowed = sorted(parent.model_fields) if parent else []
            hint = suggest(str(loc[-1]), allowed)
            text = f"{path}: unknown key"
            if hint:
                text += f"; did you mean {hint[0]!r}?"
            problems.append(text + (f" allowed: {', '.join(allowed)}" if allowed else ""))
        elif kind == "missing":
            problems.append(f"{path}: required key is missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{path}: {msg} (got {err.get('input')!r})")
    return problems
