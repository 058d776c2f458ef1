"""A table as text: LaTeX, GitHub Markdown and the tidy CSV, each escaping the labels a suite gave (they are data)."""

from __future__ import annotations

import io

from tabulate import tabulate

from mibench.api.records import Record
from mibench.reporting.stats import t_interval
from mibench.reporting.tables import Table, records_frame, summarize

_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "ε": r"$\varepsilon$",
}


def latex_escape(text: str) -> str:
    """Escape LaTeX's special characters."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _latex_text(text: str) -> str:
    return latex_escape(text).replace("±", "$\\pm$").replace("†", "$^{\\dagger}$").replace("‡", "$^{\\ddagger}$")


def render_latex(table: Table) -> str:
    """A booktabs table; attack names span their block with multirow."""
    arrows = {"↑": " $\\uparrow$", "↓": " $\\downarrow$", "": ""}
    head = ["Attack", "Defense"] + [latex_escape(h.label) + arrows[h.arrow] for h in table.header]
    lines = [
        "% Requires \\usepackage{booktabs} and \\usepackage{multirow}.",
        "\\begin{table}[t]",
        "  \\centering",
        f"  \\caption{{{_latex_text(table.caption)}}}",
        f"  \\label{{{table.label}}}",
        f"  \\begin{{tabular}}{{ll{'c' * len(table.header)}}}",
        "    \\toprule",
        "    " + " & ".join(head) + " \\\\",
    ]
    for attack, rows in table.blocks:
        lines.append("    \\midrule")
        for i, (defense, cells) in enumerate(rows):
            first = f"\\multirow{{{len(rows)}}}{{*}}{{{latex_escape(attack or '–')}}}" if i == 0 else ""
            texts = [_latex_text(c.text()) for c in cells]
            texts = [f"\\textbf{{{t}}}" if c.bold else t for t, c in zip(texts, cells, strict=True)]
            lines.append("    " + " & ".join([first, latex_escape(defense), *texts]) + " \\\\")
    lines += ["    \\bottomrule", "  \\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def markdown_escape(text: str) -> str:
    """A label as Markdown table text: a `|` would end its cell."""
    return text.replace("|", r"\|")


def spreadsheet_safe(text: object) -> object:
    """A label that a spreadsheet would run as a formula (`=`, `+`, `@`, a leading `-` before more), quoted inert.

    The undefended label `-` alone stays as it is; numbers are not labels and pass unchanged.
    """
    if not isinstance(text, str) or not text:
        return text
    if text[0] in "=+@\t\r" or (text[0] == "-" and len(text) > 1):
        return "'" + text
    return text


def render_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table with the caption below it."""
    head = ["Attack", "Defense"] + [markdown_escape(f"{h.label} {h.arrow}".strip()) for h in table.header]
    body = []
    for attack, rows in table.blocks:
        for i, (defense, cells) in enumerate(rows):
            texts = [f"**{c.text()}**" if c.bold else c.text() for c in cells]
            body.append([markdown_escape(attack or "–") if i == 0 else "", markdown_escape(defense), *texts])
    return tabulate(body, headers=head, tablefmt="github", disable_numparse=True) + f"\n\n{table.caption}\n"


def render_csv(records: list[Record], planned_seeds: int | None = None) -> str:
    """The tidy summary as CSV, with each cell's 95% interval and seed coverage.

    Columns: attack, defense, metric, mean, std, n, direction, unit, then the Student-t interval over seeds
    (ci95_low, ci95_high) and the planned seed count with a `partial` flag for cells over fewer seeds.
    """
    summary = summarize(records)
    df = records_frame(records)
    df = df[df["defense"].notna() & df["value"].notna()]
    groups = {key: list(g["value"]) for key, g in df.groupby(["attack", "defense", "metric"], sort=False)}
    intervals = [t_interval(groups.get((a, d, m), [])) for a, d, m in zip(summary.attack, summary.defense,
                                                                           summary.metric, strict=True)]  # fmt: skip
    summary["ci95_low"] = [None if ci is None else ci[0] for ci in intervals]
    summary["ci95_high"] = [None if ci is None else ci[1] for ci in intervals]
    planned = planned_seeds or (int(summary["n"].max()) if len(summary) else 0)
    summary["planned_seeds"] = planned
    summary["partial"] = summary["n"] < planned
    for column in ("attack", "defense"):
        summary[column] = summary[column].map(spreadsheet_safe)
    buf = io.StringIO()
    summary.to_csv(buf, index=False)
    return buf.getvalue()
