"""Statistics over seeds for the report: confidence intervals, Welch's t-tests with Holm's correction, power.

Each seed is an independently trained target (and its own attack), so the seeds of two defenses are independent
samples: Welch's unequal-variance t-test compares them, and Holm's step-down procedure controls the family-wise
error over every comparison in a table. These are the numbers behind `mibench report --stats`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

from scipy import stats as scipy_stats

from mibench.api.records import Record
from mibench.reporting.tables import Table, method_key

Z_POWER = 0.8416212335729143  # z of 80% power
Z_ALPHA = 1.959963984540054  # z of a two-sided 5% test


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Student-t confidence interval of the mean of `values` (None with fewer than two values)."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = scipy_stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return mean - half, mean + half


def welch_p(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Two-sided p-value of Welch's t-test of equal means.

    None when it is undefined: fewer than two values on a side, or no spread on either side (a few identical seeds
    are no evidence of a zero variance, so no difference is declared significant from them).
    """
    if len(a) < 2 or len(b) < 2 or (max(a) == min(a) and max(b) == min(b)):
        return None
    with warnings.catch_warnings():  # near-identical seeds: scipy warns about precision, the p-value is still right
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(scipy_stats.ttest_ind(a, b, equal_var=False).pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order: max over j <= rank of (m - j) p_(j), capped at 1."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def seeds_for_power(a: Sequence[float], b: Sequence[float]) -> int | None:
    """Seeds per side for 80% power at a two-sided 5% level, from the observed difference and pooled spread.

    The normal approximation n = 2 (z_0.975 + z_0.8)^2 s^2 / d^2; None when it is undefined (no spread estimate or
    no difference).
    """
    if len(a) < 2 or len(b) < 2:
        return None
    mean_a, mean_b = sum(a) / len(a), sum(b) / len(b)
    var_a = sum((v - mean_a) ** 2 for v in a) / (len(a) - 1)
    var_b = sum((v - mean_b) ** 2 for v in b) / (len(b) - 1)
    diff = abs(mean_a - mean_b)
    if diff == 0:
        return None
    pooled = (var_a + var_b) / 2
    return max(2, math.ceil(2 * (Z_ALPHA + Z_POWER) ** 2 * pooled / diff**2))


# ---------------------------------------------------------------------------------------------------------------------
# Tables


@dataclass(frozen=True)
class Comparison:
    """One tested difference of a table: a defense's seeds against a reference row's, in one column of one block."""

    attack: str
    column: str
    defense: str
    reference: str  # "undefended" or "best other (<label>)"
    p: float
    adjusted: float
    better: bool
    seeds_needed: int | None


def seed_values(records: list[Record]) -> dict[tuple[str, str, str], list[float]]:
    """{(attack or '', defense, metric): the finite values over seeds}."""
    out: dict[tuple[str, str, str], list[float]] = {}
    for r in records:
        if r.defense is None or r.value is None or not math.isfinite(r.value):
            continue
        out.setdefault((r.attack or "", r.defense, r.metric), []).append(r.value)
    return out


def annotate_significance(table: Table, records: list[Record], alpha: float = 0.05) -> tuple[Table, list[Comparison]]:
    """Mark cells significantly better than the undefended row (†) and than the best other defense (‡).

    Per block and column with a defender direction: Welch's t-test of each defense's seeds against the undefended
    row's, and against the best other defense's (by mean); Holm's correction over every test of the table; a mark
    where the adjusted p < alpha and the defense is the better one.
    """
    values = seed_values(records)
    tests: list[tuple[int, int, int, str, str, float, bool, int | None]] = []
    for b, (attack, rows) in enumerate(table.blocks):
        labels = [d for d, _ in rows]
        undefended = next((d for d in labels if method_key(d) == "none"), None)
        for j, head in enumerate(table.header):
            if head.higher_is_better is None or head.metric is None:
                continue

            def seeds(defense: str, metric: str = head.metric, block: str = attack) -> list[float]:
                return values.get((block, defense, metric)) or values.get(("", defense, metric), [])

            sign = 1 if head.higher_is_better else -1
            defended = [d for d in labels if d != undefended and len(seeds(d)) >= 2]
            for i, defense in enumerate(labels):
                if defense not in defended:
                    continue
                mine = seeds(defense)
                references = [("undefended", undefended)] if undefended else []
                others = [d for d in defended if d != defense]
                if others:
                    best = max(others, key=lambda d: sign * sum(seeds(d)) / len(seeds(d)))
                    references.append((f"best other ({best})", best))
                for name, ref in references:
                    theirs = seeds(ref)
                    p = welch_p(mine, theirs)
                    if p is None:
                        continue
                    better = sign * (sum(mine) / len(mine) - sum(theirs) / len(theirs)) > 0
                    tests.append((b, i, j, name, ref, p, better, seeds_for_power(mine, theirs)))
    adjusted = holm([t[5] for t in tests])
    comparisons = []
    marks: dict[tuple[int, int, int], str] = {}
    for (b, i, j, name, _, p, better, needed), adj in zip(tests, adjusted, strict=True):
        attack, rows = table.blocks[b]
        comparisons.append(Comparison(attack, table.header[j].label, rows[i][0], name, p, adj, better, needed))
        if better and adj < alpha:
            symbol = "†" if name == "undefended" else "‡"
            marks[b, i, j] = marks.get((b, i, j), "") + symbol
    blocks = [
        (attack, [(d, [replace(c, mark=marks.get((b, i, j), "")) for j, c in enumerate(cells)]) for i, (d, cells) in
                  enumerate(rows)])
        for b, (attack, rows) in enumerate(table.blocks)
    ]  # fmt: skip
    note = (
        f"†/‡: better than the undefended target / than the best other defense at Holm-adjusted p < {alpha} "
        f"(Welch's t-test over seeds, {len(tests)} comparisons)"
    )
    return Table(table.header, blocks, f"{table.caption[:-1]}. {note}.", table.label), comparisons


def comparisons_text(comparisons: list[Comparison]) -> str:
    """The `--stats` listing: every comparison with its p-values and the seeds 80% power would need."""
    lines = ["attack | column | defense | vs | p | Holm p | better | seeds for 80% power"]
    for c in comparisons:
        need = "-" if c.seeds_needed is None else str(c.seeds_needed)
        lines.append(
            f"{c.attack or '-'} | {c.column} | {c.defense} | {c.reference} | {c.p:.3g} | {c.adjusted:.3g} | "
            f"{'yes' if c.better else 'no'} | {need}"
        )
    return "\n".join(lines) + "\n"
