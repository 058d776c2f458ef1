"""Defense sweeps: one suite entry, one target per strength value (and seed), each labelled by its value.

A frontier (attack accuracy against utility over a defense's strengths) needs several targets per defense. A suite
entry says which parameter to vary and over which values:

    - {name: trap-mid, label: Trap-MID, sweep: [0.05, 0.1, 0.2, 0.5]}       # the defense's strength knob (beta)
    - {name: bido, sweep: {lambda_x: [0.01, 0.05], lambda_y: [0.1, 0.5]}}  # several keys: zipped, equal lengths
    - {label: TM+NegLS, stack: [trap-mid, negls], sweep: {trap-mid.beta: [0.1, 0.2]}}  # a stack: member.param

The entry expands into one defense row per value, labelled "<label> <param>=<value>" (the family label and the
values are kept, so reports can group a family's rows into one curve). A list sweeps the knob the defense class
names in `strength` (several knobs: a list of lists).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mibench.registry import DEFENSES

MAX_SWEEP_VALUES = 64


@dataclass(frozen=True)
class SweepPoint:
    """One expanded row: its label, the parameters to set (`member.param` for stacks), and its family's label."""

    label: str
    setting: dict[str, Any] = field(default_factory=dict)
    family: str | None = None


def format_value(value: Any) -> str:
    """A sweep value as labels show it: floats in their shortest general form, others as written."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "/".join(format_value(v) for v in value)
    return str(value)


def sweep_settings(sweep: Any, knobs: tuple[str, ...], where: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The settings a `sweep:` value gives (one dict per row), and problems (one line each) if it is malformed.

    `knobs`: the defense's strength parameters, which a plain list sweeps.
    """
    if isinstance(sweep, list):
        if not knobs:
            return [], [f"{where}.sweep: this defense names no strength knob; give {{param: [values]}}"]
        if len(knobs) == 1:
            sweep = {knobs[0]: sweep}
        else:
            if not all(isinstance(v, list) and len(v) == len(knobs) for v in sweep):
                return [], [f"{where}.sweep: each value sets {', '.join(knobs)}: give a list of {len(knobs)} each"]
            sweep = {k: [v[i] for v in sweep] for i, k in enumerate(knobs)}
    if not isinstance(sweep, dict) or not sweep:
        return [], [f"{where}.sweep: give a list of values or a mapping {{param: [values]}}"]
    lengths = {k: len(v) if isinstance(v, list) else -1 for k, v in sweep.items()}
    if any(n < 1 for n in lengths.values()):
        return [], [f"{where}.sweep: every key needs a non-empty list of values"]
    if len(set(lengths.values())) != 1:
        return [], [f"{where}.sweep: the lists are zipped, so they need equal lengths (got {lengths})"]
    count = next(iter(lengths.values()))
    if count > MAX_SWEEP_VALUES:
        return [], [f"{where}.sweep: at most {MAX_SWEEP_VALUES} values, got {count}"]
    return [{k: v[i] for k, v in sweep.items()} for i in range(count)], []


def point_label(family: str, setting: dict[str, Any]) -> str:
    """The row's label, e.g. `Trap-MID beta=0.2` (several keys joined by commas, a stack's `member.param` kept)."""
    return f"{family} " + ", ".join(f"{k}={format_value(v)}" for k, v in setting.items())


def apply_setting(params: dict[str, Any], setting: dict[str, Any], member: str | None = None) -> dict[str, Any]:
    """`params` with a row's values set: keys `param` (one defense) or `member.param` (only `member`'s, in a stack).

    Dotted keys below the member reach nested parameters (`recipe.lr`).
    """
    out = dict(params)
    for key, value in setting.items():
        path = key.split(".")
        if member is not None:
            if path[0] != member:
                continue
            path = path[1:]
        target = out
        for part in path[:-1]:
            target[part] = dict(target.get(part) or {})
            target = target[part]
        target[path[-1]] = value
    return out


def expand_sweep(name: str | None, family: str, sweep: Any, where: str) -> tuple[list[SweepPoint], list[str]]:
    """The rows a defense entry's `sweep` gives (a plain list sweeps `name`'s strength knob), and problems."""
    knobs = DEFENSES.get(name).strength if name in DEFENSES else ()
    settings, problems = sweep_settings(sweep, knobs, where)
    return [SweepPoint(point_label(family, setting), setting, family) for setting in settings], problems


def sweep_rows(suite: dict[str, Any]) -> dict[str, SweepPoint]:
    """Label -> its family and values, for every row a (dumped) suite's defense sweeps expand into.

    Reports read this from the run's plan.json, so a family's rows can be drawn as one curve.
    """
    rows = {}
    for entry in suite.get("defenses", []):
        if not isinstance(entry, dict) or entry.get("sweep") is None:
            continue
        name = entry.get("name")
        family = entry.get("label") or name or "+".join(m.get("name", "?") for m in entry.get("stack") or [])
        rows.update((point.label, point) for point in expand_sweep(name, family, entry["sweep"], "")[0])
    return rows
