"""`mibench report RUN_DIR [RUN_DIR ...] --html`: one self-contained page to open offline and share.

Everything is inlined (CSS, a few lines of vanilla JavaScript for sorting, figures as base64 PNG), so the file opens
from disk without a server or network. One run gives its tables in every layout it fills (with the seed flags and,
with `stats`, the significance marks of the text reports), the utility/privacy trade-off plot, one reconstruction
grid per attack (downscaled), and a provenance panel (suite, git commit, method versions, weight hashes, devices,
wall time per stage); with a paper table, the paper's values beside ours, coloured by how many paper standard
deviations they differ. Several runs give a leaderboard: one row per target x defense, one column per attack.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import yaml

from mibench.api.records import Record
from mibench.errors import MibenchError
from mibench.reporting.compare import paper_values
from mibench.reporting.tables import LAYOUTS, NO_ATTACK, Cell, Table, build_table, method_key, summarize
from mibench.suite.sweeps import sweep_rows

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}h3{font-size:1em}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f3f3f3;cursor:pointer;user-select:none}
th.sorted-asc::after{content:" \\25B2"}th.sorted-desc::after{content:" \\25BC"}
td.best{font-weight:bold}td.paper{color:#555}.d0{background:#dff0d8}.d1{background:#fcf8e3}.d2{background:#f2dede}
.caption{color:#555;font-size:.9em;max-width:60em}img{max-width:100%;border:1px solid #eee}
pre{background:#f7f7f7;padding:.6em;overflow:auto;font-size:.85em}details{margin:.5em 0}
"""

# Click a header: sort that table's rows by the column (numbers first, "–" last), toggling the direction.
SCRIPT = """
function cellValue(row, i){const t=row.cells[i].textContent.trim();const v=parseFloat(t);return isNaN(v)?null:v}
function sortTable(th){
  const table=th.closest('table'), i=th.cellIndex, body=table.tBodies[0];
  const asc=!th.classList.contains('sorted-asc');
  table.querySelectorAll('th').forEach(h=>h.classList.remove('sorted-asc','sorted-desc'));
  th.classList.add(asc?'sorted-asc':'sorted-desc');
  const rows=Array.from(body.rows);
  rows.sort((a,b)=>{const x=cellValue(a,i),y=cellValue(b,i);
    if(x===null&&y===null){return a.cells[i].textContent.localeCompare(b.cells[i].textContent)}
    if(x===null){return 1} if(y===null){return -1} return asc?x-y:y-x});
  rows.forEach(r=>body.appendChild(r));
}
document.querySelectorAll('th').forEach(th=>th.addEventListener('click',()=>sortTable(th)));
"""


def _cell_html(cell: Cell, extra: str = "") -> str:
    classes = " ".join(c for c in ("best" if cell.bold else "", extra) if c)
    attr = f' class="{classes}"' if classes else ""
    return f"<td{attr}>{html.escape(cell.text())}</td>"


def table_html(table: Table, paper: dict[tuple[str, str, str], Cell] | None = None) -> str:
    """One sortable <table> per attack block; paper values (if given) coloured by their distance in paper stds."""
    parts = []
    for attack, rows in table.blocks:
        paper_cols = [h.metric for h in table.header] if paper else []
        shown_paper = [m for m in paper_cols if any(_paper_cell(paper, attack, d, m) for d, _ in rows)]
        head = ["Defense", *(f"{h.label} {h.arrow}".strip() for h in table.header)]
        head += [f"{h.label} (paper)" for h in table.header if h.metric in shown_paper]
        body = []
        for defense, cells in rows:
            tds = [f"<td>{html.escape(defense)}</td>", *(_cell_html(c) for c in cells)]
            for h, cell in zip(table.header, cells, strict=True):
                if h.metric not in shown_paper:
                    continue
                published = _paper_cell(paper, attack, defense, h.metric)
                colour = f"paper {_distance_class(cell, published)}" if published else ""
                tds.append(_cell_html(published, colour) if published else "<td>–</td>")
            body.append(f"<tr>{''.join(tds)}</tr>")
        title = f"<h3>{html.escape(attack)}</h3>" if attack != NO_ATTACK else ""
        ths = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        rows_html = "".join(body)
        parts.append(f'{title}<table class="results"><thead><tr>{ths}</tr></thead><tbody>{rows_html}</tbody></table>')
    parts.append(f'<p class="caption">{html.escape(table.caption)}</p>')
    return "\n".join(parts)


def _paper_cell(paper: dict | None, attack: str, defense: str, metric: str | None) -> Cell | None:
    if not paper or metric is None:
        return None
    return paper.get((method_key(attack), method_key(defense), metric))


def _distance_class(ours: Cell, paper: Cell) -> str:
    """d0 / d1 / d2: within 1, within 2, or beyond 2 paper standard deviations of the paper's mean."""
    if ours.mean is None or paper.mean is None or not paper.std:
        return ""
    distance = abs(ours.mean - paper.mean) / paper.std
    return "d0" if distance <= 1 else "d1" if distance <= 2 else "d2"


def layouts_in(records: list[Record], preferred: str | None) -> list[str]:
    """The layouts the run fills: the suite's, then every other distinct one with at least two columns measured."""
    present = {r.metric for r in records}
    seen: set[tuple] = set()
    out = []
    for name in [preferred, *LAYOUTS] if preferred else list(LAYOUTS):
        columns = LAYOUTS.get(name)
        if columns is None or columns in seen or name == "table10":
            continue
        seen.add(columns)
        filled = sum(any(m in present for m in c.metrics) for c in columns)
        if name == preferred or (filled >= 2 and filled == len(columns)):
            out.append(name)
    return out


def png_data_uri(figure_bytes: bytes) -> str:
    """An inline image."""
    return "data:image/png;base64," + base64.b64encode(figure_bytes).decode()


def provenance(records: list[Record], info: dict[str, Any] | None) -> str:
    """Suite text, git commit, method versions, weight hashes, devices and wall time per stage."""
    git = sorted({str(r.versions.get("git")) for r in records if r.versions.get("git")})
    methods: dict[str, Any] = {}
    for r in records:
        methods.update(r.versions.get("methods", {}))
    hashes = sorted({f"{r.details.get('weights')}: {r.details['weights_sha256']}" for r in records
                     if r.details.get("weights_sha256")})  # fmt: skip
    devices = sorted({r.device for r in records if r.device})
    per_stage: dict[str, float] = {}
    jobs = {(r.stage, r.job_key): r.wall_time_s or 0.0 for r in records}  # one wall time per job, not per record
    for (stage, _), seconds in jobs.items():
        per_stage[stage] = per_stage.get(stage, 0.0) + seconds
    rows = [
        ("git commit", ", ".join(git) or "unknown"),
        ("methods", ", ".join(f"{k} v{v}" for k, v in sorted(methods.items()))),
        ("weights", "; ".join(hashes) or "none recorded"),
        ("devices", ", ".join(devices)),
        ("wall time per stage (s)", ", ".join(f"{k} {v:.1f}" for k, v in sorted(per_stage.items()))),
    ]
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
    suite = yaml.safe_dump(info["suite"], sort_keys=False) if info else "(no plan.json)"
    return (
        f'<table id="provenance"><tbody>{body}</tbody></table>'
        f"<details><summary>suite as run</summary><pre>{html.escape(suite)}</pre></details>"
    )


def page(title: str, sections: list[tuple[str, str]]) -> str:
    """The whole document."""
    body = "".join(f"<h2>{html.escape(name)}</h2>\n{content}\n" for name, content in sections)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n{body}<script>{SCRIPT}</script>"
        "</body></html>\n"
    )


def run_page(
    run_dir: Path,
    records: list[Record],
    info: dict[str, Any] | None,
    *,
    stats: bool = False,
    paper_table: int | None = None,
    architecture: str | None = None,
    grids: dict[str, bytes] | None = None,
    tradeoff: bytes | None = None,
) -> str:
    """The page of one run (figures are given as PNG bytes; the caller renders them)."""
    from mibench.reporting.stats import annotate_significance

    suite = (info or {}).get("suite", {})
    preferred = (suite.get("report") or {}).get("layout")
    planned = len(suite.get("seeds", [])) or None
    paper = paper_values(paper_table, architecture=architecture) if paper_table else None
    sections = []
    rows = sweep_rows(suite) if suite else {}
    if preferred == "frontier" or rows:
        from mibench.reporting.frontier import baseline_label, frontier_table

        try:
            table = frontier_table(records, rows, baseline_label(suite))
            sections.append(("Matched accuracy (frontier)", table_html(table, None)))
        except MibenchError as exc:  # no undefended row or accuracy: the page says why instead of failing
            sections.append(("Matched accuracy (frontier)", f'<p class="caption">{html.escape(str(exc))}</p>'))
    for layout in layouts_in(records, preferred):
        table = build_table(records, layout, planned_seeds=planned)
        if stats:
            table, _ = annotate_significance(table, records)
        sections.append((f"Table ({layout})", table_html(table, paper)))
    if paper:
        sections.append(
            (
                "Paper comparison",
                f'<p class="caption">(paper): Trap-MID (NeurIPS 2024) Table {paper_table}; ours within 1 (green), 2 '
                "(yellow) or more (red) paper standard deviations of the paper's mean.</p>",
            )
        )
    if tradeoff:
        sections.append(("Utility and privacy", f'<img id="tradeoff" alt="trade-off" src="{png_data_uri(tradeoff)}">'))
    for attack, image in (grids or {}).items():
        tag = f'<img class="grid" alt="{html.escape(attack)}" src="{png_data_uri(image)}">'
        sections.append((f"Reconstructions: {attack}", tag))
    sections.append(("Provenance", provenance(records, info)))
    return page(f"mibench: {suite.get('name', run_dir.name)}", sections)


def leaderboard(runs: list[tuple[Path, list[Record], dict[str, Any] | None]]) -> str:
    """One row per target x defense over all runs, columns Acc and AA-1 per attack (mean ± std over seeds)."""
    attacks: list[str] = []
    rows: list[tuple[str, str, str, dict[str, Cell]]] = []
    for run_dir, records, info in runs:
        suite = (info or {}).get("suite", {})
        target = (suite.get("target") or {}).get("architecture", "?")
        data = (suite.get("data") or {}).get("dataset", "?")
        summary = summarize(records)
        for defense in dict.fromkeys(summary.defense):
            cells: dict[str, Cell] = {}
            for _, r in summary[summary.defense == defense].iterrows():
                if r["metric"] == "acc" and r["attack"] == NO_ATTACK:
                    cells["Acc"] = Cell(r["mean"], r["std"], int(r["n"]), r["unit"])
                elif r["metric"] == "aa1":
                    attacks.append(r["attack"])
                    cells[f"AA-1 {r['attack']}"] = Cell(r["mean"], r["std"], int(r["n"]), r["unit"])
            rows.append((suite.get("name", run_dir.name), f"{target} on {data}", defense, cells))
    columns = ["Acc", *(f"AA-1 {a}" for a in dict.fromkeys(attacks))]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["Run", "Target", "Defense", *columns])
    body = []
    for run, target, defense, cells in rows:
        tds = [f"<td>{html.escape(x)}</td>" for x in (run, target, defense)]
        tds += [_cell_html(cells[c]) if c in cells else "<td>–</td>" for c in columns]
        body.append(f"<tr>{''.join(tds)}</tr>")
    rows_html = "".join(body)
    table = f'<table class="results" id="leaderboard"><thead><tr>{head}</tr></thead><tbody>{rows_html}</tbody></table>'
    note = '<p class="caption">Mean ± std over each run\'s seeds; AA-1 lower is better for the defender.</p>'
    return page("mibench leaderboard", [("Leaderboard", table + note)])


def figure_png(figure) -> bytes:
    """A matplotlib Figure as PNG bytes at a screen resolution (keeps pages small)."""
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def load_info(run_dir: Path) -> dict[str, Any] | None:
    """plan.json of a run folder, if present (an unreadable one is an error naming it)."""
    from mibench.running.runner import load_plan_info

    return load_plan_info(run_dir) if (run_dir / "plan.json").is_file() else None
