"""Cross-entry checks of a suite: optional packages present, and attacks paired only with defenses they can face.

Each returns 'key.path: problem' lines, collected with the schema's problems before any work runs.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from mibench.suite.resolved import ResolvedDefense, ResolvedMethod


def missing_packages(methods: Sequence[ResolvedMethod]) -> list[str]:
    """'<name> needs <module>: pip install ...' for each optional package a method requires and Python cannot find."""
    return [
        f"{m.name} needs the {module!r} package: pip install 'mibench[{extra}]'"
        for m in methods
        for module, extra in getattr(m.cls, "requires", {}).items()
        if importlib.util.find_spec(module) is None
    ]


def attacked_defenses(attack: ResolvedMethod, defenses: Sequence[ResolvedDefense]) -> list[ResolvedDefense]:
    """The defenses an attack runs against (its `defenses:` restriction, else all)."""
    return [d for d in defenses if attack.defenses is None or d.label in attack.defenses]


def pairing_problems(defenses: Sequence[ResolvedDefense], attacks: Sequence[ResolvedMethod]) -> list[str]:
    """Attack restrictions naming unknown defenses, and adaptive attacks paired with defenses they cannot adapt to.

    An attack that is told the defender's trapdoor signatures (PLG-MI++) is meaningless against a target without
    trapdoors (it silently becomes PLG-MI+), so that pairing is an error, not a number.
    """
    problems = []
    labels = [d.label for d in defenses]
    for i, attack in enumerate(attacks):
        for label in attack.defenses or ():
            if label not in labels:
                problems.append(f"attacks[{i}].defenses: no defense labelled {label!r}; labels: {', '.join(labels)}")
        if getattr(attack.cls, "needs_batchnorm", False):
            stripped = [
                d.label
                for d in attacked_defenses(attack, defenses)
                if any(getattr(m.cls, "removes_batchnorm", False) for m in d.members)
            ]
            if stripped:
                problems.append(
                    f"attacks[{i}] ({attack.label}) reads the target's BatchNorm statistics, but "
                    f"{', '.join(repr(b) for b in stripped)} replaces BatchNorm; restrict it with `defenses:`"
                )
        if not getattr(attack.cls, "knows_defense", False):
            continue
        blind = [
            d.label for d in attacked_defenses(attack, defenses) if not any(m.cls.has_trapdoors for m in d.members)
        ]
        if blind:
            problems.append(
                f"attacks[{i}] ({attack.label}) is told the defender's trapdoor signatures, but "
                f"{', '.join(repr(b) for b in blind)} {'has' if len(blind) == 1 else 'have'} no trapdoors; restrict "
                "it with `defenses:` to the trapdoor defenses"
            )
    return problems
