"""The whole pipeline through the CLI and the runner: caching, resume after a crash, forcing, reports."""

from __future__ import annotations

import json

import pytest
import torch

import mibench.running.stages as stages
from mibench.api.records import read_records
from mibench.cli import main
from mibench.errors import RunInterrupted
from mibench.running.plan import build_plan
from mibench.running.store import ArtifactStore
from mibench.suite import load_suite
from tests.conftest import run_suite_file, write_suite

pytestmark = pytest.mark.slow


run = run_suite_file


def values(records):
    return {
        (r.seed, r.defense, r.attack, r.metric): r.value
        for r in records
        if r.metric not in ("train_time_s", "attack_time_s")
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the tiny suite."""
    from tests.conftest import TINY_SUITE

    root = tmp_path_factory.mktemp("reference")
    path = write_suite(root / "tiny.yaml", TINY_SUITE)
    summary = run(path, root / "cache", root / "run")
    return path, root, summary


def test_cli_run_writes_records_and_tables_then_reuses_everything(tmp_path, tiny_suite, capsys):
    path = write_suite(tmp_path / "tiny.yaml", tiny_suite)
    assert main(["run", str(path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "| Attack" in out and "GMI" in out
    run_dir = tmp_path / "run"
    records = read_records(run_dir / "records.jsonl")
    metrics = {r.metric for r in records}
    expected = {"acc", "aa1", "aa5", "knn_dist", "fd_evaluator", "evaluator_acc", "train_time_s", "target_queries"}
    assert expected <= metrics
    aa1 = [r for r in records if r.metric == "aa1"]
    assert len(aa1) == 2 and {r.seed for r in aa1} == {0, 1}
    r = aa1[0]
    assert r.suite == "tiny" and r.defense == "-" and r.attack == "GMI" and r.higher_is_better is False
    assert r.versions["torch"] == torch.__version__ and r.versions["methods"]["gmi"] == 1
    assert r.details["n"] == 8 and r.device == "cpu" and len(r.job_key) == 20
    assert (run_dir / "table.md").read_text().startswith("| Attack")
    assert "\\toprule" in (run_dir / "table.tex").read_text()

    again = run(path, tmp_path / "cache", run_dir)
    assert again.ran == []
    assert values(again.records) == values(records)


def test_report_latex_from_run_dir(reference, capsys):
    _, root, _ = reference
    assert main(["report", str(root / "run"), "--latex"]) == 0
    tex = capsys.readouterr().out
    assert "\\begin{tabular}{llccccc}" in tex and "\\bottomrule" in tex
    assert "$\\pm$" in tex and "\\multirow{1}{*}{GMI}" in tex
    assert "over 2 seeds" in tex
    assert main(["report", str(root / "run"), "--csv"]) == 0
    csv = capsys.readouterr().out
    header = "attack,defense,metric,mean,std,n,higher_is_better,unit,ci95_low,ci95_high,planned_seeds,partial"
    assert csv.splitlines()[0] == header


def test_resume_after_crash_redoes_nothing_finished(tmp_path, reference, monkeypatch):
    ref_path, _, ref_summary = reference
    path = tmp_path / "tiny.yaml"
    path.write_text(ref_path.read_text())
    real_invert = stages.RUNNERS["invert"]
    calls = {"n": 0}

    def crashing_invert(job, ws, ctx):
        calls["n"] += 1
        if calls["n"] == 2:  # the process is interrupted (Ctrl-C, a kill): not a job failure, the run stops
            raise KeyboardInterrupt("simulated crash")
        real_invert(job, ws, ctx)

    monkeypatch.setitem(stages.RUNNERS, "invert", crashing_invert)
    with pytest.raises(RunInterrupted, match="run the same command again to resume"):
        run(path, tmp_path / "cache", tmp_path / "run")
    store = ArtifactStore(tmp_path / "cache")
    finished = {j.id for j in build_plan(load_suite(path)).jobs.values() if store.is_done(j.stage, j.key)}
    assert finished
    partial = values(read_records(tmp_path / "run" / "records.jsonl"))  # what finished is reported, and only that
    assert partial and partial.items() <= values(ref_summary.records).items()
    leftovers = [p for p in (tmp_path / "cache").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []

    monkeypatch.setitem(stages.RUNNERS, "invert", real_invert)
    resumed = run(path, tmp_path / "cache", tmp_path / "run")
    assert finished.isdisjoint(resumed.ran)
    assert set(resumed.ran) | finished == set(ref_summary.ran)
    assert values(resumed.records) == values(ref_summary.records)


def test_force_reruns_stage_and_downstream_only(tmp_path, reference):
    ref_path, ref_root, _ = reference
    path = tmp_path / "tiny.yaml"
    path.write_text(ref_path.read_text())
    import shutil

    shutil.copytree(ref_root / "cache", tmp_path / "cache")
    forced = run(path, tmp_path / "cache", tmp_path / "run", force=["measure"])
    assert {j.split("/")[0] for j in forced.ran} == {"measure"}
    forced = run(path, tmp_path / "cache", tmp_path / "run", force=["prior"])
    assert {j.split("/")[0] for j in forced.ran} == {"prior", "invert", "measure"}
    with pytest.raises(ValueError, match="unknown stage"):
        run(path, tmp_path / "cache", tmp_path / "run", force=["gan"])


def test_dry_run_and_validate(tmp_path, tiny_suite, capsys):
    path = write_suite(tmp_path / "tiny.yaml", tiny_suite)
    assert main(["run", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("10 jobs, 10 to run, 0 cached")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("done.json"))
    assert main(["validate", str(path)]) == 0
    assert "valid. 1 defenses x 1 attacks x 2 seeds, 4 attacked classes" in capsys.readouterr().out


def test_cli_reports_suite_errors_with_exit_2(tmp_path, tiny_suite, capsys):
    tiny_suite["attacks"][0]["name"] = "gmii"
    path = write_suite(tmp_path / "bad.yaml", tiny_suite)
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml: 1 problem" in err and "did you mean 'gmi'?" in err


def test_run_folder_plan_records_provenance(reference):
    _, root, _ = reference
    plan = json.loads((root / "run" / "plan.json").read_text())
    assert plan["suite"]["name"] == "tiny"
    assert {j["id"].split("/")[0] for j in plan["jobs"]} == {"evaluator", "target", "prior", "invert", "measure"}


def test_released_checkpoints_replace_training(tmp_path, tiny_suite):
    """Official-style checkpoints ({'state_dict': module.-prefixed}) for the evaluator and the target."""
    from mibench.data.synthetic import SyntheticIdentities, SyntheticParams
    from mibench.errors import DataError
    from mibench.models.base import build_classifier
    from mibench.training.classifier import evaluate_accuracy

    data = SyntheticIdentities(SyntheticParams(**tiny_suite["data"]["params"])).load(None, 16, None)
    paths = {}
    for role, arch in (("evaluator", "tiny-resnet"), ("target", "tiny-cnn")):
        torch.manual_seed(7)
        model = build_classifier(arch, {}, num_classes=6, in_channels=3, image_size=16).eval()
        paths[role] = tmp_path / f"{role}.tar"
        torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, paths[role])
        tiny_suite[role]["checkpoint"] = str(paths[role])
        expected = evaluate_accuracy(model, data.private_test, torch.device("cpu"))
        paths[role + "_acc"] = expected
    tiny_suite["seeds"] = [0]
    summary = run(write_suite(tmp_path / "s.yaml", tiny_suite), tmp_path / "cache", tmp_path / "run")
    by_metric = {r.metric: r for r in summary.records}
    assert by_metric["evaluator_acc"].value == pytest.approx(paths["evaluator_acc"])
    assert by_metric["acc"].value == pytest.approx(paths["target_acc"])
    assert len(by_metric["evaluator_acc"].details["checkpoint"]["sha256"]) == 64
    assert by_metric["train_time_s"].value == 0.0  # loaded, not trained

    paths["evaluator"].unlink()
    with pytest.raises(DataError, match=r"evaluator\.checkpoint: checkpoint file not found"):
        run(write_suite(tmp_path / "s.yaml", tiny_suite), tmp_path / "cache", tmp_path / "run")


def test_a_released_checkpoint_far_below_its_published_accuracy_stops_what_reads_it(tmp_path, tiny_suite):
    """An untrained network saved under the released evaluator's name (a wrong loader reads like this: chance
    accuracy) fails its job with both numbers; no measurement reads it (a released target's check, the same
    function, stops the attacks on it)."""
    from mibench.models.base import build_classifier

    torch.manual_seed(7)
    model = build_classifier("tiny-resnet", {}, num_classes=6, in_channels=3, image_size=16)
    path = tmp_path / "FaceNet_95.88.tar"
    torch.save({"state_dict": model.state_dict()}, path)
    tiny_suite["evaluator"]["checkpoint"] = str(path)
    tiny_suite["seeds"] = [0]
    summary = run(write_suite(tmp_path / "s.yaml", tiny_suite), tmp_path / "cache", tmp_path / "run")
    ((job, error),) = summary.failed.items()
    assert job.startswith("evaluator/")
    assert "FaceNet_95.88.tar" in error and "published 95.88%" in error and "nothing that reads it runs" in error
    assert not any(j.startswith("measure/") for j in summary.ran) and summary.skipped
