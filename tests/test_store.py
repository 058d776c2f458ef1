"""The artifact store publishes atomically and never loses a finished artifact."""

from __future__ import annotations

import json

import pytest

from mibench.store import DONE, ArtifactStore


def test_build_publishes_with_done_marker_last(tmp_path):
    store = ArtifactStore(tmp_path)
    with store.build("target", "k1") as (out, meta):
        (out / "model.pt").write_text("weights")
        meta["wall_time_s"] = 1.5
        assert not store.is_done("target", "k1")
    assert store.is_done("target", "k1")
    assert store.meta("target", "k1") == {"wall_time_s": 1.5}
    assert (store.path("target", "k1") / "model.pt").read_text() == "weights"
    assert [p.name for p in (tmp_path / "target").iterdir() if not p.name.endswith(".lock")] == ["k1"]


def test_failed_build_leaves_nothing(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(RuntimeError), store.build("target", "k1") as (out, _):
        (out / "model.pt").write_text("half")
        raise RuntimeError("killed")
    assert not store.is_done("target", "k1")
    assert not store.path("target", "k1").exists()
    assert list((tmp_path / "target").iterdir()) == []


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
    assert json.loads((store.path("prior", "k") / DONE).read_text()) == {"v": 2}
