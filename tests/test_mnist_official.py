"""suites/mnist-official.yaml is Trap-MID's official MNIST configuration (ntuaislab/Trap-MID, config/mnist/*.json)."""

from __future__ import annotations

import pytest
import torch
import yaml

from mibench.running.plan import build_plan
from mibench.suite import load_suite

# The official values, transcribed from config/mnist/classify.json, classify_negls.json, classify_trap.json and
# eval.json ("IR18"/"VGG16" sections), train.py (one-channel triggers for MNIST) and utils.py (64x64, no flip).
OFFICIAL_RECIPE = {"epochs": 10, "batch_size": 64, "lr": 1e-2, "momentum": 0.9, "weight_decay": 1e-4}
OFFICIAL_TRAP = {
    "alpha": 0.02,
    "beta": 0.2,
    "optimize_triggers": True,
    "step_size": 1e-2,
    "discriminator": True,
    "trigger_channels": 1,
}
OFFICIAL_NEGLS = {"smoothing": -0.05, "milestones": [7, 9], "gamma": 0.1}


@pytest.fixture
def suite(monkeypatch, tmp_path):
    monkeypatch.setenv("MIBENCH_WEIGHTS", str(tmp_path))
    return load_suite("suites/mnist-official.yaml")


def test_target_evaluator_and_data_are_the_official_ones(suite):
    s = suite.suite
    assert (s.data.dataset, s.data.image_size, s.attacked_classes) == ("mnist", 64, 5)
    assert s.data.params.get("private_classes", [0, 1, 2, 3, 4]) == [0, 1, 2, 3, 4]
    assert suite.target_arch.name == "ir18" and suite.evaluator_arch.name == "vgg16"
    assert suite.target_arch.params.pretrained.endswith("resnet18-f37072fd.pth")  # torchvision's pretrained=True
    for spec in (s.target.train, s.evaluator.train):
        assert {k: getattr(spec, k) for k in OFFICIAL_RECIPE} == OFFICIAL_RECIPE
        assert spec.optimizer == "sgd" and not spec.hflip and not spec.milestones
    assert suite.evaluator_dataset.params.private_classes == list(range(10))  # eval.json: "eval": true
    assert len(s.seeds) == 5


def test_defenses_are_the_official_ones(suite):
    members = {d.label: d.members[0] for d in suite.defenses}
    assert list(members) == ["-", "MID", "BiDO", "NegLS", "Trap-MID"]
    trap = members["Trap-MID"].params
    assert {k: getattr(trap, k) for k in OFFICIAL_TRAP} == OFFICIAL_TRAP
    assert trap.augment and trap.triggers == "blend"
    negls = members["NegLS"].params
    assert negls.smoothing == OFFICIAL_NEGLS["smoothing"]
    assert negls.recipe.milestones == OFFICIAL_NEGLS["milestones"] and negls.recipe.gamma == OFFICIAL_NEGLS["gamma"]
    assert (negls.recipe.optimizer, negls.recipe.lr, negls.recipe.weight_decay) == ("sgd", 1e-2, 1e-4)
    assert [a.name for a in suite.attacks] == ["gmi", "kedmi", "lomma-gmi", "plgmi"]
    with open("suites/mnist-official.yaml") as f:
        assert "trapdoor-detection" in yaml.safe_load(f)["metrics"]


def test_the_evaluator_learns_all_ten_digits_while_measurements_use_the_private_five(suite):
    plan = build_plan(suite)
    evaluator = next(j for j in plan.jobs.values() if j.stage == "evaluator")
    measure = next(j for j in plan.jobs.values() if j.stage == "measure")
    assert evaluator.payload["data"]["dataset"]["params"]["private_classes"] == list(range(10))
    assert measure.payload["eval_data"]["dataset"]["params"]["private_classes"] == [0, 1, 2, 3, 4]


def test_an_evaluator_trained_on_other_classes_runs_end_to_end(tmp_path, tiny_suite):
    from mibench.api.progress import SILENT
    from mibench.running.runner import run_plan
    from mibench.running.store import ArtifactStore
    from mibench.suite import resolve_suite

    pytest.importorskip("sklearn")
    tiny_suite.update(
        data={"dataset": "digits", "image_size": 16},
        defenses=[{"name": "none", "label": "-"}],
        attacks=[],
        metrics=["test-accuracy"],
        seeds=[0],
        attacked_classes=5,
    )
    tiny_suite["target"]["train"]["epochs"] = 1
    tiny_suite["evaluator"].update(dataset_params={"private_classes": list(range(10))})
    tiny_suite["evaluator"]["train"]["epochs"] = 2
    store = ArtifactStore(tmp_path / "cache")
    summary = run_plan(
        build_plan(resolve_suite(tiny_suite)),
        store=store,
        run_dir=tmp_path / "run",
        device=torch.device("cpu"),
        reporter=SILENT,
    )
    assert not summary.failed
    evaluator = next(j for j in build_plan(resolve_suite(tiny_suite)).jobs.values() if j.stage == "evaluator")
    head = store.load_tensors("evaluator", evaluator.key, "model.pt")["head.weight"]
    assert head.shape[0] == 10
    (acc,) = [r for r in summary.records if r.metric == "evaluator_acc"]
    assert acc.value > 0.3  # ten digits, chance 0.1
    with pytest.raises(Exception, match="only the evaluator"):
        tiny_suite["target"]["dataset_params"] = {"private_classes": [0, 1]}
        resolve_suite(tiny_suite)
