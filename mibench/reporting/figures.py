"""Figures of a run: the utility/privacy trade-off plot and Figure-2-style reconstruction grids.

The trade-off plot (test accuracy against attack accuracy, one panel per attack, one point per defense with its
seed spread) is drawn from records only, like the tables. A grid needs the images themselves: it rebuilds the run's
plan from `plan.json`, finds each (defense, attack, seed)'s reconstructions in the artifact cache, and puts one
private training image of each class before them (Trap-MID Figure 2: private image, then one reconstruction per
defense).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import torch
from matplotlib.figure import Figure  # the object API: files only, no pyplot state, no display backend

from mibench.api.attack import Reconstructions
from mibench.api.records import Record
from mibench.errors import MibenchError
from mibench.fileio import write_atomic
from mibench.reporting.frontier import DEFAULT_DROPS, baseline_label, frontiers
from mibench.reporting.tables import NO_ATTACK, summarize
from mibench.running.plan import build_plan
from mibench.running.stages import load_data
from mibench.running.store import ArtifactStore
from mibench.suite import resolve_suite
from mibench.suite.sweeps import sweep_rows


def slug(text: str) -> str:
    """A file-name-safe form of a label."""
    return re.sub(r"[^A-Za-z0-9]+", "-", text.replace("+", "-plus")).strip("-").lower() or "none"


def tradeoff_plot(records: list[Record], out_stem: Path, attack_metric: str = "aa1") -> list[Path]:
    """Test accuracy (x) against attack accuracy (y) per defense, one panel per attack; PNG and PDF."""
    fig = tradeoff_figure(records, attack_metric)
    paths = [out_stem.with_suffix(".png"), out_stem.with_suffix(".pdf")]
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    for path in paths:
        save_figure(fig, path)
    return paths


def save_figure(fig: Figure, path: Path) -> None:
    """Render to memory, then write through `write_atomic` (a planted link is replaced, never followed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip("."), dpi=200)
    write_atomic(path, buffer.getvalue())


def tradeoff_figure(records: list[Record], attack_metric: str = "aa1") -> Figure:
    """The trade-off plot: points are means over seeds with ±1 std error bars; lower-right is the defender's goal."""
    summary = summarize(records)
    acc = summary[(summary.metric == "acc") & (summary.attack == NO_ATTACK)].set_index("defense")
    measured = summary[summary.metric == attack_metric]  # attacks without the metric have no point to plot
    attacks = [a for a in dict.fromkeys(measured.attack) if a != NO_ATTACK]
    if acc.empty or not attacks:
        raise MibenchError("a trade-off plot needs test-accuracy and attack-accuracy records")
    ncols = min(4, len(attacks))
    nrows = -(-len(attacks) // ncols)
    fig = Figure(figsize=(3.6 * ncols, 3.0 * nrows + 0.6))
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True)
    for ax in axes.flat[len(attacks) :]:
        ax.set_visible(False)
    for ax, attack in zip(axes.flat, attacks, strict=False):
        aa = summary[(summary.metric == attack_metric) & (summary.attack == attack)].set_index("defense")
        for defense in aa.index.intersection(acc.index):
            ax.errorbar(
                100 * acc.loc[defense, "mean"],
                100 * aa.loc[defense, "mean"],
                xerr=100 * (acc.loc[defense, "std"] if acc.loc[defense, "n"] > 1 else 0),
                yerr=100 * (aa.loc[defense, "std"] if aa.loc[defense, "n"] > 1 else 0),
                fmt="o",
                capsize=3,
                label=defense,
            )
        ax.set_title(attack)
        ax.set_xlabel("test accuracy (%) →")
        ax.grid(alpha=0.3)
    for row in axes:
        row[0].set_ylabel(f"{'AA-1' if attack_metric == 'aa1' else attack_metric} (%) ↓")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), frameon=False)
    fig.tight_layout(rect=(0, 0.6 / (3.0 * nrows + 0.6) + 0.04, 1, 1))
    return fig


def frontier_figure(records: list[Record], suite: dict, drops: tuple[float, ...] = DEFAULT_DROPS) -> Figure:
    """Privacy-utility frontiers, one panel per attack.

    Each defense's sweep is a line of (Acc, AA-1) means with ±1 std bars, the undefended target a star, the Pareto
    front dashed, and dotted lines mark the matched accuracies.
    """
    rows, baseline = sweep_rows(suite), baseline_label(suite)
    found = frontiers(records, rows, baseline, drops=drops)
    if not found:
        raise MibenchError("a frontier figure needs test-accuracy and attack-accuracy records")
    ncols = min(3, len(found))
    nrows = -(-len(found) // ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows + 0.7))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax in axes.flat[len(found) :]:
        ax.set_visible(False)
    for ax, frontier in zip(axes.flat, found, strict=False):
        families = dict.fromkeys(p.family for p in frontier.points)
        for family in families:
            mine = sorted((p for p in frontier.points if p.family == family), key=lambda p: p.acc)
            star = family == baseline
            ax.errorbar(
                [100 * p.acc for p in mine], [100 * p.attack_accuracy for p in mine],
                xerr=[100 * p.acc_std for p in mine], yerr=[100 * p.attack_accuracy_std for p in mine],
                fmt="*" if star else "o-", markersize=10 if star else 4, capsize=2, label=family,
            )  # fmt: skip
        front = sorted((p for p in frontier.points if p.on_front), key=lambda p: p.acc)
        ax.plot([100 * p.acc for p in front], [100 * p.attack_accuracy for p in front], "k--", lw=0.8, alpha=0.6)
        base = next((p for p in frontier.points if p.label == baseline), None)
        if base is not None:
            for drop in drops:
                ax.axvline(100 * base.acc - drop, color="grey", ls=":", lw=0.8)
        ax.set_title(frontier.attack)
        ax.set_xlabel("test accuracy (%) →")
        ax.set_ylabel("AA-1 (%) ↓")
        ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 6), frameon=False)
    fig.tight_layout(rect=(0, 0.7 / (3.4 * nrows + 0.7) + 0.04, 1, 1))
    return fig


def reconstruction_grid(
    plan_info: dict, store: ArtifactStore, attack: str, out: Path, classes: int = 8, seed: int | None = None
) -> Path:
    """The grid of `grid_figure`, saved as PNG."""
    fig = grid_figure(plan_info, store, attack, classes, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_figure(fig, out)
    return out


def grid_figure(
    plan_info: dict, store: ArtifactStore, attack: str, classes: int = 8, seed: int | None = None
) -> Figure:
    """Rows: the first `classes` attacked classes; columns: a private image, then each defense's first reconstruction.

    `seed` picks the run (default: the suite's first seed). Defenses whose inversion did not finish show blank.
    """
    plan = build_plan(resolve_suite(plan_info["suite"], plan_info.get("source", "<plan.json>")))
    seed = plan.suite.suite.seeds[0] if seed is None else seed
    sources = [s for s in plan.sources if s.attack == attack and s.seed == seed]
    if not sources:
        known = sorted({s.attack for s in plan.sources if s.attack})
        raise MibenchError(f"no attack labelled {attack!r} in this run; allowed: {', '.join(known)}")
    columns: dict[str, Reconstructions | None] = {}
    invert_job = None
    for source in sources:
        if not source.job_id.startswith("invert/"):
            continue
        invert = plan.jobs[source.job_id]
        invert_job = invert_job or invert
        done = store.is_done("invert", invert.key)
        columns[source.defense] = (
            Reconstructions.from_state(store.load_tensors("invert", invert.key, "reconstructions.pt")) if done else None
        )
    if invert_job is None:
        raise MibenchError(f"attack {attack!r} has no inversion jobs in this run")
    target = plan.jobs[next(d for d in invert_job.deps if d.startswith("target/"))]
    data = load_data(target.payload["data"], target.runtime, store.root / "data")
    attacked = torch.tensor(invert_job.payload["classes"][:classes])
    fig = Figure(figsize=(1.1 * (1 + len(columns)), 1.1 * len(attacked) + 0.3))
    axes = fig.subplots(len(attacked), 1 + len(columns), squeeze=False)
    for row, c in enumerate(attacked.tolist()):
        private = data.private_train.images[data.private_train.labels == c][:1].float() / 255
        cells = [private[0] if len(private) else None]
        for recon in columns.values():
            pick = None if recon is None else recon.images[(recon.labels == c) & (recon.restarts == 0)][:1]
            cells.append(pick[0] if pick is not None and len(pick) else None)
        for col, image in enumerate(cells):
            ax = axes[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            if image is not None:
                ax.imshow(image.clamp(0, 1).permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
            if row == 0:
                ax.set_title(["private", *columns][col], fontsize=7)
        axes[row][0].set_ylabel(str(c), fontsize=7)
    fig.suptitle(f"{attack} (seed {seed})", fontsize=8)
    fig.tight_layout()
    return fig
