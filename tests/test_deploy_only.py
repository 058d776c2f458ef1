"""Defenses that act only at deployment (MIDAS, the output purifiers) reuse the weights trained without them instead of
training a copy (issue #39): the plan, the bytes, and what their targets record."""

from __future__ import annotations

import inspect

import torch

from mibench.api.defense import Defense
from mibench.registry import DEFENSES
from mibench.running.plan import build_plan
from mibench.running.store import ArtifactStore
from mibench.suite import load_suite
from mibench.training.stack import trained_prefix
from tests.conftest import TINY_SUITE, run_suite_file, write_suite

TRAINING_HOOKS = ("prepare", "wrap", "configure", "fit")


def test_deploy_only_defenses_leave_every_training_hook_alone():
    deploy_only = [cls for _, cls in DEFENSES if cls.deploy_only]
    assert {cls.name for cls in deploy_only} >= {"midas", "conditional-purifier", "adversarial-purifier"}
    for cls in deploy_only:
        for hook in TRAINING_HOOKS:
            assert inspect.getattr_static(cls, hook) is inspect.getattr_static(Defense, hook), (cls.name, hook)


def test_trained_prefix_reuses_only_when_deploy_only_members_come_last():
    midas, trap, none = DEFENSES.get("midas"), DEFENSES.get("trap-mid"), DEFENSES.get("none")
    assert trained_prefix([midas]) == 0 and trained_prefix([trap, midas]) == 1
    assert trained_prefix([none]) is None and trained_prefix([midas, trap]) is None


def _suite(tmp_path, defenses):
    suite = {**TINY_SUITE, "seeds": [0], "defenses": defenses, "attacks": [], "metrics": ["test-accuracy"]}
    return write_suite(tmp_path / "s.yaml", suite)


def test_a_deploy_only_target_depends_on_the_target_its_training_members_plan(tmp_path):
    trap = {"name": "trap-mid", "params": {"alpha": 0.25, "beta": 0.5, "augment": False}}
    defenses = [{"name": "midas", "label": "MIDAS"}, {"label": "Trap-MID + MIDAS", "stack": [trap, {"name": "midas"}]},
                {"name": "none", "label": "-"}, {**trap, "label": "Trap-MID"}]  # fmt: skip
    plan = build_plan(load_suite(_suite(tmp_path, defenses)))
    targets = plan.by_stage()["target"]
    assert len(targets) == 4  # four rows, four target jobs: the undefended and Trap-MID targets planned once, shared

    def target(*names: str):
        return next(j for j in targets if [m["name"] for m in j.payload["defense"]] == list(names))

    undefended, trap_only = target("none"), target("trap-mid")
    assert target("midas").deps == (undefended.id,) and target("midas").payload["base"] == undefended.key
    assert target("trap-mid", "midas").payload["base"] == trap_only.key
    assert "base" not in undefended.payload and "base" not in trap_only.payload
    assert "train" not in target("midas").payload  # what trains the weights is in the base's key


def test_deploy_only_targets_train_nothing_and_serve_the_base_weights(tmp_path, monkeypatch):
    import mibench.training.stack as defense_module

    defenses = [{"name": "none", "label": "-"}, {"name": "midas", "label": "MIDAS"},
                {"name": "conditional-purifier", "label": "Purifier", "params": {"epochs": 2}}]  # fmt: skip
    path = _suite(tmp_path, defenses)
    trainings = []
    real = defense_module.train_classifier
    monkeypatch.setattr(defense_module, "train_classifier", lambda *a, **k: trainings.append(1) or real(*a, **k))
    summary = run_suite_file(path, tmp_path / "cache", tmp_path / "run")
    assert not summary.failed and len(trainings) == 1  # the undefended target only
    store, plan = ArtifactStore(tmp_path / "cache"), build_plan(load_suite(path))
    jobs = {j.label: j for j in plan.jobs.values() if j.stage == "target"}
    base = jobs["target - seed=0"]
    for label in ("MIDAS", "Purifier"):
        job = jobs[f"target {label} seed=0"]
        assert not (store.path("target", job.key) / "model.pt").exists()  # no second copy of the weights
        values = {v["metric"]: v for v in store.read_json("target", job.key, "values.json")}
        base_time = values["train_time_s"]["details"]["base_train_time_s"]
        assert base_time == store.read_json("target", base.key, "values.json")[0]["value"]
        assert values["train_time_s"]["value"] >= base_time
    extras = store.load_tensors("target", jobs["target Purifier seed=0"].key, "extras.pt")
    assert any(k.startswith("0.purifier.") for k in extras)
    records = {(r.defense, r.metric): r.value for r in summary.records}
    assert records[("Purifier", "acc")] is not None and torch.isfinite(torch.tensor(records[("MIDAS", "acc")]))


def test_attacks_train_their_priors_on_the_clean_classifier_behind_midas_as_its_deep_notebook(tmp_path):
    # MIDAS_deep.ipynb trains the inversion network's decoder on the clean classifier and corrupts the weights only
    # for the victims' queries: the prior job reads the undefended target, the inversion the deployed MIDAS copy.
    # `attacker_training: deployed` trains through the corrupted copy; output purifiers are an API: through them.
    defenses = [
        {"name": "none", "label": "-"},
        {"name": "midas", "label": "MIDAS"},
        {"name": "midas", "label": "MIDAS-d", "params": {"attacker_training": "deployed"}},
        {"name": "conditional-purifier", "label": "Purifier", "params": {"epochs": 1}},
    ]
    suite = {**TINY_SUITE, "seeds": [0], "defenses": defenses, "metrics": ["test-accuracy"],
             "attacks": [{"name": "inversion-network", "params": {"epochs": 1}}]}  # fmt: skip
    plan = build_plan(load_suite(write_suite(tmp_path / "s.yaml", suite)))
    targets = {j.label.split()[1]: j for j in plan.by_stage()["target"]}
    priors = {j.payload["target"]: j for j in plan.by_stage()["prior"]}
    inverts = {j.payload["target"]: j for j in plan.by_stage()["invert"]}
    clean, midas, deployed, purifier = (targets[k] for k in ("-", "MIDAS", "MIDAS-d", "Purifier"))
    assert set(priors) == {clean.key, deployed.key, purifier.key}  # MIDAS shares the undefended target's decoder
    assert priors[clean.key].id in inverts[midas.key].deps and inverts[midas.key].payload["target"] == midas.key
    assert priors[deployed.key].id in inverts[deployed.key].deps
