"""Tables from records: mean ± std over seeds, laid out like the Trap-MID paper's Table 1.

Rows are defenses grouped in one block per attack; columns are Acc, AA-1, AA-5, KNN Dist and FID (or a labelled
Fréchet distance on other features). The best value of each column within a block is bold, by the direction the
records carry (the defender's). Reports never recompute anything: they read `records.jsonl` only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from mibench.api.records import RECORDS_FILE, Record, read_records
from mibench.reporting.layouts import LAYOUTS, PROTOCOL_METRICS, STAND_IN_LABELS, STAND_IN_NOTES

NO_ATTACK = ""


@dataclass(frozen=True)
class Cell:
    """Mean ± std of one metric over seeds; `bold` marks the best of its column within an attack block."""

    mean: float | None
    std: float | None
    n: int
    unit: str
    bold: bool = False
    planned: int | None = None  # seeds planned, when more than the n this cell holds
    mark: str = ""  # significance marks († / ‡, `mibench report --stats`)
    note: str = ""  # shown in place of an empty value (a frontier's "not reached", a range)

    def text(self, decimals: int = 2) -> str:
        """The cell text "mean ± std" (fractions as percentages), its marks, and "(n=k/N)" over too few seeds."""
        if self.mean is None:
            return self.note or "–"
        scale = 100.0 if self.unit == "fraction" else 1.0
        text = f"{self.mean * scale:.{decimals}f}"
        if self.std is not None and self.n >= 2:
            text = f"{text} ± {self.std * scale:.{decimals}f}"
        text += self.mark
        if self.planned is not None and self.n < self.planned:
            text += f" (n={self.n}/{self.planned})"
        return text

    def rounded(self, decimals: int = 2) -> float | None:
        """The mean as displayed, for comparisons a reader can check."""
        if self.mean is None:
            return None
        return round(self.mean * (100.0 if self.unit == "fraction" else 1.0), decimals)


@dataclass(frozen=True)
class HeaderCell:
    """A column header: label, the metric filling it, and the defender's better direction."""

    label: str
    metric: str | None
    higher_is_better: bool | None

    @property
    def arrow(self) -> str:
        """↑, ↓ or nothing."""
        return {True: "↑", False: "↓"}.get(self.higher_is_better, "")


@dataclass
class Table:
    """A rendered-agnostic table: header, attack blocks of (defense, cells) rows, caption."""

    header: list[HeaderCell]
    blocks: list[tuple[str, list[tuple[str, list[Cell]]]]]
    caption: str
    label: str


def records_frame(records: list[Record]) -> pd.DataFrame:
    """One row per record value, attack None written as ''."""
    rows = [
        {
            "attack": r.attack or NO_ATTACK,
            "defense": r.defense,
            "metric": r.metric,
            "seed": r.seed,
            "value": r.value,
            "higher_is_better": r.higher_is_better,
            "unit": r.unit,
        }
        for r in records
    ]
    return pd.DataFrame(rows, columns=["attack", "defense", "metric", "seed", "value", "higher_is_better", "unit"])


def summarize(records: list[Record]) -> pd.DataFrame:
    """Mean, sample std (ddof=1) and n over seeds per (attack, defense, metric), in first-appearance order."""
    df = records_frame(records)
    df = df[df["defense"].notna()]
    keys = ["attack", "defense", "metric"]
    grouped = df.groupby(keys, sort=False, dropna=False)
    out = grouped["value"].agg(mean="mean", std=lambda v: v.std(ddof=1), n="count").reset_index()
    meta = grouped[["higher_is_better", "unit"]].first().reset_index()
    return out.merge(meta, on=keys, how="left")


def _cell(summary: pd.DataFrame, attack: str, defense: str, metric: str) -> Cell | None:
    row = summary[(summary.attack == attack) & (summary.defense == defense) & (summary.metric == metric)]
    if row.empty:
        return None
    r = row.iloc[0]
    mean = None if pd.isna(r["mean"]) else float(r["mean"])
    std = None if pd.isna(r["std"]) else float(r["std"])
    return Cell(mean, std, int(r["n"]), str(r["unit"]))


def _mark_best(rows: list[tuple[str, list[Cell]]], header: list[HeaderCell]) -> None:
    if len(rows) < 2:
        return
    for j, head in enumerate(header):
        if head.higher_is_better is None:
            continue
        values = [cells[j].rounded() for _, cells in rows if cells[j].rounded() is not None]
        if not values:
            continue
        best = max(values) if head.higher_is_better else min(values)
        for _, cells in rows:
            if cells[j].rounded() == best:
                cells[j] = Cell(cells[j].mean, cells[j].std, cells[j].n, cells[j].unit, bold=True)


def method_key(label: str) -> str:
    """Labels compared loosely: case, spaces and punctuation ignored; '-' and '' mean no defense."""
    key = re.sub(r"[^a-z0-9+]", "", label.lower())
    return key or "none"


def extreme_runs(records: list[Record], by: str = "aa1", worst_for: tuple[str, ...] = ("trapmid",)) -> list[Record]:
    """Trap-MID Table 10's selection: per attack, each baseline's best run against Trap-MID's worst run.

    For every (attack, defense) the seed with the lowest `by` (the defender's best run) is kept, or the highest for
    the defenses named in `worst_for` (labels compared loosely); that seed's defense-level records (accuracy) are
    copied into the attack's block, and the row is relabelled "<defense> (best run)" / "(worst run)", the paper's
    variants. Undefended rows are left out, as in the paper.
    """
    out = [r for r in records if r.defense is None]
    pairs = dict.fromkeys((r.attack, r.defense) for r in records if r.attack is not None and r.defense is not None)
    for attack, defense in pairs:
        if method_key(defense) == "none":
            continue
        runs = {
            r.seed: r.value
            for r in records
            if (r.attack, r.defense, r.metric) == (attack, defense, by) and r.value is not None
        }
        if not runs:
            continue
        worst = method_key(defense) in worst_for
        seed = (max if worst else min)(runs, key=runs.__getitem__)
        label = f"{defense} ({'worst' if worst else 'best'} run)"
        out += [
            r.model_copy(update={"defense": label, "attack": attack})
            for r in records
            if r.defense == defense and r.seed == seed and r.attack in (attack, None)
        ]
    return out


def with_pcc_ratio(records: list[Record]) -> list[Record]:
    """MIDAS's PCC ratio beside PCC: each row's PCC over its clean baseline's, per attack and seed (`pcc_ratio`).

    The deep notebook reports how far bit errors bring an inversion's PCC down from the same network without them
    (`MIDAS_deep.ipynb`, cell 35). A row's baseline is the row of the same methods without MIDAS (the undefended
    target for MIDAS alone, Trap-MID for Trap-MID + MIDAS), read from the records' method versions.
    """

    def methods(r: Record) -> frozenset[str]:
        return frozenset(r.versions.get("methods", {}))

    pcc = [r for r in records if r.metric == "pcc" and r.value is not None]
    baselines = {}
    for r in pcc:
        if "midas" not in methods(r):
            baselines.setdefault((r.attack, r.seed, methods(r)), r)
    derived = []
    for r in pcc:
        base = baselines.get((r.attack, r.seed, methods(r) - {"midas"}))
        if base is None or not base.value:
            continue
        details = {"baseline": base.defense, "baseline_pcc": base.value}
        derived.append(r.model_copy(update={"metric": "pcc_ratio", "value": r.value / base.value, "details": details}))
    return records + derived


# Layouts that select records before aggregating, and the caption that says so.
RECORD_SELECTIONS = {
    "table10": (
        extreme_runs,
        "Single runs: per attack, the best of each defense's seeds and the worst of Trap-MID's, by AA-1",
    ),
    "midas": (with_pcc_ratio, "PCC / clean: each row's PCC over the same network's without MIDAS, per seed"),
}


def build_table(
    records: list[Record], layout: str = "table1", caption_prefix: str | None = None, planned_seeds: int | None = None
) -> Table:
    """Lay out `records` (see module docstring).

    A cell over fewer seeds than `planned_seeds` (default: the most any cell of the table has) shows "(n=k/N)".
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown report layout {layout!r}; allowed: {', '.join(LAYOUTS)}")
    if layout in RECORD_SELECTIONS:
        select, note = RECORD_SELECTIONS[layout]
        records = select(records)
        caption_prefix = f"{caption_prefix}. {note}" if caption_prefix else note
    summary = summarize(records)
    present = set(summary.metric)
    header, keys = [], []
    for col in LAYOUTS[layout]:
        metric = next((m for m in col.metrics if m in present), None)
        if metric is None:  # nothing in the run fills this column: leave it out rather than print it empty
            continue
        direction = summary[summary.metric == metric]["higher_is_better"].iloc[0]
        direction = None if pd.isna(direction) else bool(direction)
        header.append(HeaderCell(STAND_IN_LABELS.get(metric, col.label), metric, direction))
        keys.append(metric)

    defenses = list(dict.fromkeys(summary.defense))
    shown = summary[summary.metric.isin([k for k in keys if k is not None])]
    attacks = [a for a in dict.fromkeys(shown.attack) if a != NO_ATTACK]  # none: one block (Table 9)
    blocks = []
    for attack in attacks or [NO_ATTACK]:
        rows = []
        for defense in defenses:
            cells, attacked = [], attack == NO_ATTACK
            for metric in keys:
                cell = None
                if metric is not None:
                    cell = _cell(summary, attack, defense, metric)
                    attacked |= cell is not None
                    cell = cell or _cell(summary, NO_ATTACK, defense, metric)
                cells.append(cell or Cell(None, None, 0, "score"))
            # a defense the attack did not run against (its `defenses:` restriction) has no row in its block
            if attacked and any(c.mean is not None for c in cells):
                rows.append((defense, cells))
        _mark_best(rows, header)
        blocks.append((attack, rows))
    partial = _flag_partial_seeds(blocks, planned_seeds)
    caption = _caption(records, keys, caption_prefix)
    if partial:
        note = f"(n=k/{partial}): mean over only k of the {partial} planned seeds (failed or missing jobs)"
        caption = f"{caption[:-1]}. {note}."
    suite = records[0].suite if records else "suite"
    return Table(header, blocks, caption, f"tab:{suite}-{layout}")


def _flag_partial_seeds(blocks: list[tuple[str, list[tuple[str, list[Cell]]]]], planned: int | None) -> int | None:
    """Mark cells holding fewer seeds than planned; returns the planned count when any cell is short."""
    counts = [c.n for _, rows in blocks for _, cells in rows for c in cells if c.mean is not None]
    planned = planned or max(counts, default=0)
    short = False
    for _, rows in blocks:
        for i, (defense, cells) in enumerate(rows):
            flagged = [replace(c, planned=planned) if c.mean is not None and c.n < planned else c for c in cells]
            short |= flagged != cells
            rows[i] = (defense, flagged)
    return planned if short else None


def partial_cells(table: Table) -> list[str]:
    """'attack / defense / column: n=k/N' for every cell over fewer seeds than planned (for warnings)."""
    return [
        f"{attack or '-'} / {defense} / {head.label}: n={cell.n}/{cell.planned}"
        for attack, rows in table.blocks
        for defense, cells in rows
        for head, cell in zip(table.header, cells, strict=False)
        if cell.planned is not None and cell.mean is not None and cell.n < cell.planned
    ]


def _missing_notes(records: list[Record], keys: list[str | None]) -> list[str]:
    """Why shown metrics have missing values (the records' `details.reason`), one note per distinct reason."""
    reasons: dict[str, list[str]] = {}
    for r in records:
        if r.metric in keys and r.value is None and r.details.get("reason"):
            where = f"{r.attack or '-'} / {r.defense} / {r.metric} seed {r.seed}"
            reasons.setdefault(str(r.details["reason"]), []).append(where)
    return [f"Missing ({', '.join(where)}): {reason}" for reason, where in reasons.items()]


def _protocol_notes(records: list[Record], keys: list[str | None]) -> list[str]:
    """Which evaluation protocol the table's AA/KNN/FID/PRDC columns show."""
    followed = {
        str(r.details.get("protocol", "standard"))
        for r in records
        if r.metric in keys and r.metric in PROTOCOL_METRICS and r.attack
    }
    if not followed:
        return []
    if followed == {"published"}:
        return ["Evaluation protocol: published (each attack's official metric pipeline; see the records' pipeline)"]
    if followed == {"standard"}:
        return ["Evaluation protocol: standard (mibench's clean metric pipeline, not the papers' own code)"]
    return ["Evaluation protocol: mixed standard and published (see each record's details)"]


def _capped_walk_notes(records: list[Record]) -> list[str]:
    """BREP-MI walks stopped by mibench's iteration cap (the official code has none), where any were."""
    capped: dict[tuple[str, str], int] = {}
    for r in records:
        if r.metric == "walks_capped" and r.value:
            key = (r.attack or "", r.defense or "-")
            capped[key] = capped.get(key, 0) + int(r.value)
    if not capped:
        return []
    where = ", ".join(f"{n} for {a} vs {d}" for (a, d), n in capped.items())
    return [f"Walks stopped by the iteration cap (not in the official code), summed over seeds: {where}"]


def recipe_differences(records: list[Record]) -> list[str]:
    """Defenses whose effective training recipe differs from the undefended target's, with the differing fields.

    Read from the target records' `recipe` details (`train_time_s`); empty when the run has no undefended row.
    """
    recipes: dict[str, dict] = {}
    for r in records:
        if r.metric == "train_time_s" and r.attack is None and isinstance(r.details.get("recipe"), dict):
            recipes.setdefault(r.defense or "", r.details["recipe"])
    base = next((recipe for label, recipe in recipes.items() if method_key(label) == "none"), None)
    if base is None:
        return []
    out = []
    for label, recipe in recipes.items():
        changed = [
            f"{key} {_text(recipe.get(key))}"
            for key in sorted(set(base) | set(recipe))
            if recipe.get(key) != base.get(key)
        ]
        if changed:
            out.append(f"{label} ({', '.join(changed)})")
    return out


def _text(value: object) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _caption(records: list[Record], keys: list[str | None], prefix: str | None) -> str:
    seeds = sorted({r.seed for r in records if r.seed is not None})
    parts = [prefix] if prefix else []
    parts.append(f"Mean ± std (sample std, ddof=1) over {len(seeds)} seed{'s' * (len(seeds) != 1)}")
    evaluator = [r for r in records if r.metric == "evaluator_acc" and r.value is not None]
    if evaluator:
        arch = evaluator[0].details.get("architecture", "evaluation model")
        parts.append(f"AA-1/AA-5 by the evaluation model {arch} ({100 * evaluator[0].value:.2f}% test accuracy)")
    n_recon = sorted({r.details.get("n") for r in records if r.metric == "aa1"} - {None})
    if n_recon:
        parts.append(f"{'/'.join(map(str, n_recon))} reconstructions per attack")
    if "knn_dist" in keys:
        parts.append("KNN Dist: squared L2 in evaluation-model features to the nearest private image")
    if "facenet_dist" in keys:
        parts.append("FaceNet Dist: the same in the VGGFace2 FaceNet embedding (PPA's δ_face)")
    parts += [STAND_IN_NOTES[k] for k in keys if k in STAND_IN_NOTES]
    if "initial_rounds" in keys:
        parts.append(
            "Init. iterations: rounds of 256 latents labelled until every attacked class had a start, counted from 1 "
            "(BREP-MI's code prints the 0-based round index)"
        )
    parts += _capped_walk_notes(records)
    differing = recipe_differences(records)
    if differing:
        parts.append("Trained with a recipe other than the undefended target's: " + "; ".join(differing))
    parts += _protocol_notes(records, keys)
    parts += _missing_notes(records, keys)
    parts.append("Best per attack in bold; arrows give the better direction for the defender")
    return ". ".join(parts) + "."


def load_run_records(run_dir: Path) -> list[Record]:
    """Records of a run folder (or a records file given directly)."""
    path = run_dir / RECORDS_FILE if run_dir.is_dir() else run_dir
    if not path.is_file():
        raise FileNotFoundError(f"no {RECORDS_FILE} in {run_dir}: run `mibench run SUITE` first")
    return read_records(path)
