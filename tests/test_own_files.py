"""mibench touches nothing that is not its own (issue #31): a folder that is not a mibench cache is refused before
any work and never cleaned, only the spares mibench names are deleted, and no file is written through a planted
symbolic link (reports, records, run markers, locks) or read through one out of the cache."""

from __future__ import annotations

import shutil

import pytest

from mibench.cli import main
from mibench.errors import MibenchError
from mibench.running.plan import build_plan
from mibench.running.store import CACHE_MARKER, ArtifactStore
from mibench.suite import load_suite
from tests.conftest import TINY_SUITE, run_suite_file, write_suite

SPARE = ".{key}.0123456789abcdef0123456789abcdef.old"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny suite, one seed, run once: (suite path, cache, run folder)."""
    tmp = tmp_path_factory.mktemp("own")
    path = write_suite(tmp / "s.yaml", {**TINY_SUITE, "seeds": [0]})
    summary = run_suite_file(path, tmp / "cache", tmp / "run")
    assert not summary.failed
    return path, tmp / "cache", tmp / "run"


def _users_folder(tmp_path):
    """A user's project folder: files, a hidden `.x.old` folder at the top and one a level below (as in `.git`)."""
    project = tmp_path / "project"
    for folder in (project / ".x.old", project / ".git" / ".y.old", project / "target" / ".z.old"):
        folder.mkdir(parents=True)
        (folder / "keep.txt").write_text("the user's")
    (project / "notes.txt").write_text("the user's")
    return project


def test_a_folder_that_is_not_a_cache_is_refused_before_work_and_nothing_in_it_is_deleted(tiny_run, tmp_path, capsys):
    path, _, _ = tiny_run
    project = _users_folder(tmp_path)
    before = sorted(p.relative_to(project) for p in project.rglob("*"))
    assert main(["run", str(path), "--cache", str(project), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mibench: error: {project} is not a mibench cache") and len(err.strip().splitlines()) == 1
    assert "(.git, .x.old, notes.txt)" in err
    assert main(["cache", "verify", "--repair", "--cache", str(project)]) == 2
    assert f"{project} is not a mibench cache" in capsys.readouterr().err
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == before  # not one entry added or removed
    assert not (tmp_path / "r" / "records.jsonl").exists()


def test_new_empty_and_pre_marker_caches_are_claimed(tiny_run, tmp_path):
    _, cache, _ = tiny_run
    for folder in (tmp_path / "new" / "cache", tmp_path / "empty"):
        (tmp_path / "empty").mkdir(exist_ok=True)
        ArtifactStore(folder).claim()
        assert (folder / CACHE_MARKER).is_file()
    old = tmp_path / "old"
    shutil.copytree(cache, old)
    (old / CACHE_MARKER).unlink()  # a cache written before the marker: only mibench's own entries
    ArtifactStore(old).claim()
    assert (old / CACHE_MARKER).is_file()


def test_only_the_spares_mibench_names_are_cleaned(tiny_run, tmp_path):
    _, cache, _ = tiny_run
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    key = "0" * 20
    ours = copy / "target" / SPARE.format(key=key)
    users = [copy / "target" / ".notes.old", copy / "target" / f".{key}.backup.old",
             copy / "data" / SPARE.format(key=key)]  # fmt: skip
    for folder in (ours, *users):
        folder.mkdir(parents=True)
    removed = ArtifactStore(copy).clean_spares()
    assert removed == [ours] and not ours.exists()
    assert all(folder.is_dir() for folder in users)


def test_no_report_record_or_marker_is_written_through_a_planted_link(tiny_run, tmp_path):
    path, cache, _ = tiny_run
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    out = tmp_path / "run"
    out.mkdir()
    names = ("table.md", "table.tex", "records.jsonl", "plan.json", "report.html", ".running.json")
    for name in names:
        (out / name).symlink_to(outside)
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    assert main(["run", str(path), "--cache", str(copy), "--out", str(out), "--quiet"]) == 0
    assert outside.read_text() == "precious"
    for name in ("table.md", "table.tex", "records.jsonl", "plan.json", "report.html"):
        assert not (out / name).is_symlink() and (out / name).stat().st_size > 0, name
    (tmp_path / "fig").mkdir()
    (tmp_path / "fig" / "tradeoff.png").symlink_to(outside)
    assert main(["figures", str(out), "--out", str(tmp_path / "fig"), "--classes", "2"]) == 0
    assert main(["report", str(out), "--csv", "--out", str(out / "table.md")]) == 0
    assert outside.read_text() == "precious" and not (tmp_path / "fig" / "tradeoff.png").is_symlink()


def test_a_link_where_a_lock_or_an_artifact_file_belongs_is_refused(tiny_run, tmp_path):
    path, cache, _ = tiny_run
    copy = ArtifactStore(tmp_path / "cache")
    shutil.copytree(cache, copy.root)
    plan = build_plan(load_suite(path))
    target = next(j for j in plan.jobs.values() if j.stage == "target")
    outside = tmp_path / "outside.pt"
    shutil.copy(copy.path("target", target.key) / "model.pt", outside)  # the same bytes: only the link is wrong
    (copy.path("target", target.key) / "model.pt").unlink()
    (copy.path("target", target.key) / "model.pt").symlink_to(outside)
    assert "symbolic link" in copy.verify("target", target.key)
    with pytest.raises(MibenchError, match="symbolic link"):
        copy.read_bytes("target", target.key, "model.pt")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    copy.lock_path("target", target.key).unlink(missing_ok=True)  # the lock file the run left
    copy.lock_path("target", target.key).symlink_to(victim)
    with pytest.raises(MibenchError, match="symbolic link where mibench keeps its lock"):
        copy.lock("target", target.key)
    assert copy.clean_spares() == [] and victim.read_text() == "precious"


def test_labels_are_inert_in_csv_and_markdown():
    from mibench.reporting.render import render_csv, render_markdown
    from mibench.reporting.tables import build_table
    from tests.test_report import rec

    hostile = '=HYPERLINK("x")|*b*'
    records = [rec("-", None, "acc", 0, 0.9, True), rec(hostile, None, "acc", 0, 0.8, True),
               rec("-", "+cmd|GMI", "aa1", 0, 0.5, False), rec(hostile, "+cmd|GMI", "aa1", 0, 0.4, False)]  # fmt: skip
    csv = render_csv(records)
    assert "'=HYPERLINK" in csv and "'+cmd|GMI" in csv and "\n,-," in csv.replace('"', "")  # `-` alone stays
    text = render_markdown(build_table(records, "table1", None))
    assert r'=HYPERLINK("x")\|*b*' in text
    assert r"+cmd\|GMI" in text
    rows = [line for line in text.splitlines() if line.startswith("|")]
    assert len({line.count("|") - line.count(r"\|") for line in rows}) == 1  # every row has the header's cells


def test_a_key_given_twice_in_a_suite_is_an_error_naming_its_line(tmp_path, capsys):
    suite = tmp_path / "dup.yaml"
    suite.write_text("name: a\nseeds: [0]\nseeds: [1, 2]\n")
    assert main(["validate", str(suite)]) == 2
    assert "line 3: key 'seeds' appears twice in one mapping (first on line 2)" in capsys.readouterr().err


def test_a_run_folder_another_live_run_writes_is_refused_naming_it(tiny_run, tmp_path, capsys):
    import json
    import socket
    import subprocess

    path, cache, _ = tiny_run
    out = tmp_path / "run"
    out.mkdir()
    other = subprocess.Popen(["sleep", "60"])
    try:
        holder = {"pid": other.pid, "host": socket.gethostname(), "since": 0, "what": "suite other"}
        (out / ".running.json").write_text(json.dumps(holder))
        copy = tmp_path / "cache"
        shutil.copytree(cache, copy)
        assert main(["run", str(path), "--cache", str(copy), "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"{out} is being written by another run (suite other, pid {other.pid}" in err
        assert not (out / "records.jsonl").exists()
    finally:
        other.kill()
        other.wait()
    assert main(["run", str(path), "--cache", str(copy), "--out", str(out), "--quiet"]) == 0  # its holder is gone


def test_strict_report_of_a_run_without_records_fails(tmp_path, capsys):
    (tmp_path / "records.jsonl").write_text("")
    assert main(["report", str(tmp_path)]) == 0
    assert "no records" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--strict"]) == 2


def test_force_rebuilds_a_job_whose_earlier_failure_is_recorded(tiny_run, tmp_path):
    path, cache, _ = tiny_run
    copy = ArtifactStore(tmp_path / "cache")
    shutil.copytree(cache, copy.root)
    plan = build_plan(load_suite(path))
    invert = next(j for j in plan.jobs.values() if j.stage == "invert")
    copy.record_failure("invert", invert.key, {"error": "an earlier failure"})
    assert main(["run", str(path), "--cache", str(copy.root), "--out", str(tmp_path / "r"), "--quiet",
                 "--force", "invert"]) == 0  # fmt: skip
    assert copy.failure("invert", invert.key) is None and copy.is_done("invert", invert.key)


def test_checkpoints_that_are_bombs_nan_or_wrongly_typed_are_refused(tmp_path):
    import zipfile

    import torch

    from mibench.checkpoints import load_strict, read_state_dict
    from mibench.errors import CheckpointError

    bomb = tmp_path / "bomb.pt"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/data/0", bytes(64 << 20))  # 64 MiB of zeros in a few kilobytes
    with pytest.raises(CheckpointError, match="declares 67,108,864 bytes of tensors"):
        read_state_dict(bomb)
    model = torch.nn.Linear(3, 2)
    nan = {k: torch.full_like(v, float("nan")) for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match="non-finite values in"):
        load_strict(model, nan, "nan.pt")
    cast = {k: v.to(torch.int8) for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"wrongly typed (bias|weight): torch\.int8 vs torch\.float32"):
        load_strict(model, cast, "int8.pt")
    good = tmp_path / "good.pt"
    torch.save(model.state_dict(), good)
    load_strict(torch.nn.Linear(3, 2), read_state_dict(good), str(good))  # a real checkpoint still loads


def test_a_kill_between_the_renames_of_a_forced_rebuild_keeps_the_old_artifact(tmp_path):
    store = ArtifactStore(tmp_path / "cache")
    store.claim()
    key = "c" * 20
    with store.build("target", key) as (out, _):
        (out / "model.pt").write_bytes(b"old weights")
    # the state a kill leaves after `final -> .old` and before `.tmp -> final`
    final = store.path("target", key)
    old = final.parent / f".{key}.{'1' * 32}.old"
    final.rename(old)
    (final.parent / f".{key}.{'2' * 32}.tmp").mkdir()
    assert [p.name for p in store.clean_spares()] == [f".{key}.{'2' * 32}.tmp"]
    assert store.read_bytes("target", key, "model.pt") == b"old weights"


def test_a_failed_jobs_missing_cells_are_named_by_the_report(tiny_run, tmp_path, capsys):
    import json

    _, _, run = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    plan = json.loads((copy / "plan.json").read_text())
    invert = next(job for job in plan["jobs"] if job["id"].startswith("invert/"))
    plan["failed"] = {invert["id"]: "RuntimeError: boom\nTraceback ..."}
    plan["skipped"] = [job["id"] for job in plan["jobs"] if invert["id"] in job["deps"]]
    (copy / "plan.json").write_text(json.dumps(plan))
    assert main(["report", str(copy)]) == 0
    err = capsys.readouterr().err
    assert "1 job(s) failed and 1 were skipped downstream of them" in err
    assert f"{invert['label']}: RuntimeError: boom" in err
    assert main(["report", str(copy), "--strict"]) == 2


def test_reusing_artifacts_built_under_other_execution_settings_is_said(tiny_run, tmp_path, capsys):
    import yaml

    path, cache, _ = tiny_run
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    suite = yaml.safe_load(path.read_text())
    built_with = ArtifactStore(copy).meta("evaluator", build_plan(load_suite(path)).by_stage()["evaluator"][0].key)
    other = 1 if built_with["execution"]["threads"] != 1 else 2
    path2 = write_suite(tmp_path / "threads.yaml", {**suite, "execution": {"threads": other}})
    assert {j.key for j in build_plan(load_suite(path2)).jobs.values()} == {
        j.key for j in build_plan(load_suite(path)).jobs.values()
    }  # the settings are not in the keys ...
    assert main(["run", str(path2), "--cache", str(copy), "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err  # ... so reusing what other settings built is said
    assert "reusing 6 artifact(s) built under other execution settings" in err
    assert main(["run", str(path), "--cache", str(copy), "--out", str(tmp_path / "r2")]) == 0
    assert "other execution settings" not in capsys.readouterr().err


@pytest.mark.skipif(not __import__("pathlib").Path("/proc/self").is_dir(), reason="needs /proc")
def test_an_unusable_cache_is_one_error_before_any_job_and_keeps_the_old_records(tiny_run, tmp_path, capsys):
    path, _, _ = tiny_run
    out = tmp_path / "run"
    out.mkdir()
    (out / "records.jsonl").write_text("earlier records\n")
    assert main(["run", str(path), "--cache", "/proc/mibench-cache", "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith("mibench: error: the cache /proc/mibench-cache cannot be used")
    assert (out / "records.jsonl").read_text() == "earlier records\n"


def test_report_verify_names_every_record_no_intact_artifact_backs(tiny_run, tmp_path, capsys):
    import json

    _, cache, run = tiny_run
    copy_cache, copy_run = tmp_path / "cache", tmp_path / "run"
    shutil.copytree(cache, copy_cache)
    shutil.copytree(run, copy_run)
    assert main(["report", str(copy_run), "--verify", "--cache", str(copy_cache)]) == 0
    assert "every one backed" in capsys.readouterr().out
    lines = (copy_run / "records.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    acc = next(i for i, r in enumerate(records) if r["metric"] == "acc")
    records[acc]["value"] = 0.999  # an edited number
    evaluator = next(r for r in records if r["stage"] == "evaluator")
    shutil.rmtree(copy_cache / "evaluator" / evaluator["job_key"])  # a number whose artifact is gone
    (copy_run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["report", str(copy_run), "--verify", "--cache", str(copy_cache)]) == 1
    out = capsys.readouterr().out
    assert f"record {acc + 1} (acc of -" in out and "recorded 0.999, its artifact says" in out
    assert f"evaluator/{evaluator['job_key']}): no such artifact in the cache" in out
    assert "2 not backed" in out


def test_a_checkpoint_replaced_after_planning_is_an_error_not_published_under_the_old_hash(tmp_path):
    import torch

    from mibench.checkpoints import file_sha256, read_state_dict
    from mibench.errors import CheckpointError

    first, second = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), first)
    planned = file_sha256(first)
    assert set(read_state_dict(first, sha256=planned)) == {"weight", "bias"}
    torch.save(torch.nn.Linear(3, 2).state_dict(), second)
    second.replace(first)  # the file the plan hashed is replaced before the job reads it
    with pytest.raises(CheckpointError, match="changed since the run was planned"):
        read_state_dict(first, sha256=planned)


def test_a_full_disk_is_named_as_such_not_as_torchs_unexpected_pos(tmp_path, monkeypatch):
    import errno
    import shutil as shell
    from collections import namedtuple

    store = ArtifactStore(tmp_path / "cache")
    store.claim()
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shell, "disk_usage", lambda path: usage(1 << 30, 1 << 30, 1 << 20))
    key = "e" * 20
    full = r"no space left on the device of .* while writing artifact target/e+ \(1 MiB"
    with pytest.raises(MibenchError, match=full), store.build("target", key):
        raise RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos 1600 vs 1494")
    with pytest.raises(MibenchError, match="no space left"), store.build("target", key):
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(RuntimeError, match="something else"), store.build("target", key):
        raise RuntimeError("something else")
    assert not store.is_done("target", key) and not list((tmp_path / "cache" / "target").glob(".*.tmp"))


def test_records_of_runs_with_other_settings_are_not_averaged_as_seeds(tmp_path):
    from mibench.api.records import read_records, write_records
    from tests.test_report import rec

    one = rec("-", "GMI", "aa1", 0, 0.5, False)
    other = one.model_copy(update={"job_key": "another-job", "value": 0.7})  # same cell, another setting's job
    write_records(tmp_path / "joined.jsonl", [one, rec("-", "GMI", "aa1", 1, 0.6, False), other])
    with pytest.raises(ValueError, match=r"joined\.jsonl:3: aa1 of - / GMI seed 0 comes from job another-job here"):
        read_records(tmp_path / "joined.jsonl")


def test_weights_a_metric_reads_enter_its_jobs_key_and_are_checked_when_read(tmp_path):
    from mibench.checkpoints import file_sha256, planned_files
    from mibench.errors import CheckpointError
    from tests.conftest import random_measure_inputs

    weights = tmp_path / "facenet.pt"
    weights.write_bytes(b"first weights")
    suite = {**TINY_SUITE, "seeds": [0], "metrics": ["attack-accuracy",
             {"name": "facenet-distance", "params": {"weights": str(weights)}}]}  # fmt: skip
    path = write_suite(tmp_path / "s.yaml", suite)

    def measure_jobs():
        return [j for j in build_plan(load_suite(path)).jobs.values() if j.stage == "measure"]

    first = measure_jobs()
    planned = {"facenet-distance.weights": {"sha256": file_sha256(weights)}}
    assert first and all(j.payload["files"] == planned for j in first)
    assert all(j.runtime["files"] == {"facenet-distance.weights": str(weights)} for j in first)
    inputs = random_measure_inputs([0, 1], __import__("torch").zeros(2, 3, 16, 16), [0, 1])
    with planned_files({str(weights): file_sha256(weights)}):  # as the runner sets it around the measure job
        assert inputs.verified_file(weights) == file_sha256(weights)
        weights.write_bytes(b"other weights")  # replaced after planning: refused, and a new plan has a new key
        with pytest.raises(CheckpointError, match="changed since the run was planned"):
            inputs.verified_file(weights)
    assert {j.key for j in measure_jobs()}.isdisjoint({j.key for j in first})


def _pretrained_suite(tmp_path, weights):
    """The tiny suite's evaluator and target, the target an EfficientNet-B0 initialised from `weights`; no attack."""
    suite = {**TINY_SUITE, "seeds": [0], "attacks": [], "metrics": ["test-accuracy"],
             "target": {**TINY_SUITE["target"], "architecture": "efficientnet-b0",
                        "params": {"pretrained": str(weights)}}}  # fmt: skip
    return write_suite(tmp_path / "s.yaml", suite)


def _efficientnet_file(path, seed):
    import torch
    import torchvision

    torch.manual_seed(seed)
    torch.save(torchvision.models.efficientnet_b0(weights=None).state_dict(), path)


def test_an_architectures_initialisation_file_enters_its_targets_key_by_content(tmp_path):
    from mibench.checkpoints import file_sha256

    weights = tmp_path / "efficientnet_b0.pth"
    _efficientnet_file(weights, 0)
    path = _pretrained_suite(tmp_path, weights)

    def target():
        return next(j for j in build_plan(load_suite(path)).jobs.values() if j.stage == "target")

    first = target()
    assert first.payload["files"] == {"pretrained": {"sha256": file_sha256(weights)}}
    assert first.runtime["files"] == {"pretrained": str(weights)}
    _efficientnet_file(weights, 1)  # other bytes at the same path: another job
    assert target().key != first.key
    # and an evaluator without such a file keeps the key it always had (no "files" entry)
    assert "files" not in next(j for j in build_plan(load_suite(path)).jobs.values() if j.stage == "evaluator").payload


def test_an_initialisation_file_replaced_after_planning_fails_its_job_instead_of_training_on_it(tmp_path):
    from mibench.running.runner import run_plan

    weights = tmp_path / "efficientnet_b0.pth"
    _efficientnet_file(weights, 0)
    plan = build_plan(load_suite(_pretrained_suite(tmp_path, weights)))
    _efficientnet_file(weights, 1)  # replaced between planning and the target job
    import torch

    from mibench.api.progress import SILENT

    summary = run_plan(plan, store=ArtifactStore(tmp_path / "cache"), run_dir=tmp_path / "run",
                       device=torch.device("cpu"), reporter=SILENT)  # fmt: skip
    failed = [j for j in plan.jobs.values() if j.id in summary.failed]
    assert [j.stage for j in failed] == ["target"]
    assert "changed since the run was planned" in summary.failed[failed[0].id]


def test_a_planned_network_pickle_is_checked_when_read(tmp_path):
    from mibench.checkpoints import planned_files
    from mibench.errors import CheckpointError
    from mibench.gan.nvidia_pickle import read_network_pickle

    pickle_file = tmp_path / "ffhq.pkl"
    pickle_file.write_bytes(b"not the planned bytes")
    with planned_files({str(pickle_file): "0" * 64}), pytest.raises(CheckpointError, match="changed since"):
        read_network_pickle(pickle_file)


def test_initialisation_files_nested_in_a_methods_params_are_found_by_key_path(tmp_path):
    from mibench.running.plan import weight_files

    b0, b2 = tmp_path / "b0.pth", tmp_path / "b2.pth"
    b0.write_bytes(b"weights")
    params = {"students": [{"architecture": "efficientnet-b0", "params": {"pretrained": str(b0)}},
                           {"architecture": "efficientnet-b1", "params": {"pretrained": None}},
                           {"architecture": "efficientnet-b2", "params": {"pretrained": str(b2)}}],  # absent
              "gan": {"checkpoint": str(b0)}, "pretrained": ""}  # fmt: skip
    assert weight_files(params) == {"students[0].params.pretrained": str(b0)}


def test_an_absent_initialisation_file_leaves_planning_alone_and_fails_its_job_naming_it(tmp_path):
    import torch

    from mibench.api.progress import SILENT
    from mibench.running.runner import run_plan

    weights = tmp_path / "not_downloaded.pth"
    plan = build_plan(load_suite(_pretrained_suite(tmp_path, weights)))  # `mibench validate` works without weights
    target = next(j for j in plan.jobs.values() if j.stage == "target")
    assert "files" not in target.payload
    summary = run_plan(plan, store=ArtifactStore(tmp_path / "cache"), run_dir=tmp_path / "run",
                       device=torch.device("cpu"), reporter=SILENT)  # fmt: skip
    assert "not_downloaded.pth" in summary.failed[target.id]
