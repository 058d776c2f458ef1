"""What a run shows, in one sentence per attack.

The undefended AA-1, the defense that lowers it most, and what that defense costs in test accuracy; `mibench run`
prints it under the table.
"""

from __future__ import annotations

import math

from mibench.api.records import Record
from mibench.reporting.tables import NO_ATTACK, summarize


def _percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def headline(records: list[Record], undefended: str | None) -> str:
    """Sentences on the run's AA-1 against the undefended target (label `undefended`); empty when there is none.

    Each compares means over seeds; with fewer than two seeds per cell it says that the differences are not
    measured against seed noise.
    """
    summary = summarize(records)
    means = {
        (a, d, m): float(v)
        for a, d, m, v in zip(summary.attack, summary.defense, summary.metric, summary["mean"], strict=True)
        if not (v is None or math.isnan(v))
    }
    accuracy = {d: v for (a, d, m), v in means.items() if a == NO_ATTACK and m == "acc"}
    sentences = []
    for attack in dict.fromkeys(a for (a, _, m) in means if m == "aa1" and a != NO_ATTACK):
        aa1 = {d: v for (a, d, m), v in means.items() if a == attack and m == "aa1"}
        others = {d: v for d, v in aa1.items() if d != undefended}
        if undefended not in aa1 or not others:
            continue
        best = min(others, key=others.__getitem__)
        start = f"Against {attack}, the undefended target gives AA-1 {_percent(aa1[undefended])}"
        if others[best] >= aa1[undefended]:
            sentences.append(f"{start} and no defense lowers it.")
            continue
        cost = ""
        if best in accuracy and undefended in accuracy:
            drop = 100 * (accuracy[undefended] - accuracy[best])
            cost = f" for {drop:.1f} points of test accuracy" if drop >= 0 else f" and {-drop:.1f} points more accuracy"
        sentences.append(f"{start}; {best} lowers it most, to {_percent(others[best])}{cost}.")
    if not sentences:
        return ""
    seeds = {r.seed for r in records if r.seed is not None}
    if len(seeds) < 2:
        sentences.append("One seed: a direction, not a difference measured against seed noise (add seeds for that).")
    return " ".join(sentences)
