"""The artifact store publishes atomically and never loses a finished artifact."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mibench.errors import MibenchError
from mibench.running.locks import LockTimeout
from mibench.running.store import DONE, ArtifactStore, CorruptArtifact


def test_build_publishes_with_done_marker_last(tmp_path):
    store = ArtifactStore(tmp_path)
    with store.build("target", "k1") as (out, meta):
        (out / "model.pt").write_text("weights")
        meta["wall_time_s"] = 1.5
        assert not store.is_done("target", "k1")
    assert store.is_done("target", "k1")
    assert store.meta("target", "k1")["wall_time_s"] == 1.5
    assert store.meta("target", "k1")["files"] == {
        "model.pt": {"size": 7, "sha256": hashlib.sha256(b"weights").hexdigest()}
    }
    assert (store.path("target", "k1") / "model.pt").read_text() == "weights"
    assert [p.name for p in (tmp_path / "target").iterdir() if ".lock" not in p.name] == ["k1"]


def test_failed_build_leaves_nothing(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(RuntimeError), store.build("target", "k1") as (out, _):
        (out / "model.pt").write_text("half")
        raise RuntimeError("killed")
    assert not store.is_done("target", "k1")
    assert not store.path("target", "k1").exists()
    assert [p for p in (tmp_path / "target").iterdir() if ".lock" not in p.name] == []


def test_failed_rebuild_keeps_the_finished_artifact(tmp_path):
    store = ArtifactStore(tmp_path)
    with store.build("prior", "k") as (out, meta):
        (out / "a").write_text("old")
        meta["v"] = 1
    with pytest.raises(RuntimeError), store.build("prior", "k") as (out, _):
        raise RuntimeError("crash during forced rebuild")
    assert (store.path("prior", "k") / "a").read_text() == "old"
    with store.build("prior", "k") as (out, meta):
        (out / "a").write_text("new")
        meta["v"] = 2
    assert (store.path("prior", "k") / "a").read_text() == "new"
    assert json.loads((store.path("prior", "k") / DONE).read_text())["v"] == 2


def _artifact(store, stage="target", key="k", files=None):
    with store.build(stage, key) as (out, meta):
        for name, data in (files or {"model.pt": b"0123456789", "values.json": b"[]"}).items():
            (out / name).write_bytes(data)
        meta["label"] = "x"
    return store.path(stage, key)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda f: (f / "model.pt").write_bytes(b"0123456780"), "does not match its SHA-256"),  # same size
        (lambda f: (f / "model.pt").write_bytes(b"01234"), "has 5 bytes"),
        (lambda f: (f / "model.pt").unlink(), "model.pt is missing"),
        (lambda f: (f / DONE).write_text((f / DONE).read_text()[:20]), "done.json is unreadable"),
        (lambda f: (f / DONE).write_text('{"label": "x"}'), "lists no files"),
    ],
    ids=["flipped", "truncated", "deleted", "marker-truncated", "marker-without-files"],
)
def test_verify_names_each_kind_of_damage(tmp_path, damage, expected):
    store = ArtifactStore(tmp_path)
    folder = _artifact(store)
    assert store.verify("target", "k") is None
    damage(folder)
    assert expected in store.verify("target", "k")


def test_verified_reads_refuse_changed_bytes_and_name_the_artifact(tmp_path):
    store = ArtifactStore(tmp_path)
    folder = _artifact(store)
    assert store.read_bytes("target", "k", "model.pt") == b"0123456789"
    (folder / "model.pt").write_bytes(b"0123456780")
    with pytest.raises(CorruptArtifact, match=r"target/k is corrupt: model.pt does not match"):
        store.read_bytes("target", "k", "model.pt")
    with pytest.raises(CorruptArtifact, match=r"does not list other\.pt"):
        store.read_bytes("target", "k", "other.pt")


def test_quarantined_artifact_is_no_longer_done_and_its_folder_is_cleaned(tmp_path):
    store = ArtifactStore(tmp_path)
    store.claim()
    key = "a" * 20
    _artifact(store, key=key)
    store.quarantine("target", key)
    assert not store.is_done("target", key)
    removed = store.clean_spares()
    assert [p.name.endswith(".corrupt") for p in removed] == [True]
    assert [p for p in (tmp_path / "target").iterdir() if ".lock" not in p.name] == []


def test_clean_spares_keeps_a_temporary_folder_whose_build_holds_the_lock(tmp_path):
    store = ArtifactStore(tmp_path)
    store.claim()
    (tmp_path / "prior").mkdir()
    dead, busy, uid = "d" * 20, "b" * 20, "0" * 32
    litter = tmp_path / "prior" / f".{dead}.{uid}.tmp"
    live = tmp_path / "prior" / f".{busy}.{uid}.tmp"
    litter.mkdir()
    live.mkdir()
    with store.lock("prior", busy):
        removed = store.clean_spares()
    assert removed == [litter] and live.is_dir()


def test_an_unclaimed_folder_is_never_cleaned(tmp_path):
    store = ArtifactStore(tmp_path)
    (tmp_path / "prior" / f".{'d' * 20}.{'0' * 32}.tmp").mkdir(parents=True)
    assert store.clean_spares() == [] and len(list((tmp_path / "prior").iterdir())) == 1


def test_audit_reports_and_repairs(tmp_path):
    store = ArtifactStore(tmp_path)
    store.claim()
    _artifact(store, key="good")
    bad = _artifact(store, key="bad")
    (bad / "values.json").write_bytes(b"{}")
    audit = store.audit()
    assert audit.checked == 2 and list(audit.invalid) == ["target/bad"]
    assert store.is_done("target", "bad")  # only reported
    assert store.audit(repair=True).invalid and not store.is_done("target", "bad")
    assert store.audit().invalid == {}


def test_failed_swap_of_a_forced_rebuild_puts_the_old_artifact_back(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    _artifact(store, files={"a": b"old"})
    real = os.replace
    calls = []

    def flaky(src, dst):
        calls.append(src)
        if str(src).endswith(".tmp") and Path(dst).name == "k":  # the new artifact's move into place
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr("mibench.running.store.os.replace", flaky)
    with pytest.raises(MibenchError, match="no space left"), store.build("target", "k") as (out, _):
        (out / "a").write_bytes(b"new")
    monkeypatch.setattr("mibench.running.store.os.replace", real)
    assert store.read_bytes("target", "k", "a") == b"old"
    assert store.verify("target", "k") is None


def test_lock_names_its_holder_times_out_and_takes_over_a_dead_holder(tmp_path):
    store = ArtifactStore(tmp_path)
    script = (
        "import json, os, sys, time\n"
        "from filelock import FileLock\n"
        "lock = FileLock(sys.argv[1]); lock.acquire()\n"
        "holder = json.loads(sys.argv[2]); holder['pid'] = holder['pid'] or os.getpid()\n"
        "open(sys.argv[1] + '.json', 'w').write(json.dumps(holder))\n"
        "print('held', flush=True); time.sleep(60)\n"
    )
    path = store.lock_path("target", "k")
    path.parent.mkdir(parents=True)
    messages = []

    def hold(pid):
        holder = {"pid": pid, "host": socket.gethostname(), "since": 0, "what": "target/k"}
        proc = subprocess.Popen(
            [sys.executable, "-c", script, str(path), json.dumps(holder)], stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "held"
        return proc

    live = hold(None)  # a live holder: waited for, named, given up on after the timeout
    try:
        with (
            pytest.raises(LockTimeout, match=f"pid {live.pid} on {socket.gethostname()}"),
            store.lock("target", "k", report=messages.append, timeout=1),
        ):
            pass
        assert any(f"waiting for target/k: pid {live.pid}" in m for m in messages)
    finally:
        live.kill()
        live.wait()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stuck = hold(int(dead.stdout))  # a holder record naming a process that is gone (a lock that outlived it)
    try:
        with store.lock("target", "k", report=messages.append, timeout=10):
            pass
        assert any("taking over the stale lock of target/k" in m for m in messages)
    finally:
        stuck.kill()
        stuck.wait()


def test_legacy_artifacts_are_named_and_adopted_only_on_request(tmp_path):
    store = ArtifactStore(tmp_path)
    folder = _artifact(store)
    meta = json.loads((folder / DONE).read_text())
    del meta["files"]
    (folder / DONE).write_text(json.dumps(meta))  # as a cache written before integrity records
    assert "--adopt-legacy" in store.verify("target", "k")
    audit = store.audit(adopt_legacy=True)
    assert audit.adopted == 1 and audit.invalid == {}
    assert store.read_bytes("target", "k", "model.pt") == b"0123456789"
    assert store.audit(adopt_legacy=True).adopted == 0  # only once
