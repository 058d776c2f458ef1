"""Report formatting from a fixed set of records: aggregation, bolding by direction, LaTeX/Markdown/CSV."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from mibench.api.records import Record, read_records, write_records
from mibench.reporting.render import latex_escape, render_csv, render_latex, render_markdown
from mibench.reporting.tables import build_table, summarize

BASE = {
    "suite": "golden",
    "stage": "measure",
    "job_key": "k" * 20,
    "details": {},
    "versions": {},
    "device": "cpu",
    "wall_time_s": 1.0,
    "created": "2026-01-01T00:00:00+0000",
}


def rec(defense, attack, metric, seed, value, hib, unit="fraction", **details):
    return Record(
        **{**BASE, "details": details},
        defense=defense,
        attack=attack,
        metric=metric,
        seed=seed,
        value=value,
        higher_is_better=hib,
        unit=unit,
    )


@pytest.fixture
def records():
    out = [rec(None, None, "evaluator_acc", None, 0.9588, None, architecture="facenet")]
    acc = {"-": (0.86, 0.88), "Trap_MID": (0.80, 0.82)}
    aa1 = {
        ("GMI", "-"): (0.14, 0.16),
        ("GMI", "Trap_MID"): (0.02, 0.04),
        ("PLG-MI", "-"): (0.90, 0.92),
        ("PLG-MI", "Trap_MID"): (0.10, 0.20),
    }
    for seed in (0, 1):
        for d in ("-", "Trap_MID"):
            out.append(rec(d, None, "acc", seed, acc[d][seed], True))
            out.append(rec(d, None, "train_time_s", seed, 10.0, False, "seconds"))
            for a in ("GMI", "PLG-MI"):
                out.append(rec(d, a, "aa1", seed, aa1[a, d][seed], False, n=1500))
                out.append(
                    rec(d, a, "knn_dist", seed, 1000.0 + 100 * seed + (500 if d != "-" else 0), True, "distance")
                )
                out.append(
                    rec(
                        d,
                        a,
                        "fd_evaluator",
                        seed,
                        None if a == "PLG-MI" and d != "-" else 30.0 + seed,
                        True,
                        "distance",
                    )
                )
    return out


def test_summary_is_mean_and_sample_std(records):
    s = summarize(records)
    row = s[(s.attack == "GMI") & (s.defense == "-") & (s.metric == "aa1")].iloc[0]
    assert row["mean"] == pytest.approx(0.15) and row["std"] == pytest.approx(0.01414213562, rel=1e-9)
    assert row["n"] == 2 and not row["higher_is_better"]


def test_table_bolds_best_by_direction(records):
    table = build_table(records)
    # No AA-5 record anywhere in the run: the column is left out, not printed empty.
    assert [h.label for h in table.header] == ["Acc", "AA-1", "KNN Dist", "FD-eval"]
    assert [h.arrow for h in table.header] == ["↑", "↓", "↑", "↑"]
    gmi_rows = dict(table.blocks[0][1])
    assert gmi_rows["-"][0].bold and not gmi_rows["Trap_MID"][0].bold  # accuracy: higher wins
    assert gmi_rows["Trap_MID"][1].bold and not gmi_rows["-"][1].bold  # attack accuracy: lower wins
    assert gmi_rows["Trap_MID"][2].bold  # KNN distance: higher wins
    assert gmi_rows["-"][3].bold and gmi_rows["Trap_MID"][3].bold  # a tie is bold on both rows
    plg_rows = dict(table.blocks[1][1])
    assert plg_rows["Trap_MID"][3].text() == "–" and plg_rows["-"][3].bold  # undefined values never win


GOLDEN_LATEX = r"""% Requires \usepackage{booktabs} and \usepackage{multirow}.
\begin{table}[t]
  \centering
  \caption{Mean $\pm$ std (sample std, ddof=1) over 2 seeds. AA-1/AA-5 by the evaluation model facenet (95.88\% test accuracy). 1500 reconstructions per attack. KNN Dist: squared L2 in evaluation-model features to the nearest private image. FD-eval is the Fréchet distance on evaluation-model features, not Inception-v3 FID. Evaluation protocol: standard (mibench's clean metric pipeline, not the papers' own code). Best per attack in bold; arrows give the better direction for the defender.}
  \label{tab:golden-table1}
  \begin{tabular}{llcccc}
    \toprule
    Attack & Defense & Acc $\uparrow$ & AA-1 $\downarrow$ & KNN Dist $\uparrow$ & FD-eval $\uparrow$ \\
    \midrule
    \multirow{2}{*}{GMI} & - & \textbf{87.00 $\pm$ 1.41} & 15.00 $\pm$ 1.41 & 1050.00 $\pm$ 70.71 & \textbf{30.50 $\pm$ 0.71} \\
     & Trap\_MID & 81.00 $\pm$ 1.41 & \textbf{3.00 $\pm$ 1.41} & \textbf{1550.00 $\pm$ 70.71} & \textbf{30.50 $\pm$ 0.71} \\
    \midrule
    \multirow{2}{*}{PLG-MI} & - & \textbf{87.00 $\pm$ 1.41} & 91.00 $\pm$ 1.41 & 1050.00 $\pm$ 70.71 & \textbf{30.50 $\pm$ 0.71} \\
     & Trap\_MID & 81.00 $\pm$ 1.41 & \textbf{15.00 $\pm$ 7.07} & \textbf{1550.00 $\pm$ 70.71} & – \\
    \bottomrule
  \end{tabular}
\end{table}
"""


def test_latex_golden(records):
    assert render_latex(build_table(records)) == GOLDEN_LATEX


def test_markdown_layout(records):
    md = render_markdown(build_table(records))
    lines = md.splitlines()
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines[:6]]
    assert cells[0] == ["Attack", "Defense", "Acc ↑", "AA-1 ↓", "KNN Dist ↑", "FD-eval ↑"]
    assert set(lines[1]) <= {"|", "-"}
    assert cells[2] == ["GMI", "-", "**87.00 ± 1.41**", "15.00 ± 1.41", "1050.00 ± 70.71", "**30.50 ± 0.71**"]
    assert cells[3][:4] == ["", "Trap_MID", "81.00 ± 1.41", "**3.00 ± 1.41**"]
    assert cells[4][:2] == ["PLG-MI", "-"]
    assert "Mean ± std (sample std, ddof=1) over 2 seeds" in md


def test_csv_is_tidy_summary(records):
    import io

    import pandas as pd

    text = render_csv(records)
    header = "attack,defense,metric,mean,std,n,higher_is_better,unit,ci95_low,ci95_high,planned_seeds,partial"
    assert text.splitlines()[0] == header
    df = pd.read_csv(io.StringIO(text), keep_default_na=False, na_values={"mean": [""], "std": [""]})
    row = df[(df.attack == "GMI") & (df.defense == "-") & (df.metric == "aa1")].iloc[0]
    assert row["mean"] == pytest.approx(0.15) and row["std"] == pytest.approx(2**0.5 / 100)
    assert (row["n"], row["higher_is_better"], row["unit"]) == (2, False, "fraction")
    # Student t with 1 degree of freedom: mean ± 12.706 std / sqrt(2).
    assert float(row["ci95_high"]) - row["mean"] == pytest.approx(12.7062047 * row["std"] / 2**0.5)
    assert not row["partial"]
    assert len(df) == 2 * 2 + 2 * 2 * 3  # per defense: acc, train time; per defense x attack: aa1, knn, fd


def test_single_seed_shows_mean_only_and_records_round_trip(records, tmp_path):
    one = [r for r in records if r.seed in (0, None)]
    path = tmp_path / "records.jsonl"
    write_records(path, one)
    assert read_records(path) == one
    table = build_table(read_records(path))
    assert dict(table.blocks[0][1])["-"][1].text() == "14.00"
    assert "over 1 seed." in table.caption


def test_latex_escaping():
    assert latex_escape("a_b & 50% #1 {x}") == r"a\_b \& 50\% \#1 \{x\}"


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="no TeX engine installed")
def test_latex_compiles(records, tmp_path):
    doc = (
        "\\documentclass{article}\\usepackage{booktabs}\\usepackage{multirow}\\usepackage[utf8]{inputenc}"
        "\\begin{document}" + render_latex(build_table(records)) + "\\end{document}"
    )
    (tmp_path / "t.tex").write_text(doc)
    out = subprocess.run(["pdflatex", "-interaction=nonstopmode", "t.tex"], cwd=tmp_path, capture_output=True)
    assert out.returncode == 0, out.stdout[-2000:]


def test_compare_paper_puts_published_values_beside_ours(records, tmp_path):
    from mibench.reporting.compare import paper_values, with_paper_columns

    published = paper_values(1)
    # Trap-MID Table 1 (spec paper-results.csv): GMI on the undefended VGG16, AA-1 14.29 ± 0.63 (percent)
    assert published["gmi", "none", "aa1"].mean == pytest.approx(0.1429)
    table = with_paper_columns(build_table(records), 1)
    labels = [h.label for h in table.header]
    assert labels[labels.index("AA-1") + 1] == "AA-1 (paper)"
    assert "FD-eval (paper)" not in labels and "FID (paper)" not in labels  # never pair FD-eval with FID
    md = render_markdown(table)
    gmi_none = next(line for line in md.splitlines() if line.startswith("| GMI"))
    assert "14.29 ± 0.63" in gmi_none and "86.21 ± 0.91" in gmi_none
    trap = next(line for line in md.splitlines() if "Trap_MID" in line)  # label matching ignores punctuation
    assert "0.24 ± 0.19" in trap
    paper_cols = [i for i, h in enumerate(table.header) if h.label.endswith("(paper)")]
    assert not any(cells[i].bold for _, rows in table.blocks for _, cells in rows for i in paper_cols)
    assert "Table 1" in table.caption
    with pytest.raises(ValueError, match="no results table 99"):
        paper_values(99)


PAPER_SETTING = {
    "data": {"dataset": "celeba", "image_size": 64, "params": {}},
    "target": {"architecture": "vgg16"},
    "attacked_classes": 300,
}
MINI_SETTING = {
    "data": {"dataset": "mnist", "image_size": 32, "params": {}},
    "target": {"architecture": "tiny-cnn"},
    "attacked_classes": 5,
}


def _run_folder(path, records, suite, protocol=None):
    import json

    path.mkdir(parents=True)
    if protocol:
        records = [
            r.model_copy(update={"details": {**r.details, "protocol": protocol, "pipeline": "plgmi-baselines"}})
            for r in records
        ]
    write_records(path / "records.jsonl", records)
    (path / "plan.json").write_text(json.dumps({"suite": suite}))
    return path


def test_report_cli_compare_paper_pairs_only_published_measurements(records, tmp_path, capsys):
    from mibench.cli import main

    published = _run_folder(tmp_path / "published", records, PAPER_SETTING, protocol="published")
    assert main(["report", str(published), "--compare-paper", "--latex"]) == 0
    out = capsys.readouterr().out
    assert "AA-1 (paper)" in out and "14.29 $\\pm$ 0.63" in out and "Evaluation protocol: published" in out
    standard = _run_folder(tmp_path / "standard", records, PAPER_SETTING)
    assert main(["report", str(standard), "--compare-paper", "--markdown"]) == 0
    out = capsys.readouterr().out
    gmi_none = next(line for line in out.splitlines() if line.startswith("| GMI"))
    assert "14.29 ± 0.63" not in gmi_none and "86.21 ± 0.91" in gmi_none  # AA withheld; accuracy still paired
    assert "AA-1 (paper) left empty for GMI, PLG-MI: measured with the standard protocol" in out


def test_report_cli_compare_paper_refuses_another_setting(records, tmp_path, capsys):
    from mibench.cli import main

    mini = _run_folder(tmp_path / "mini", records, MINI_SETTING, protocol="published")
    assert main(["report", str(mini), "--compare-paper", "--markdown"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "differs from the paper's Table 1" in err
    for named in ("private data: mnist at 32", "target architecture: tiny-cnn", "private identities: 5",
                  "attacked identities: 5 (paper: 300)"):  # fmt: skip
        assert named in err
    assert main(["report", str(mini), "--compare-paper", "--compare-anyway", "--markdown"]) == 0
    assert (
        "Compared anyway although the setting differs from the paper's: private data: mnist" in capsys.readouterr().out
    )
    assert main(["report", str(tmp_path / "mini" / "records.jsonl"), "--compare-paper", "--markdown"]) == 2


def test_table9_layout_is_one_block_and_compares_paper_minutes_as_seconds(records):
    from mibench.reporting.compare import paper_values, with_paper_columns

    table = build_table(records, "table9")
    assert [h.label for h in table.header] == ["Acc", "Training time (s)"]
    assert len(table.blocks) == 1 and table.blocks[0][0] == ""  # defense-level metrics: no attack blocks
    compared = with_paper_columns(table, 9)
    minutes = paper_values(9)["none", "none", "train_time_min"].mean
    assert [h.label for h in compared.header] == ["Acc", "Training time (s)", "Training time (s) (paper)"]
    cells = dict(compared.blocks[0][1])["-"]
    assert cells[1].mean == pytest.approx(10.0) and cells[2].mean == pytest.approx(60 * minutes)


def test_unknown_layout_lists_the_allowed_ones(records):
    with pytest.raises(ValueError, match="table18"):
        build_table(records, "table99")


def test_multi_model_tables_compare_one_architecture():
    from mibench.reporting.compare import paper_values
    from mibench.reporting.tables import LAYOUTS

    # Trap-MID Table 19 (spec paper-results.csv): undefended PPA AA-1 is 80.61% on ResNet-152, 82.96% on ResNeSt-101;
    # Trap-MID's "default" row stands for the plain label.
    resnet = paper_values(19, architecture="ResNet-152")
    assert resnet["ppa", "none", "aa1"].mean == pytest.approx(0.8061)
    assert resnet["ppa", "negls", "aa1"].mean == pytest.approx(0.2641)
    assert paper_values(19, architecture="resnest101")["ppa", "none", "aa1"].mean == pytest.approx(0.8296)
    assert ("ppa", "trapmid", "aa1") in resnet
    with pytest.raises(ValueError, match="architecture 'VGG-19'"):
        paper_values(19, architecture="VGG-19")
    assert [c.metrics[0] for c in LAYOUTS["table19"]] == [
        "acc",
        "robust_acc",
        "aa1",
        "aa5",
        "facenet_dist",
        "knn_dist",
        "fid",
    ]
    assert [c.metrics[0] for c in LAYOUTS["table20"]] == ["acc", "precision", "recall", "density", "coverage"]


@pytest.mark.parametrize(("metric", "label"), [("fd_effnet_lite0", "FD-EffNetLite0"), ("fid", "FID")])
def test_the_fid_column_names_what_filled_it(records, metric, label):
    renamed = [r.model_copy(update={"metric": metric}) if r.metric == "fd_evaluator" else r for r in records]
    table = build_table(renamed)
    assert [h.label for h in table.header][-1] == label
    assert ("not FID" in table.caption) == (metric != "fid")


def test_ablation_rows_are_matched_by_defense_and_variant():
    from mibench.reporting.compare import paper_values

    # Trap-MID Table 7 (spec paper-results.csv): the blend-ratio rows are "Trap-MID" with variants "alpha=...";
    # Table 5's TeD rows carry "alpha=0.1" / "alpha=0.2"; Table 6's ablation steps are variants too.
    t7 = paper_values(7)
    assert ("gmi", "trapmidalpha003", "aa1") in t7 and ("gmi", "trapmidalpha005", "aa1") in t7
    assert ("gmi", "trapmid", "aa1") not in t7  # no plain row: a variant never stands for the defense
    t5 = paper_values(5)
    assert t5["gmi", "tedalpha01", "aa1"].mean != t5["gmi", "tedalpha02", "aa1"].mean
    assert ("plgmi", "trapmidfixedtriggers", "aa1") in paper_values(6)
    assert ("gmi", "trapmidworstrun", "aa1") in paper_values(10) and ("gmi", "bidobestrun", "aa1") in paper_values(10)
    t8 = paper_values(8)
    assert ("gmi", "trapmidbeta02", "aa1") in t8
    assert ("gmi", "trapmidbetarow1", "aa1") not in t8  # unreadable variants ("beta=? (row 1)") are left out


def test_table10_keeps_each_baselines_best_run_and_trap_mids_worst(records):
    baseline = [r.model_copy(update={"defense": "MID"}) if r.defense == "-" else r for r in records]
    table = build_table(baseline, "table10")
    blocks = dict(table.blocks)
    rows = dict(blocks["GMI"])
    assert set(rows) == {"MID (best run)", "Trap_MID (worst run)"}
    labels = [h.label for h in table.header]
    acc, aa1 = labels.index("Acc"), labels.index("AA-1")
    # fixture: GMI AA-1 of MID 0.14 (seed 0) / 0.16 (seed 1); of Trap-MID 0.02 / 0.04; accuracies 0.86/0.88, 0.80/0.82
    assert rows["MID (best run)"][aa1].mean == pytest.approx(0.14) and rows["MID (best run)"][acc].mean == 0.86
    assert rows["Trap_MID (worst run)"][aa1].mean == pytest.approx(0.04)
    assert rows["Trap_MID (worst run)"][acc].mean == pytest.approx(0.82) and rows["Trap_MID (worst run)"][acc].n == 1
    assert "worst of Trap-MID's" in table.caption
    assert "-" not in rows and build_table(records, "table10").blocks[0][1][0][0] == "Trap_MID (worst run)"


def test_table18_states_its_counting_and_capped_walks():
    records = [
        rec("-", "BREP-MI", "aa1", 0, 0.7, False, n=300),
        rec("-", "BREP-MI", "initial_rounds", 0, 2.0, None, "count"),
        rec("-", "BREP-MI", "walks_capped", 0, 0.0, None, "count"),
        rec("MID", "BREP-MI", "aa1", 0, 0.5, False, n=300),
        rec("MID", "BREP-MI", "initial_rounds", 0, 3.0, None, "count"),
        rec("MID", "BREP-MI", "walks_capped", 0, 4.0, None, "count"),
    ]
    caption = build_table(records, "table18").caption
    assert "counted from 1" in caption
    assert "iteration cap" in caption and "4 for BREP-MI vs MID" in caption and "vs -" not in caption
    records[-1] = rec("MID", "BREP-MI", "walks_capped", 0, 0.0, None, "count")
    assert "iteration cap" not in build_table(records, "table18").caption


def _seeded(defense, attack, metric, values, hib, unit="fraction"):
    return [rec(defense, attack, metric, seed, v, hib, unit) for seed, v in enumerate(values)]


def test_partial_seed_cells_are_flagged_in_every_format(records):
    short = [r for r in records if not (r.defense == "Trap_MID" and r.attack == "GMI" and r.metric == "aa1" and r.seed)]
    table = build_table(short)
    cell = dict(table.blocks[0][1])["Trap_MID"][1]
    assert cell.text() == "2.00 (n=1/2)" and "(n=k/2)" in table.caption
    assert "2.00 (n=1/2)" in render_markdown(table) and "2.00 (n=1/2)" in render_latex(table)
    from mibench.reporting.tables import partial_cells

    assert partial_cells(table) == ["GMI / Trap_MID / AA-1: n=1/2"]
    csv_text = render_csv(short)
    row = next(line for line in csv_text.splitlines() if line.startswith("GMI,Trap_MID,aa1"))
    assert row.endswith(",2,True") and "ci95_low" in csv_text.splitlines()[0]


def test_daggers_mark_exactly_the_holm_significant_improvements():
    from scipy import stats as scipy_stats

    from mibench.reporting.stats import annotate_significance, holm

    aa = {"-": [0.80, 0.82, 0.81, 0.83, 0.79], "Trap-MID": [0.10, 0.12, 0.11, 0.09, 0.13], "MID": [0.78, 0.83, 0.80,
          0.76, 0.84]}  # fmt: skip
    records = [r for d, v in aa.items() for r in _seeded(d, "GMI", "aa1", v, False)]
    table, comparisons = annotate_significance(build_table(records), records)
    rows = dict(table.blocks[0][1])
    assert "†" in rows["Trap-MID"][0].mark and "‡" in rows["Trap-MID"][0].mark  # beats both references
    assert rows["MID"][0].mark == "" and rows["-"][0].mark == ""
    raw = [scipy_stats.ttest_ind(aa[c.defense], aa["-" if c.reference == "undefended" else c.reference[12:-1]],
                                 equal_var=False).pvalue for c in comparisons]  # fmt: skip
    assert [c.adjusted for c in comparisons] == pytest.approx(holm(raw))
    marked = {(c.defense, c.reference[:4]) for c in comparisons if c.better and c.adjusted < 0.05}
    assert marked == {("Trap-MID", "unde"), ("Trap-MID", "best")}
    assert "$^{\\dagger}$" in render_latex(table) and "Holm-adjusted" in table.caption


def test_report_without_a_run_folder_reports_the_newest_and_lists_runs(records, tmp_path, capsys):
    import os

    from mibench.cli import main

    old = _run_folder(tmp_path / "results" / "old", records[:3], {"name": "old", "seeds": [0, 1]})
    new = _run_folder(tmp_path / "results" / "new", records, {"name": "new", "seeds": [0, 1]})
    os.utime(old / "plan.json", (1, 1))
    assert main(["report", "--root", str(tmp_path / "results"), "--latex"]) == 0
    captured = capsys.readouterr()
    assert f"reporting the newest run, {new}" in captured.err and "\\begin{table}" in captured.out
    assert main(["report", "--root", str(tmp_path / "results"), "--list"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert listing[0].startswith(str(new)) and "suite new" in listing[0] and listing[1].startswith(str(old))
    assert main(["report", "--root", str(tmp_path / "nothing")]) == 2


def test_strict_report_fails_on_partial_seeds(records, tmp_path, capsys):
    from mibench.cli import main

    folder = _run_folder(tmp_path / "run", records, {"name": "x", "seeds": [0, 1, 2]})
    assert main(["report", str(folder), "--markdown"]) == 0
    assert "fewer seeds than planned" in capsys.readouterr().err
    assert main(["report", str(folder), "--markdown", "--strict"]) == 2


def test_missing_values_carry_their_reason():
    import torch

    from mibench.api.metric import Measurement
    from mibench.running.stages import explain_missing, nonfinite_count

    images = torch.rand(4, 3, 2, 2)
    images[1, 0, 0, 0] = float("nan")
    images[3] = float("inf")
    bad = nonfinite_count(images)
    missing = explain_missing(Measurement("knn_dist", float("nan"), True), bad, len(images))
    assert missing.details["reason"] == "2 of 4 reconstructions non-finite"
    fine = Measurement("knn_dist", 3.0, True)
    assert explain_missing(fine, bad, len(images)) is fine
    records = [
        rec("MIDAS", "KED-MI", "knn_dist", 0, None, True, "distance", reason="2 of 4 reconstructions non-finite")
    ]
    records += [rec("MIDAS", "KED-MI", "aa1", 0, 0.5, False)]
    assert (
        "Missing (KED-MI / MIDAS / knn_dist seed 0): 2 of 4 reconstructions non-finite" in build_table(records).caption
    )


def test_records_count_once_and_name_bad_lines(records, tmp_path):
    import json

    path = tmp_path / "records.jsonl"
    write_records(path, records)
    doubled = tmp_path / "doubled.jsonl"
    doubled.write_text(path.read_text() * 2)  # two runs joined with cat
    assert read_records(doubled) == records  # counted once, not as extra seeds
    line = json.loads(path.read_text().splitlines()[3])
    line["value"] = line["value"] + 0.5
    conflict = tmp_path / "conflict.jsonl"
    conflict.write_text(path.read_text() + json.dumps(line) + "\n")
    with pytest.raises(ValueError, match=r"conflict\.jsonl:\d+: .* on line 4: conflicting duplicate"):
        read_records(conflict)
    nan = tmp_path / "nan.jsonl"
    nan.write_text(path.read_text().splitlines()[0].replace('"value": 0.9588', '"value": NaN') + "\n")
    with pytest.raises(ValueError, match=r"nan\.jsonl:1: value nan is not a finite number"):
        read_records(nan)
    (tmp_path / "latin.jsonl").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(ValueError, match=r"latin\.jsonl:1: not UTF-8"):
        read_records(tmp_path / "latin.jsonl")
    (tmp_path / "long.jsonl").write_bytes(b"x" * (2 << 20))  # read line by line, a line past 1 MiB is refused
    with pytest.raises(ValueError, match=r"long\.jsonl:1: a line over 1,048,576 bytes"):
        read_records(tmp_path / "long.jsonl")


def test_privacy_layout_puts_the_spent_epsilon_beside_accuracy_and_aa():
    records = [
        rec("-", None, "acc", 0, 0.9, True),
        rec("DP-SGD", None, "acc", 0, 0.7, True),
        rec("DP-SGD", None, "dp_epsilon", 0, 7.99, False, unit="epsilon"),
        rec("-", "GMI", "aa1", 0, 0.8, False),
        rec("DP-SGD", "GMI", "aa1", 0, 0.3, False),
    ]
    table = build_table(records, "privacy")
    assert [h.label for h in table.header] == ["ε (DP)", "Acc", "AA-1"]
    ((attack, rows),) = table.blocks
    assert attack == "GMI"
    assert [(d, [c.text() for c in cells]) for d, cells in rows] == [
        ("-", ["–", "90.00", "80.00"]),
        ("DP-SGD", ["7.99", "70.00", "30.00"]),
    ]
    assert "$\\varepsilon$ (DP)" in render_latex(table)


def test_an_attack_restricted_to_some_defenses_shows_only_their_rows():
    records = [
        rec("-", None, "acc", 0, 0.9, True),
        rec("Trap-MID", None, "acc", 0, 0.85, True),
        rec("-", "GMI", "aa1", 0, 0.8, False),
        rec("Trap-MID", "GMI", "aa1", 0, 0.1, False),
        rec("Trap-MID", "PLG-MI++", "aa1", 0, 0.3, False),
    ]
    blocks = dict(build_table(records, "table1").blocks)
    assert [d for d, _ in blocks["GMI"]] == ["-", "Trap-MID"]
    assert [d for d, _ in blocks["PLG-MI++"]] == ["Trap-MID"]  # no "-" row holding only its accuracy
