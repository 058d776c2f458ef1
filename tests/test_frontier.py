"""Fair comparisons: sweeps expand into labelled rows, the Pareto front and AA-1 at matched accuracy on hand-computed
frontiers (including "not reached"), and the frontier report."""

from __future__ import annotations

import pytest

from mibench.api.records import Record
from mibench.errors import ConfigError
from mibench.reporting.frontier import frontier_table, frontiers, interpolate_at, pareto_front
from mibench.suite import resolve_suite
from mibench.suite.sweeps import SweepPoint, sweep_rows
from tests.conftest import TINY_SUITE


def test_sweeps_expand_into_one_labelled_row_per_value():
    defenses = [
        {"name": "none", "label": "-"},
        {"name": "trap-mid", "label": "Trap-MID", "sweep": [0.1, 0.5]},  # the strength knob: beta
        {"name": "bido", "label": "BiDO", "sweep": [[0.01, 0.1], [0.05, 0.5]]},  # two knobs, paired
        {"label": "TM+NegLS", "stack": ["trap-mid", "negls"], "sweep": {"trap-mid.beta": [0.1, 0.3]}},
        {"name": "mid", "sweep": {"beta": [0.001], "recipe.lr": [0.01]}},  # nested parameters, zipped keys
    ]
    rs = resolve_suite({**TINY_SUITE, "defenses": defenses})
    rows = {d.label: d for d in rs.defenses}
    assert list(rows) == [
        "-", "Trap-MID beta=0.1", "Trap-MID beta=0.5", "BiDO lambda_x=0.01, lambda_y=0.1",
        "BiDO lambda_x=0.05, lambda_y=0.5", "TM+NegLS trap-mid.beta=0.1", "TM+NegLS trap-mid.beta=0.3",
        "mid beta=0.001, recipe.lr=0.01",
    ]  # fmt: skip
    assert rows["Trap-MID beta=0.5"].members[0].params.beta == 0.5 and rows["Trap-MID beta=0.5"].family == "Trap-MID"
    bido = rows["BiDO lambda_x=0.05, lambda_y=0.5"].members[0].params
    assert (bido.lambda_x, bido.lambda_y) == (0.05, 0.5)
    stack = rows["TM+NegLS trap-mid.beta=0.3"].members
    assert stack[0].params.beta == 0.3 and stack[1].params.smoothing == -0.05  # only the named member changes
    mid = rows["mid beta=0.001, recipe.lr=0.01"].members[0].params
    assert (mid.beta, mid.recipe.lr) == (0.001, 0.01)
    assert rows["-"].family is None
    # the report side reads the same rows back from the dumped suite (plan.json)
    back = sweep_rows(rs.suite.model_dump(mode="json"))
    assert back["Trap-MID beta=0.1"] == SweepPoint("Trap-MID beta=0.1", {"beta": 0.1}, "Trap-MID")
    assert set(back) == set(rows) - {"-"}


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ({"beta": [0.1, 0.2], "alpha": [0.1]}, "equal lengths"),
        ({"beta": []}, "non-empty"),
        ({"beta": [2.0]}, "beta"),  # validated by the defense's own params (beta <= 1)
        ({"nonsense": [1]}, "nonsense"),
    ],
)
def test_bad_sweeps_are_named_before_any_work(sweep, message):
    with pytest.raises(ConfigError, match=message):
        resolve_suite({**TINY_SUITE, "defenses": [{"name": "trap-mid", "sweep": sweep}]})


def test_a_plain_list_needs_a_strength_knob():
    with pytest.raises(ConfigError, match="names no strength knob"):
        resolve_suite({**TINY_SUITE, "defenses": [{"name": "none", "sweep": [1, 2]}]})


def test_pareto_front_on_fixed_points():
    points = [(0.90, 0.80), (0.85, 0.40), (0.80, 0.50), (0.70, 0.10), (0.85, 0.40), (0.60, 0.20)]
    # (0.80, 0.50) is dominated by (0.85, 0.40); (0.60, 0.20) by (0.70, 0.10); ties dominate neither
    assert pareto_front(points) == [True, True, False, True, True, False]


def test_interpolation_is_piecewise_linear_and_never_extrapolates():
    curve = [(0.9, 0.6), (0.8, 0.4), (0.6, 0.2)]
    assert interpolate_at(curve, 0.85) == pytest.approx(0.5)
    assert interpolate_at(curve, 0.7) == pytest.approx(0.3)
    assert interpolate_at(curve, 0.9) == pytest.approx(0.6)
    assert interpolate_at(curve, 0.95) is None and interpolate_at(curve, 0.5) is None
    assert interpolate_at([(0.8, 0.4), (0.8, 0.2)], 0.8) == pytest.approx(0.3)  # equal accuracy: averaged


def _record(defense: str, seed: int, metric: str, value: float, attack: str | None = None) -> Record:
    return Record(
        suite="s", seed=seed, defense=defense, attack=attack, metric=metric, value=value, higher_is_better=None,
        unit="fraction", stage="measure", job_key="k", details={}, versions={}, device="cpu", wall_time_s=1.0,
        created="2026-12-07T00:00:00+0000",
    )  # fmt: skip


def _frontier_records() -> tuple[list[Record], dict[str, SweepPoint]]:
    """Two seeds. Undefended: acc 0.90 / 0.92, AA 0.80 / 0.84. Defense D at three strengths, E at two."""
    table = {  # label: [(acc, aa) for seed 0, seed 1]
        "-": [(0.90, 0.80), (0.92, 0.84)],
        "D b=1": [(0.895, 0.70), (0.915, 0.72)],
        "D b=2": [(0.87, 0.50), (0.89, 0.54)],
        "D b=3": [(0.80, 0.20), (0.84, 0.30)],
        "E c=1": [(0.86, 0.30), (0.90, 0.40)],
        "E c=2": [(0.84, 0.10), (0.85, 0.20)],
    }
    records = []
    for label, per_seed in table.items():
        for seed, (acc, aa) in enumerate(per_seed):
            records += [_record(label, seed, "acc", acc), _record(label, seed, "aa1", aa, "GMI")]
    rows = {label: SweepPoint(label, {}, label.split()[0]) for label in table if label != "-"}
    return records, rows


def test_aa_at_matched_accuracy_against_a_hand_computed_frontier():
    records, rows = _frontier_records()
    (frontier,) = frontiers(records, rows, "-", drops=(1, 2, 5))
    d, e = frontier.matched["D"], frontier.matched["E"]
    # D, seed 0 at 0.89: between (0.87, 0.50) and (0.895, 0.70): 0.50 + 0.2 * 0.02 / 0.025 = 0.66;
    # seed 1 at 0.91: between (0.89, 0.54) and (0.915, 0.72): 0.54 + 0.18 * 0.02 / 0.025 = 0.684
    mean, interval, reached, seeds = d[1]
    assert mean == pytest.approx((0.66 + 0.684) / 2) and (reached, seeds) == (2, 2)
    assert interval[0] < mean < interval[1]
    # D at -5 points: seed 0 at 0.85: (0.80, 0.20)-(0.87, 0.50): 0.20 + 0.3 * 0.05 / 0.07; seed 1 at 0.87:
    # (0.84, 0.30)-(0.89, 0.54): 0.30 + 0.24 * 0.03 / 0.05
    assert d[5][0] == pytest.approx((0.20 + 0.3 * 0.05 / 0.07 + 0.30 + 0.24 * 0.03 / 0.05) / 2)
    # E's best accuracy is 0.86 / 0.90: above 0.89 on no seed 0 -> not reached at -1 (seed 1 reaches 0.91? no)
    assert e[1][0] is None and e[1][2] == 0
    # at -2: seed 0 needs 0.88 (E tops out at 0.86: not reached), seed 1 needs 0.90 (E c=1 exactly): 1 of 2 seeds
    assert e[2][0] is None and e[2][2] == 1
    # at -5: seed 0 at 0.85: 0.10 + 0.2 * 0.01 / 0.02 = 0.20; seed 1 at 0.87: 0.20 + 0.2 * 0.02 / 0.05 = 0.28
    assert e[5][0] == pytest.approx((0.20 + 0.28) / 2)
    front = {p.label: p.on_front for p in frontier.points}
    assert front["-"] and front["E c=1"] and front["E c=2"] and not front["D b=3"]


def test_frontier_table_says_not_reached_and_renders():
    from mibench.reporting.render import render_latex, render_markdown

    records, rows = _frontier_records()
    table = frontier_table(records, rows, "-", drops=(1, 2, 5))
    ((attack, block),) = table.blocks
    cells = {row: [c.text() for c in cs] for row, cs in block}
    assert attack == "GMI" and list(cells) == ["-", "D", "E"]
    assert cells["E"][2] == "not reached" and cells["E"][3] == "not reached (1/2 seeds)"
    assert cells["D"][2].startswith("67.20 ± ")  # (66.0 + 68.4) / 2, in percent
    assert cells["E"][0] == "84.50–88.00" and cells["E"][1] == "2 of 2"
    assert "not reached" in render_markdown(table) and "not reached" in render_latex(table)


def test_a_swept_suite_runs_and_reports_its_frontier_end_to_end(tmp_path, capsys):
    # `mibench run` on a swept suite, then `report --layout frontier` (Markdown, LaTeX), the HTML page's frontier
    # section and the frontier figure; the labels of the rows are the sweep's
    from mibench.cli import main
    from tests.conftest import write_suite

    suite = {
        **TINY_SUITE,
        "seeds": [0],
        "defenses": [{"name": "none", "label": "-"}, {"name": "negls", "label": "NegLS", "sweep": [-0.05, -0.3]}],
        "metrics": ["test-accuracy", "attack-accuracy"],
        "report": {"layout": "frontier"},
    }
    path = write_suite(tmp_path / "swept.yaml", suite)
    assert main(["run", str(path)]) == 0
    run = tmp_path / "run"
    capsys.readouterr()
    assert main(["report", str(run), "--layout", "frontier", "--accuracy-drops", "1,50"]) == 0
    text = capsys.readouterr().out
    assert "AA-1 @ Acc −1" in text and "AA-1 @ Acc −50" in text and "| NegLS" in text
    assert main(["report", str(run), "--layout", "frontier", "--latex"]) == 0
    assert "AA-1 @ Acc −5" in capsys.readouterr().out
    assert main(["report", str(run), "--html", "--out", str(tmp_path / "page.html")]) == 0
    assert "Matched accuracy (frontier)" in (tmp_path / "page.html").read_text()
    assert main(["figures", str(run), "--out", str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / "frontier.png").stat().st_size > 1000
    assert main(["report", str(run), "--layout", "frontier", "--accuracy-drops", "x"]) == 2
    # recipe parity: each target records its effective recipe and whose it is; NegLS's own (Adam) differs
    from mibench.api.records import RECORDS_FILE, read_records

    times = {r.defense: r.details for r in read_records(run / RECORDS_FILE) if r.metric == "train_time_s"}
    assert times["-"]["recipe_source"] == "suite" and times["-"]["recipe"]["optimizer"] == "sgd"
    assert times["NegLS smoothing=-0.3"]["recipe_source"] == "defense"
    assert times["NegLS smoothing=-0.3"]["recipe"]["initialisation"] == "random"
    capsys.readouterr()
    assert main(["report", str(run), "--layout", "table1"]) == 0
    assert "NegLS smoothing=-0.3 (" in capsys.readouterr().out


def _target_record(defense: str, recipe: dict, acc: float = 0.9) -> list[Record]:
    time_record = _record(defense, 0, "train_time_s", 1.0).model_copy(update={"details": {"recipe": recipe}})
    return [time_record, _record(defense, 0, "acc", acc), _record(defense, 0, "aa1", 0.5, "GMI")]


def test_every_caption_names_the_defenses_trained_with_another_recipe():
    from mibench.reporting.tables import build_table

    base = {"optimizer": "sgd", "lr": 0.01, "epochs": 50, "sampler": "shuffle", "milestones": []}
    records = _target_record("-", base) + _target_record("MID", {**base, "sampler": "identity"})
    records += _target_record("NegLS", {**base, "optimizer": "adam", "lr": 0.001, "milestones": [75, 90]})
    records += _target_record("Trap-MID", dict(base))
    caption = build_table(records, "table1").caption
    assert (
        "recipe other than the undefended target's: MID (sampler identity); NegLS (lr 0.001, milestones [75, 90], "
        "optimizer adam)" in caption
    )
    assert "Trap-MID (" not in caption
    assert "recipe other" not in build_table(_target_record("-", base) + _target_record("X", base), "table1").caption


def test_recipe_baseline_trains_a_defense_with_the_suites_recipe():
    defenses = [
        {"name": "negls", "label": "NegLS"},
        {"name": "negls", "label": "NegLS (baseline recipe)", "recipe": "baseline"},
        {"label": "TM+NegLS", "stack": ["trap-mid", "negls"], "recipe": "baseline"},
    ]
    rows = {d.label: d for d in resolve_suite({**TINY_SUITE, "defenses": defenses}).defenses}
    assert rows["NegLS"].members[0].params.recipe.optimizer == "adam"  # the paper's (Trap-MID's NegLS config)
    baseline = rows["NegLS (baseline recipe)"].members[0].params
    assert baseline.recipe.optimizer is None and baseline.recipe.lr is None and baseline.smoothing == -0.05
    assert rows["TM+NegLS"].members[1].params.recipe.epochs is None


def test_the_accuracy_card_warns_when_the_evaluator_or_the_target_is_off_the_paper():
    from mibench.reporting.card import accuracy_card

    evaluator = _record("-", 0, "evaluator_acc", 0.92).model_copy(
        update={"attack": None, "defense": None, "details": {"architecture": "facenet"}}
    )
    records = [evaluator, _record("-", 0, "acc", 0.862)]
    celeba = {"data": {"dataset": "celeba"}}
    lines, warnings = accuracy_card(records, "table1", celeba)
    assert (
        lines[0] == "Evaluation model: 92.00% test accuracy, KED-MI's released FaceNet (Trap-MID Tables 1-18): 95.88%"
    )
    assert len(warnings) == 1 and "-3.88 points" in warnings[0]  # the target (86.20 vs 86.21) is within a point
    assert lines[1] == "Undefended target: 86.20% test accuracy, the paper's 86.21%"
    close = [evaluator.model_copy(update={"value": 0.955}), _record("-", 0, "acc", 0.80)]
    lines, warnings = accuracy_card(close, "table1", celeba)
    assert len(warnings) == 1 and "Table 1" in warnings[0] and "-6.21 points" in warnings[0]
    assert accuracy_card(records, "frontier", celeba) == ([], [])  # not a paper table: no card
    assert accuracy_card(records, "table1", {"data": {"dataset": "mnist"}}) == ([], [])  # not the paper's data
