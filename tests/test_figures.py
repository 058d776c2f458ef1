"""Figures of a finished tiny run: the trade-off plot from records, reconstruction grids from the cache."""

from __future__ import annotations

import os

import pytest
from matplotlib.image import imread

from mibench.api.records import read_records
from mibench.cli import main
from mibench.errors import MibenchError
from mibench.reporting.figures import reconstruction_grid, slug, tradeoff_plot
from mibench.running.runner import load_plan_info
from mibench.running.store import ArtifactStore
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


def test_a_run_whose_attacks_have_no_attack_accuracy_has_no_tradeoff_plot_and_no_crash(run, tmp_path):
    # an attack measured only by other metrics (a plug-in's) used to crash `mibench run` at its HTML page
    records = [r for r in read_records(run / "records.jsonl") if r.metric not in ("aa1", "aa5")]
    assert any(r.attack for r in records) and any(r.metric == "acc" for r in records)
    with pytest.raises(MibenchError, match="attack-accuracy"):
        tradeoff_plot(records, tmp_path / "t")


def test_slugs_keep_plus_variants_apart():
    assert len({slug("PLG-MI"), slug("PLG-MI+"), slug("PLG-MI++")}) == 3


# --- the self-contained HTML page, checked in a real headless browser -------------------------------------------------


def _chromium() -> str:
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    advice = "the HTML report test needs a headless Chromium: `apt-get install chromium` (.ci/run installs it)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(advice, pytrace=False)  # CI installs it: a missing browser there is a broken CI, not a skip
    pytest.skip(f"{advice}; skipped outside CI")


def _browser(*args: str, timeout: float = 120) -> str:
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as profile:
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--virtual-time-budget=3000"]  # fmt: skip
        out = subprocess.run([_chromium(), *flags, *args], capture_output=True, text=True, timeout=timeout)
    return out.stdout


def test_html_report_is_one_self_contained_sortable_page_in_a_real_browser(run, tmp_path, capsys):
    import re

    _chromium()  # skips (outside CI) or fails (under CI) before any work when no browser is installed

    assert main(["report", str(run), "--html", "--stats", "--out", str(tmp_path / "r.html")]) == 0
    page = (tmp_path / "r.html").read_text()
    assert len(page.encode()) < 3_000_000  # a few MB at most
    assert not re.search(r'(src|href)="(https?:|//)', page)  # nothing fetched: CSS, JS and images are inlined
    # Sort the first results table by its first metric column (descending on the second click), in the browser.
    hook = (
        "<script>const th=document.querySelector('table.results th:nth-child(2)');th.click();th.click();"
        "document.body.setAttribute('data-sorted', th.className);</script></body>"
    )
    (tmp_path / "sorted.html").write_text(page.replace("</body>", hook, 1))
    dom = _browser("--dump-dom", (tmp_path / "sorted.html").as_uri())
    assert 'data-sorted="sorted-desc"' in dom, dom[-2000:]
    first = re.search(r'<table class="results">.*?</table>', dom, re.S).group(0)
    values = [float(v) for v in re.findall(r"<tr><td>[^<]*</td><td[^>]*>([0-9.]+)", first)]
    assert len(values) >= 2 and values == sorted(values, reverse=True)
    assert 'id="tradeoff"' in dom and 'class="grid"' in dom and 'id="provenance"' in dom
    shot = tmp_path / "page.png"
    _browser(f"--screenshot={shot}", "--window-size=1200,1600", (tmp_path / "r.html").as_uri())
    assert shot.is_file() and imread(shot).shape[0] > 100


def test_html_leaderboard_merges_runs(run, tmp_path):
    out = tmp_path / "board.html"
    assert main(["report", str(run), str(run), "--html", "--out", str(out)]) == 0
    page = out.read_text()
    assert page.count("<tr><td>tiny</td>") == 4  # 2 runs x 2 defenses, one row per target x defense
    assert "AA-1 GMI" in page and "tiny-cnn on synthetic-identities" in page
    assert main(["report", str(run), str(run), "--markdown"]) == 2
