"""Figures of a finished tiny run: the trade-off plot from records, reconstruction grids from the cache."""

from __future__ import annotations

import pytest
from matplotlib.image import imread

from mibench.cli import main
from mibench.errors import MibenchError
from mibench.figures import reconstruction_grid, slug, tradeoff_plot
from mibench.records import read_records
from mibench.runner import load_plan_info
from mibench.store import ArtifactStore
from tests.conftest import run_suite_file, write_suite

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory, request):
    from tests.conftest import MID_SHUFFLED, TINY_SUITE

    root = tmp_path_factory.mktemp("fig")
    defenses = [{"name": "none", "label": "-"}, {"name": "mid", "params": MID_SHUFFLED}]
    path = write_suite(root / "s.yaml", {**TINY_SUITE, "defenses": defenses})
    run_suite_file(path, root / "cache", root / "run")
    return root / "run"


def test_figures_command_writes_the_plot_and_a_grid_per_attack(run, capsys):
    assert main(["figures", str(run), "--classes", "3"]) == 0
    written = capsys.readouterr().out.split()
    names = sorted(p.rsplit("/", 1)[-1] for p in written)
    assert names == ["grid-gmi.png", "tradeoff.pdf", "tradeoff.png"]
    assert (run / "figures" / "tradeoff.pdf").read_bytes().startswith(b"%PDF")
    grid = imread(run / "figures" / "grid-gmi.png")
    assert grid.ndim == 3 and grid[..., :3].std() > 0.05  # images drawn, not a blank canvas


def test_grid_rows_follow_the_classes_and_unknown_attacks_are_named(run, tmp_path):
    info = load_plan_info(run)
    store = ArtifactStore(info["cache"])
    small = imread(reconstruction_grid(info, store, "GMI", tmp_path / "a.png", classes=2))
    large = imread(reconstruction_grid(info, store, "GMI", tmp_path / "b.png", classes=4))
    assert large.shape[0] > small.shape[0] and large.shape[1] == small.shape[1]  # one row per class, same columns
    with pytest.raises(MibenchError, match="allowed: GMI"):
        reconstruction_grid(info, store, "PPA", tmp_path / "c.png")


def test_tradeoff_needs_accuracy_records(run, tmp_path):
    records = [r for r in read_records(run / "records.jsonl") if r.metric != "acc"]
    with pytest.raises(MibenchError, match="test-accuracy"):
        tradeoff_plot(records, tmp_path / "t")


def test_slugs_keep_plus_variants_apart():
    assert len({slug("PLG-MI"), slug("PLG-MI+"), slug("PLG-MI++")}) == 3
