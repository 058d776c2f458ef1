"""The evaluator and target card of a report: our clean accuracies beside the published ones, and recipe parity.

Every AA depends on the evaluation model, and every comparison with a paper on its undefended target. A report of a
paper suite therefore states the evaluator's test accuracy beside the published evaluator's (KED-MI's FaceNet:
95.88% on the private test split, Trap-MID Tables 1-18; PPA's Inception-v3: 93.28%, Table 19) and our undefended
target's beside the paper's, and warns when either differs by more than one point. Every report also names the
defenses trained with a recipe other than the undefended target's (`mibench.reporting.tables.recipe_differences`,
in every caption): a defense trained with another optimiser or schedule is not compared on an equal footing.
"""

from __future__ import annotations

import re

from mibench.api.records import Record
from mibench.reporting.compare import paper_values
from mibench.reporting.tables import method_key

# Evaluation-model architecture -> (published test accuracy, whose): the released evaluators the paper tables use.
PUBLISHED_EVALUATORS = {
    "facenet": (0.9588, "KED-MI's released FaceNet (Trap-MID Tables 1-18)"),
    "inception-v3": (0.9328, "PPA's Inception-v3 (Trap-MID Table 19)"),
}
WARN_POINTS = 1.0


def paper_table_number(layout: str | None) -> int | None:
    """The paper table a layout reproduces (`table11` -> 11), None for other layouts."""
    match = re.fullmatch(r"table(\d+)", layout or "")
    return int(match.group(1)) if match else None


def accuracy_card(records: list[Record], layout: str | None, suite: dict | None) -> tuple[list[str], list[str]]:
    """(caption sentences, warnings): the evaluator's and the undefended target's accuracy against the paper's.

    Only for a paper suite: a paper table's layout on the paper's private data (CelebA); other runs compare
    nothing with the paper.
    """
    dataset = ((suite or {}).get("data") or {}).get("dataset")
    number = paper_table_number(layout) if dataset == "celeba" else None
    lines, warnings = [], []
    evaluator = next((r for r in records if r.metric == "evaluator_acc" and r.value is not None), None)
    if number is not None and evaluator is not None:
        arch = str(evaluator.details.get("architecture", ""))
        if arch in PUBLISHED_EVALUATORS:
            published, whose = PUBLISHED_EVALUATORS[arch]
            gap = 100 * (evaluator.value - published)
            lines.append(
                f"Evaluation model: {100 * evaluator.value:.2f}% test accuracy, {whose}: {100 * published:.2f}%"
            )
            if abs(gap) > WARN_POINTS:
                warnings.append(
                    f"the evaluation model's test accuracy {100 * evaluator.value:.2f}% differs from {whose}'s "
                    f"{100 * published:.2f}% by {gap:+.2f} points: every AA moves with it"
                )
    if number is not None:
        ours = [r.value for r in records if r.metric == "acc" and r.attack is None and r.value is not None
                and method_key(r.defense or "") == "none"]  # fmt: skip
        try:
            paper = {k: v for k, v in paper_values(number).items() if k[1] == "none" and k[2] == "acc"}
        except ValueError:
            paper = {}
        if ours and paper:
            published = next(iter(paper.values())).mean
            mean = sum(ours) / len(ours)
            gap = 100 * (mean - published)
            lines.append(f"Undefended target: {100 * mean:.2f}% test accuracy, the paper's {100 * published:.2f}%")
            if abs(gap) > WARN_POINTS:
                warnings.append(
                    f"the undefended target's test accuracy {100 * mean:.2f}% differs from the paper's "
                    f"{100 * published:.2f}% (Table {number}) by {gap:+.2f} points"
                )
    return lines, warnings
