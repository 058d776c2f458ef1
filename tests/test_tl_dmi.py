"""TL-DMI: public pre-training, then private training that leaves the frozen front layers' weights bit-identical."""

from __future__ import annotations

import pytest
import torch

from mibench.api.context import RunContext
from mibench.api.recipe import TrainSpec
from mibench.defenses.tl_dmi import TLDMI, TLDMIParams
from mibench.errors import MibenchError
from mibench.models.base import build_classifier
from mibench.training.stack import DefenseStack
from tests.conftest import tiny_model

SPEC = TrainSpec(epochs=3, batch_size=32, lr=0.05, selection="last")
SHORT = {
    "recipe": {
        "optimizer": None,
        "lr": None,
        "weight_decay": None,
        "batch_size": None,
        "epochs": None,
        "milestones": None,
    },
    "pretrain_epochs": 2,
}


def test_frozen_layers_are_bit_identical_after_private_training_and_the_rest_learns(defense_data, monkeypatch):
    after_prepare = {}
    prepare = TLDMI.prepare

    def spy(self, model, *args):
        model = prepare(self, model, *args)
        after_prepare.update({k: v.detach().clone() for k, v in model.named_parameters()})
        return model

    monkeypatch.setattr(TLDMI, "prepare", spy)
    initial = {k: v.detach().clone() for k, v in tiny_model().named_parameters()}
    trained = DefenseStack([TLDMI(TLDMIParams.model_validate(SHORT))]).fit(
        tiny_model(), defense_data, SPEC, RunContext(seed=0)
    )
    final = dict(trained.model.named_parameters())
    frozen = ["body.0.weight", "body.0.bias"]  # tiny-cnn's split 2: conv, ReLU, pool
    for name in frozen:
        assert not torch.equal(after_prepare[name], initial[name])  # pre-training on the public identities moved them
        assert torch.equal(final[name], after_prepare[name])  # private training did not
        assert not final[name].requires_grad
    for name in ("body.3.weight", "feature.0.weight", "head.weight"):
        assert not torch.equal(final[name], after_prepare[name])
    (stat,) = [m for m in trained.stats if m.metric == "tl_frozen_fraction"]
    assert stat.details == {"split": 2, "layers": 7, "pretraining": "public", "frozen_parameters": 16 * 3 * 9 + 16}
    assert trained.test_accuracy > 0.5  # chance 0.2


def test_vgg16_split_freezes_the_first_27_body_children_and_needs_its_imagenet_weights(defense_data):
    model = build_classifier("vgg16", {}, num_classes=5, in_channels=3, image_size=32)
    defense = TLDMI(TLDMIParams(pretrain="architecture"))
    with pytest.raises(MibenchError, match="has no `pretrained` weights"):
        defense.prepare(model, defense_data, SPEC, RunContext())
    model.params = model.params.model_copy(update={"pretrained": "vgg16_bn-6c64b313.pth"})  # as if loaded
    defense.prepare(model, defense_data, SPEC, RunContext())
    children = model.transfer_layers()
    assert len(children) == 44
    trainable = [i for i, c in enumerate(children) if any(q.requires_grad for q in c.parameters())]
    assert trainable and min(trainable) == 27  # conv 27 onward (the official `i <= 26` frozen)
    assert model.fc_layer.weight.requires_grad and model.bn.weight.requires_grad


@pytest.mark.parametrize("freeze_input_layer", [False, True])
def test_ir_nets_input_layer_follows_the_official_code_unless_asked(defense_data, freeze_input_layer):
    model = build_classifier("facenet64", {}, num_classes=5, in_channels=3, image_size=64)
    model.params = model.params.model_copy(update={"pretrained": "backbone_ir50_ms1m_epoch120.pth"})
    TLDMI(TLDMIParams(pretrain="architecture", freeze_input_layer=freeze_input_layer)).prepare(
        model, defense_data, SPEC, RunContext()
    )
    body = model.transfer_layers()
    assert [any(q.requires_grad for q in u.parameters()) for u in body] == [False] * 6 + [True] * (len(body) - 6)
    assert all(q.requires_grad != freeze_input_layer for q in model.feature.input_layer.parameters())


def test_public_pretraining_needs_public_identities(defense_data):
    from dataclasses import replace

    unlabelled = replace(defense_data, public_identities=None)
    with pytest.raises(MibenchError, match="needs identity labels of the public images"):
        TLDMI(TLDMIParams.model_validate(SHORT)).prepare(tiny_model(), unlabelled, SPEC, RunContext())


def test_auto_on_facenet64_starts_from_random_weights_as_the_official_code(defense_data, tmp_path):
    # get_classifier loads the MS-Celeb backbone only for FaceNet, FaceNet_all, FaceNet_64, IR50 and IR152; the run
    # is named FaceNet64, so its backbone is never loaded and its frozen units stay random. `architecture` keeps it.
    torch.manual_seed(0)
    donor = build_classifier("facenet64", {}, num_classes=4, in_channels=3, image_size=64)
    path = tmp_path / "backbone.pt"
    torch.save({k.removeprefix("feature."): v for k, v in donor.state_dict().items() if k.startswith("feature.")}, path)
    spec = TrainSpec(epochs=1, batch_size=8, lr=0.01, selection="last")
    frozen = {}
    for route in ("auto", "architecture"):
        model = build_classifier("facenet64", {"pretrained": str(path)}, num_classes=4, in_channels=3, image_size=64)
        torch.manual_seed(1)
        TLDMI(TLDMIParams(pretrain=route, **SHORT)).prepare(model, defense_data, spec, RunContext())
        frozen[route] = model.feature.body[0].res_layer[1].weight.detach().clone()
    loaded = donor.feature.body[0].res_layer[1].weight
    assert torch.equal(frozen["architecture"], loaded)
    assert not torch.allclose(frozen["auto"], loaded)
