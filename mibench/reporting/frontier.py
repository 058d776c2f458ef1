"""Defenses compared at equal utility: privacy-utility frontiers and attack accuracy at matched test accuracy.

A defense that costs more accuracy trivially lowers attack accuracy, so one (Acc, AA-1) point per defense cannot say
which defense is better. With a sweep over each defense's strength (`mibench.suite.sweeps`), a run holds a curve per
defense; this module reads it from the records (never recomputing anything) and gives:

* the points: per attack and row, mean test accuracy and mean AA-1 over seeds with their standard deviations;
* the Pareto front over all rows of an attack (no other row has at least the accuracy and at most the AA-1, one of
  them strictly): the defender's best trade-offs;
* AA-1 at matched accuracy: for each seed, the defense's AA-1 interpolated (piecewise linearly along its points
  sorted by accuracy) at the undefended target's accuracy of that seed minus `drop` points; the mean over seeds with
  a 95% Student-t interval. A defense none of whose strengths reaches that accuracy on some seed (all its points
  above it, or all below) is "not reached" there: interpolation never extrapolates.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace

from mibench.api.records import Record
from mibench.errors import MibenchError
from mibench.reporting.stats import t_interval
from mibench.reporting.tables import Cell, HeaderCell, Table
from mibench.suite.sweeps import SweepPoint

DEFAULT_DROPS = (1.0, 2.0, 5.0)  # accuracy drops from the undefended target, in percentage points


@dataclass(frozen=True)
class Point:
    """One row's place on an attack's frontier: means and standard deviations over its seeds."""

    label: str
    family: str
    acc: float
    acc_std: float
    attack_accuracy: float
    attack_accuracy_std: float
    seeds: int
    on_front: bool = False


def pareto_front(points: Sequence[tuple[float, float]]) -> list[bool]:
    """For (accuracy, attack accuracy) pairs: whether each is on the defender's front (high accuracy, low AA)."""

    def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])

    return [not any(dominates(other, p) for other in points) for p in points]


def interpolate_at(curve: Sequence[tuple[float, float]], level: float) -> float | None:
    """The second coordinate at first coordinate `level`, piecewise linear between the points sorted by it.

    None outside the points' range (never extrapolated). Points at equal accuracy are averaged.
    """
    merged: dict[float, list[float]] = defaultdict(list)
    for x, y in curve:
        merged[x].append(y)
    xs = sorted(merged)
    ys = [sum(merged[x]) / len(merged[x]) for x in xs]
    if not xs or level < xs[0] or level > xs[-1]:
        return None
    for (x0, y0), (x1, y1) in zip(zip(xs, ys, strict=True), zip(xs[1:], ys[1:], strict=True), strict=False):
        if x0 <= level <= x1:
            return y0 + (y1 - y0) * (level - x0) / (x1 - x0)
    return ys[0]  # a single point exactly at the level


def _per_seed(records: list[Record], metric: str, attack: str | None) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = defaultdict(dict)
    for r in records:
        if r.metric == metric and r.attack == attack and r.value is not None and r.defense is not None:
            out[r.defense][r.seed] = r.value
    return out


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return mean, var**0.5


@dataclass
class Frontier:
    """One attack's frontier: its points, and AA-1 at matched accuracy per family and drop."""

    attack: str
    points: list[Point]
    matched: dict[str, dict[float, tuple[float | None, tuple[float, float] | None, int, int]]]


def frontiers(
    records: list[Record],
    rows: dict[str, SweepPoint],
    baseline: str,
    metric: str = "aa1",
    drops: Sequence[float] = DEFAULT_DROPS,
) -> list[Frontier]:
    """Every attack's frontier (see module docstring). `rows`: sweep rows by label; `baseline`: the undefended row.

    `matched[family][drop]` is (mean over seeds or None when not reached, 95% interval or None, seeds reached,
    seeds with the baseline).
    """
    acc = _per_seed(records, "acc", None)
    if baseline not in acc:
        raise MibenchError(f"a frontier needs the undefended row's test accuracy ({baseline!r}); the run has none")
    attacks = list(dict.fromkeys(r.attack for r in records if r.metric == metric and r.attack))
    out = []
    for attack in attacks:
        aa = _per_seed(records, metric, attack)
        points = []
        for label, by_seed in aa.items():
            seeds = [s for s in by_seed if s in acc.get(label, {})]
            if not seeds:
                continue
            acc_mean, acc_std = _mean_std([acc[label][s] for s in seeds])
            aa_mean, aa_std = _mean_std([by_seed[s] for s in seeds])
            family = rows[label].family if label in rows else label
            points.append(Point(label, family, acc_mean, acc_std, aa_mean, aa_std, len(seeds)))
        front = pareto_front([(p.acc, p.attack_accuracy) for p in points])
        points = [replace(p, on_front=f) for p, f in zip(points, front, strict=True)]
        matched: dict[str, dict[float, tuple]] = {}
        families = dict.fromkeys(p.family for p in points if p.label != baseline)
        base_seeds = sorted(acc[baseline])
        for family in families:
            labels = [p.label for p in points if p.family == family]
            matched[family] = {}
            for drop in drops:
                values = []
                for seed in base_seeds:
                    curve = [(acc[lb][seed], aa[lb][seed]) for lb in labels if seed in acc[lb] and seed in aa[lb]]
                    value = interpolate_at(curve, acc[baseline][seed] - drop / 100)
                    if value is not None:
                        values.append(value)
                reached = len(values) == len(base_seeds) and bool(values)
                mean = sum(values) / len(values) if reached else None
                matched[family][drop] = (mean, t_interval(values) if reached else None, len(values), len(base_seeds))
        out.append(Frontier(attack, points, matched))
    return out


def baseline_label(suite: dict) -> str:
    """The undefended row's label in a (dumped) suite: its `none` entry; an error when it has none."""
    for entry in suite.get("defenses", []):
        if isinstance(entry, dict) and entry.get("name") == "none" and entry.get("sweep") is None:
            return entry.get("label") or "none"
    raise MibenchError("a frontier compares defenses at matched accuracy to the undefended target: add {name: none}")


def parse_drops(text: str | None) -> tuple[float, ...]:
    """`--accuracy-drops 1,2,5` (points); the default when None."""
    if text is None:
        return DEFAULT_DROPS
    try:
        drops = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise MibenchError(f"--accuracy-drops: give points separated by commas, e.g. 1,2,5 (got {text!r})") from None
    if not drops or any(not 0 <= d <= 100 for d in drops):
        raise MibenchError(f"--accuracy-drops: each drop is between 0 and 100 points (got {text!r})")
    return drops


def suite_frontier_table(records: list[Record], suite: dict | None, drops: Sequence[float]) -> Table:
    """The frontier table of a run whose plan holds `suite` (its sweeps and its undefended row)."""
    from mibench.suite.sweeps import sweep_rows

    if suite is None:
        raise MibenchError("--layout frontier needs a run folder (its plan.json names the sweeps)")
    return frontier_table(records, sweep_rows(suite), baseline_label(suite), drops)


def table_for_layout(
    records: list[Record], suite: dict | None, layout: str, caption: str | None = None, planned: int | None = None
) -> Table:
    """The table a layout names: the frontier (from the suite's sweeps), or a `LAYOUTS` table."""
    from mibench.reporting.tables import build_table

    if layout == "frontier":
        return suite_frontier_table(records, suite, DEFAULT_DROPS)
    return build_table(records, layout, caption, planned_seeds=planned)


def frontier_table(
    records: list[Record], rows: dict[str, SweepPoint], baseline: str, drops: Sequence[float] = DEFAULT_DROPS
) -> Table:
    """AA-1 at matched accuracy, one block per attack, one row per defense family (see module docstring)."""
    header = [HeaderCell("Acc range", None, None), HeaderCell("On front", None, None)]
    header += [HeaderCell(f"AA-1 @ Acc −{drop:g}", "aa1", False) for drop in drops]
    blocks = []
    for frontier in frontiers(records, rows, baseline, drops=drops):
        block = []
        base = next((p for p in frontier.points if p.label == baseline), None)
        if base is not None:
            cells = [_note(f"{base.acc * 100:.2f}"), _note("yes" if base.on_front else "no")]
            cells += [_note(f"{base.attack_accuracy * 100:.2f} at −0") for _ in drops]
            block.append((baseline, cells))
        for family, by_drop in frontier.matched.items():
            mine = [p for p in frontier.points if p.family == family]
            low, high = min(p.acc for p in mine), max(p.acc for p in mine)
            cells = [_note(f"{low * 100:.2f}–{high * 100:.2f}" if len(mine) > 1 else f"{low * 100:.2f}")]
            cells.append(_note(f"{sum(p.on_front for p in mine)} of {len(mine)}"))
            for drop in drops:
                mean, interval, reached, seeds = by_drop[drop]
                if mean is None:
                    why = "not reached" + (f" ({reached}/{seeds} seeds)" if reached else "")
                    cells.append(_note(why))
                else:
                    half = None if interval is None else (interval[1] - interval[0]) / 2
                    cells.append(Cell(mean, half, reached, "fraction"))
            block.append((family, cells))
        blocks.append((frontier.attack, block))
    drops_text = ", ".join(f"{d:g}" for d in drops)
    caption = (
        f"Attack accuracy (AA-1) at matched test accuracy: each defense's AA-1 interpolated along its sweep at the "
        f"undefended target's accuracy minus {drops_text} points, per seed; mean ± 95% t-interval half-width over "
        "seeds. 'Not reached': no strength of the defense has that accuracy on every seed (never extrapolated). "
        "'On front': the defense's points on the attack's Pareto front (no other row has higher or equal accuracy "
        "and lower or equal AA-1)."
    )
    suite = records[0].suite if records else "suite"
    return Table(header, blocks, caption, f"tab:{suite}-frontier")


def _note(text: str) -> Cell:
    return Cell(None, None, 0, "", note=text)
