"""`mibench report`: text tables, CSV, the HTML page and the leaderboard from run folders (the CLI's report verb)."""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from mibench.errors import MibenchError
from mibench.fileio import write_atomic


def cmd_report(args: argparse.Namespace) -> int:
    """Render a run's records as a table."""
    from mibench.reporting.card import accuracy_card
    from mibench.reporting.compare import with_paper_columns
    from mibench.reporting.render import render_csv, render_latex, render_markdown
    from mibench.reporting.stats import annotate_significance, comparisons_text
    from mibench.reporting.tables import build_table, load_run_records, partial_cells
    from mibench.running.runner import load_plan_info, run_folders, running_note

    if args.list:
        sys.stdout.write(runs_listing(run_folders(args.root)))
        return 0
    if not args.run_dir:
        folders = run_folders(args.root)
        if not folders:
            raise MibenchError(f"no run folders under {args.root}/: give RUN_DIR, or run `mibench run SUITE` first")
        args.run_dir = [folders[0]]
        print(f"mibench: reporting the newest run, {folders[0]}", file=sys.stderr)
    if args.verify:
        return _verify_report(args)
    if args.format == "html":
        return _html_report(args)
    if len(args.run_dir) > 1:
        raise MibenchError("several run folders make one page: add --html (a leaderboard)")
    args.run_dir = args.run_dir[0]
    note = running_note(args.run_dir) if args.run_dir.is_dir() else None
    if note:
        print(f"mibench: warning: {note}", file=sys.stderr)
    records = load_run_records(args.run_dir)
    if not records:
        empty = f"{args.run_dir}: no records (no job of the run finished; `mibench report --list` shows failures)"
        if args.strict:
            raise MibenchError(f"{empty} (--strict)")
        print(f"mibench: warning: {empty}", file=sys.stderr)
    fmt = args.format or "markdown"
    layout, caption, architecture, suite = args.layout, None, None, None
    if args.run_dir.is_dir() and (args.run_dir / "plan.json").is_file():
        info = load_plan_info(args.run_dir)
        suite = info["suite"]
        missing = failed_jobs_note(info)
        if missing and args.strict:
            raise MibenchError(f"{missing} (--strict)")
        if missing:
            print(f"mibench: warning: {missing}", file=sys.stderr)
        report_spec = suite.get("report", {})
        layout = layout or report_spec.get("layout")
        caption = report_spec.get("caption")
        architecture = report_spec.get("paper_architecture")
    layout = layout or "table1"
    planned = len(suite.get("seeds", [])) or None if suite else None
    if fmt == "csv":
        if args.compare_paper is not None:
            raise MibenchError("--compare-paper renders a table: use --latex or --markdown")
        text = render_csv(records, planned)
    elif layout == "frontier":
        from mibench.reporting.frontier import parse_drops, suite_frontier_table

        table = suite_frontier_table(records, suite, parse_drops(args.accuracy_drops))
        text = render_latex(table) if fmt == "latex" else render_markdown(table)
    else:
        table = build_table(records, layout, caption, planned_seeds=planned)
        card, warnings = accuracy_card(records, layout, suite)
        if card:  # the evaluator's and the undefended target's accuracy beside the paper's
            table.caption = f"{table.caption.rstrip('.')}. {'. '.join(card)}."
        for warning in warnings:
            print(f"mibench: warning: {warning}", file=sys.stderr)
        short = partial_cells(table)
        if short:
            listing = "; ".join(short)
            if args.strict:
                raise MibenchError(f"cells over fewer seeds than planned (--strict): {listing}")
            print(f"mibench: warning: cells over fewer seeds than planned: {listing}", file=sys.stderr)
        comparisons = []
        if args.stats:
            table, comparisons = annotate_significance(table, records)
        if args.compare_paper is not None:
            if suite is None:
                raise MibenchError(f"{args.run_dir}: --compare-paper needs a run folder (its plan.json has the suite)")
            number, architecture, differences = paper_table(args, suite)
            table = with_paper_columns(
                table, number, architecture=architecture, records=records, differences=differences
            )
        text = render_latex(table) if fmt == "latex" else render_markdown(table)
        if args.stats:
            text += "\n" + comparisons_text(comparisons)
    if args.out:
        write_atomic(args.out, text)
    else:
        sys.stdout.write(text)
    return 0


def _verify_report(args: argparse.Namespace) -> int:
    """`mibench report RUN --verify`: every record against its artifact; exit 1 when any is unbacked."""
    from mibench.api.records import RECORDS_FILE
    from mibench.running.runner import load_plan_info, verify_records
    from mibench.running.store import ArtifactStore

    status = 0
    for run_dir in args.run_dir:
        cache = args.cache or Path(load_plan_info(run_dir)["cache"])
        problems, checked = verify_records(run_dir / RECORDS_FILE, ArtifactStore(cache))
        for line in problems:
            print(line)
        print(f"{run_dir}: {checked} records checked against the artifacts in {cache}: "
              + (f"{len(problems)} not backed" if problems else "every one backed"))  # fmt: skip
        status = status or int(bool(problems))
    return status


def failed_jobs_note(info: dict) -> str | None:
    """One line naming the jobs of a run that failed or were skipped (their cells are missing from its tables)."""
    failed, skipped = info.get("failed") or {}, info.get("skipped") or {}
    if not failed and not skipped:
        return None
    labels = {job["id"]: job["label"] for job in info.get("jobs", [])}
    named = "; ".join(f"{labels.get(job, job)}: {str(error).splitlines()[0][:200]}" for job, error in failed.items())
    return (f"{len(failed)} job(s) failed and {len(skipped)} were skipped downstream of them, so their cells are "
            f"missing from the table: {named}")  # fmt: skip


def _html_report(args: argparse.Namespace) -> int:
    """The self-contained HTML page of one run, or a leaderboard of several."""
    from mibench.reporting import html as html_report
    from mibench.reporting.tables import load_run_records
    from mibench.running.runner import running_note

    for note in filter(None, (running_note(d) for d in args.run_dir if d.is_dir())):
        print(f"mibench: warning: {note}", file=sys.stderr)
    runs = [(d, load_run_records(d), html_report.load_info(d)) for d in args.run_dir]
    if len(runs) > 1:
        text = html_report.leaderboard(runs)
        out = args.out or Path("leaderboard.html")
    else:
        run_dir, records, info = runs[0]
        out = args.out or (run_dir / "report.html" if run_dir.is_dir() else Path("report.html"))
        text = run_page_text(run_dir, records, info, stats=args.stats, **_html_paper(args, info))
    write_atomic(out, text)
    print(out)
    return 0


def run_page_text(run_dir: Path, records: list, info: dict | None, **options) -> str:
    """One run's self-contained HTML page (tables, figures, provenance)."""
    from mibench.reporting import html as html_report

    return html_report.run_page(run_dir, records, info, **_html_figures(run_dir, records, info), **options)


def write_run_page(run_dir: Path, records: list) -> Path:
    """Write `run_dir/report.html` (what `mibench report RUN_DIR --html` writes) of `records`; returns its path."""
    from mibench.reporting import html as html_report

    out = run_dir / "report.html"
    write_atomic(out, run_page_text(run_dir, records, html_report.load_info(run_dir)))
    return out


def paper_table(args: argparse.Namespace, suite: dict) -> tuple[int, str | None, list[str]]:
    """(paper table number, architecture, setting differences) for --compare-paper; refuses another setting.

    The table is `--compare-paper N`, else the number in the layout's name; differences refuse the comparison unless
    `--compare-anyway`.
    """
    from mibench.reporting.compare import setting_differences

    report_spec = suite.get("report") or {}
    layout = args.layout or report_spec.get("layout") or "table1"
    number = args.compare_paper or int(re.sub(r"\D", "", layout) or 1)
    architecture = report_spec.get("paper_architecture")
    differences = setting_differences(suite, number, architecture=architecture)
    if differences and not args.compare_anyway:
        raise MibenchError(
            f"--compare-paper: the run's setting differs from the paper's Table {number}: "
            f"{'; '.join(differences)} (--compare-anyway compares regardless and says so in the caption)"
        )
    return number, architecture, differences


def _html_paper(args: argparse.Namespace, info: dict | None) -> dict:
    """The paper table for an HTML page (checked against the run's setting as the text reports are)."""
    if args.compare_paper is None or info is None:
        return {}
    number, architecture, _ = paper_table(args, info["suite"])
    return {"paper_table": number, "architecture": architecture}


def _html_figures(run_dir: Path, records: list, info: dict | None) -> dict:
    """The trade-off plot and the reconstruction grids as PNG bytes (whatever the run and cache allow)."""
    from mibench.reporting.figures import frontier_figure, grid_figure, tradeoff_figure
    from mibench.reporting.html import figure_png
    from mibench.running.store import ArtifactStore
    from mibench.suite.sweeps import sweep_rows

    out: dict = {"grids": {}}
    try:
        swept = info is not None and sweep_rows(info["suite"])
        figure = frontier_figure(records, info["suite"]) if swept else tradeoff_figure(records)
        out["tradeoff"] = figure_png(figure)
    except MibenchError:
        out["tradeoff"] = None
    if info is None:
        return out
    store = ArtifactStore(Path(info["cache"]))
    for attack in dict.fromkeys(a["label"] for a in info["suite"].get("attacks", [])):
        try:
            out["grids"][attack] = figure_png(grid_figure(info, store, attack, classes=6))
        except (MibenchError, OSError) as exc:
            print(f"mibench: no reconstruction grid for {attack}: {exc}", file=sys.stderr)
    return out


def runs_listing(folders: list[Path]) -> str:
    """One line per run folder: path, suite, date, seeds, jobs finished and failed."""
    import json

    lines = []
    for folder in folders:
        try:
            plan = json.loads((folder / "plan.json").read_text())
        except (OSError, ValueError):
            lines.append(f"{folder}  (unreadable plan.json)")
            continue
        suite = plan.get("suite", {})
        jobs, failed = len(plan.get("jobs", [])), len(plan.get("failed", {})) + len(plan.get("skipped", {}))
        date = time.strftime("%Y-%m-%d %H:%M", time.localtime((folder / "plan.json").stat().st_mtime))
        lines.append(
            f"{folder}  suite {suite.get('name')}  {date}  seeds {suite.get('seeds')}  "
            f"jobs {jobs - failed}/{jobs} finished, {failed} failed or skipped"
        )
    return "\n".join(lines or ["no runs"]) + "\n"
