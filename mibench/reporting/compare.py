"""`mibench report --compare-paper`: the Trap-MID paper's published values beside a run's, like with like only.

A value is set beside the paper's only when it was measured the way the paper's was:

* the run's setting matches the paper table's (private and auxiliary data, target architecture, private identities,
  attacked identities; `setting_differences`); otherwise the comparison is refused with every difference named, or,
  with `--compare-anyway`, made with the differences in the caption;
* protocol-dependent metrics (AA, KNN, FID, PRDC) were measured with `protocol: published`, i.e. through the
  attack's official pipeline; a standard-protocol value leaves the paper cell empty and the caption says why;
* the metric is the same one: FD-eval is never paired with FID.
"""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path
from typing import Any

from mibench.api.records import Record
from mibench.reporting.tables import PROTOCOL_METRICS, Cell, HeaderCell, Table, method_key

# Published values (Trap-MID, NeurIPS 2024, Tables 1-20), one row per (table, attack, defense, metric): the project's
# copy of specs/paper-results.csv. Accuracies are in percent there.
PAPER_RESULTS = Path(__file__).parents[1] / "reference" / "paper_results.csv"
PERCENT_METRICS = {"acc", "aa1", "aa5", "precision", "recall", "coverage", "nn_private_pct", "nn_public_pct"}
# Our metric -> (the paper CSV's metric, factor from the paper's unit to ours).
PAPER_METRIC = {
    "nn_private_share": ("nn_private_pct", 1.0),
    "train_time_s": ("train_time_min", 60.0),
    "initial_rounds": ("init_iterations", 1.0),
}

# The paper's settings beyond the CSV's columns: 1,000 private CelebA identities; 300 attacked, 1,000 for PPA.
PAPER_PRIVATE_CLASSES = 1000
PAPER_ATTACKED = {19: 1000, 20: 1000}
PAPER_ARCHITECTURES = {
    "vgg16": {"vgg16"},
    "faceevolve": {"facenet64"},
    "resnet152": {"ir152", "resnet152"},
    "densenet169": {"densenet169"},
    "resnest101": {"resnest101"},
}


def paper_values(
    table_number: int, path: Path = PAPER_RESULTS, architecture: str | None = None
) -> dict[tuple[str, str, str], Cell]:
    """{(attack key, defense key, metric): published mean ± std} of one paper table.

    A row with a variant (an ablation's setting) is keyed by defense and variant together, so that a defense labelled
    "Trap-MID (alpha=0.03)" or "TeD alpha=0.1" meets the paper's "Trap-MID" / "alpha=0.03" row; `default` (Table 19's
    Trap-MID with default settings) also stands for the plain label. With `architecture`, only that target's rows
    (labels compared loosely).
    """
    out: dict[tuple[str, str, str], Cell] = {}
    for row in _rows(table_number, path, architecture):
        if not row["mean"] or "?" in row["variant"]:
            continue
        scale = 0.01 if row["metric"] in PERCENT_METRICS else 1.0
        unit = "fraction" if row["metric"] in PERCENT_METRICS else "score"
        std = float(row["std"]) * scale if row["std"] else None
        cell = Cell(float(row["mean"]) * scale, std, 5, unit)
        defenses = [row["defense"] + row["variant"]] + ([row["defense"]] if row["variant"] == "default" else [])
        for defense in defenses:
            out[method_key(row["attack"]), method_key(defense), row["metric"]] = cell
    if not out:
        which = f" for architecture {architecture!r}" if architecture else ""
        raise ValueError(f"the paper has no results table {table_number}{which} in {path}")
    return out


def _rows(table_number: int, path: Path, architecture: str | None) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [
            row
            for row in csv.DictReader(f)
            if row["table"] == str(table_number)
            and (not architecture or method_key(row["architecture"]) == method_key(architecture))
        ]


def setting_differences(
    suite: dict[str, Any], table_number: int, path: Path = PAPER_RESULTS, architecture: str | None = None
) -> list[str]:
    """How a run's suite (plan.json's `suite`) differs from the setting of the paper's table; empty when it matches."""
    rows = _rows(table_number, path, architecture)
    if not rows:
        return []
    row = rows[0]
    data, target = suite.get("data", {}), suite.get("target", {})
    params = data.get("params") or {}
    out = []
    private = row["private_data"]
    hd = "224" in private
    want_dataset = "image-folder" if hd else "celeba"
    if data.get("dataset") != want_dataset or (hd and data.get("image_size") != 224):
        out.append(f"private data: {data.get('dataset')} at {data.get('image_size')} (paper: {private})")
    aux = row["aux_data"]
    public = (data.get("public") or {}).get("dataset")
    if aux and method_key(aux) == "ffhq" and public != "ffhq":
        out.append(f"auxiliary data: {public or 'the private dataset public split'} (paper: {aux})")
    if aux and method_key(aux) == "celeba" and public not in (None, "celeba"):
        out.append(f"auxiliary data: {public} (paper: {aux})")
    arch = target.get("architecture")
    allowed = PAPER_ARCHITECTURES.get(method_key(architecture or row["architecture"]), set())
    if arch not in allowed:
        out.append(f"target architecture: {arch} (paper: {architecture or row['architecture']})")
    classes = _private_classes(data.get("dataset"), params)
    if classes is not None and classes != PAPER_PRIVATE_CLASSES:
        out.append(f"private identities: {classes} (paper: {PAPER_PRIVATE_CLASSES})")
    attacked = suite.get("attacked_classes")
    attacked_count = len(attacked) if isinstance(attacked, list) else attacked
    want = PAPER_ATTACKED.get(table_number, 300)
    if table_number != 9 and attacked_count != want:
        out.append(f"attacked identities: {attacked_count} (paper: {want})")
    return out


def _private_classes(dataset: str | None, params: dict[str, Any]) -> int | None:
    """The number of private identities a suite's data section implies, when it says (None: not known here)."""
    if dataset == "celeba":
        return params.get("num_private", 1000) if params.get("split") == "protocol" else 1000
    if dataset == "image-folder" and isinstance(params.get("private_classes"), int):
        return params["private_classes"]
    if dataset in ("mnist", "digits"):
        return 5
    if dataset == "synthetic-identities":
        return params.get("num_private")
    return None


def measured_protocols(records: list[Record]) -> dict[tuple[str, str], set[str]]:
    """{(attack, metric): the protocols its protocol-dependent records followed} ("standard" when not recorded)."""
    out: dict[tuple[str, str], set[str]] = {}
    for r in records:
        if r.metric in PROTOCOL_METRICS and r.attack:
            pipeline = str(r.details.get("pipeline", "standard"))
            followed = (
                "published"
                if r.details.get("protocol") == "published" and not pipeline.startswith("standard")
                else "standard"
            )
            out.setdefault((r.attack, r.metric), set()).add(followed)
    return out


def with_paper_columns(
    table: Table,
    table_number: int,
    path: Path = PAPER_RESULTS,
    architecture: str | None = None,
    records: list[Record] | None = None,
    differences: list[str] | None = None,
) -> Table:
    """`table` with a "(paper)" column after each metric the paper's table reports.

    Cells are filled where attack, defense and metric match (labels compared loosely) and, for protocol-dependent
    metrics, only where `records` show the published protocol (old records without a protocol count as standard).
    Only identical metrics are paired: FD-eval is never set beside FID. `differences` (a setting compared anyway)
    are named in the caption.
    """
    published = paper_values(table_number, path, architecture)
    for ours, (theirs, factor) in PAPER_METRIC.items():  # the paper's names and units for our metrics
        for (a, d, m), cell in list(published.items()):
            if m == theirs:
                std = None if cell.std is None else cell.std * factor
                published[a, d, ours] = Cell(cell.mean * factor, std, cell.n, cell.unit)
    protocols = measured_protocols(records or [])
    metrics = {m for _, _, m in published}
    pairs = {i for i, h in enumerate(table.header) if h.metric in metrics}
    header = []
    for i, h in enumerate(table.header):
        header.append(h)
        if i in pairs:
            header.append(HeaderCell(f"{h.label} (paper)", None, None))
    withheld: dict[str, set[str]] = {}
    blocks = []
    for attack, rows in table.blocks:
        new_rows = []
        for defense, cells in rows:
            new_cells = []
            for i, cell in enumerate(cells):
                new_cells.append(cell)
                if i not in pairs:
                    continue
                metric = table.header[i].metric
                paper = published.get((method_key(attack), method_key(defense), metric))
                if paper is not None and "standard" in protocols.get((attack, metric), set()):
                    withheld.setdefault(table.header[i].label, set()).add(attack)
                    paper = None
                new_cells.append(replace(paper, bold=False) if paper else Cell(None, None, 0, "score"))
            new_rows.append((defense, new_cells))
        blocks.append((attack, new_rows))
    notes = [
        f"(paper): published values of Trap-MID (Liu & Chen, NeurIPS 2024) Table {table_number}, mean ± std over "
        "5 runs; bold compares our rows only"
    ]
    for label, attacks in withheld.items():
        notes.append(
            f"{label} (paper) left empty for {', '.join(sorted(attacks))}: measured with the standard protocol, while "
            "the paper's values come from each attack's official pipeline (run with protocol: published to compare)"
        )
    if differences:
        notes.append(f"Compared anyway although the setting differs from the paper's: {'; '.join(differences)}")
    return Table(header, blocks, f"{table.caption[:-1]}. {'. '.join(notes)}.", table.label)
