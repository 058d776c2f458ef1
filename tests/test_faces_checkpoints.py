"""Paper-scale architectures (shapes, parameter counts from closed forms) and strict checkpoint loading."""

from __future__ import annotations

import pytest
import torch
import torchvision

from mibench.checkpoints import load_strict, read_state_dict
from mibench.errors import CheckpointError
from mibench.models.base import build_classifier
from mibench.models.faces import IR_UNITS

pytestmark = pytest.mark.slow


def ir_parameter_count(depth: int, image_size: int, num_classes: int) -> int:
    """Independent count from the face.evoLVe structure (spec §2.2-2.4)."""
    total = 3 * 64 * 9 + 2 * 64 + 64  # input conv, BN, PReLU
    channels = 64
    for width, units in zip((64, 128, 256, 512), IR_UNITS[depth], strict=True):
        for i in range(units):
            c_in = channels if i == 0 else width
            total += 2 * c_in + c_in * width * 9 + width + width * width * 9 + 2 * width  # residual branch
            if c_in != width:
                total += c_in * width + 2 * width  # projection shortcut
        channels = width
    r = image_size // 16
    total += 2 * 512 + 512 * r * r * 512 + 512 + 2 * 512  # output layer
    return total + 512 * num_classes + num_classes


@pytest.mark.parametrize(("name", "size", "depth"), [("facenet64", 64, 50), ("ir152", 64, 152), ("facenet", 112, 50)])
def test_ir_networks(name, size, depth):
    model = build_classifier(name, {}, num_classes=1000, in_channels=3, image_size=size)
    assert sum(p.numel() for p in model.parameters()) == ir_parameter_count(depth, size, 1000)
    x = torch.rand(2, 3, size, size, requires_grad=True)
    out = model.eval()(x)
    assert out.features.shape == (2, 512) and out.logits.shape == (2, 1000)
    out.logits.sum().backward()
    assert x.grad is not None
    assert len(model.hidden_layers()) == 4


def test_vgg16_head_and_count():
    model = build_classifier("vgg16", {}, num_classes=1000, in_channels=3, image_size=64)
    body = sum(p.numel() for p in torchvision.models.vgg16_bn(weights=None).features.parameters())
    assert sum(p.numel() for p in model.parameters()) == body + 2 * 2048 + 2048 * 1000 + 1000
    assert not model.bn.bias.requires_grad and model.bn.bias.abs().sum() == 0
    out = model.eval()(torch.rand(2, 3, 64, 64))
    assert out.features.shape == (2, 2048)
    assert [h.kernel_size for h in model.hidden_layers()] == [2, 2, 2, 2]


def official_style_checkpoint(model, path):
    """What the KED-MI/Trap-MID code writes: {'state_dict': DataParallel(model).state_dict()}."""
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)


@pytest.mark.parametrize(("name", "size"), [("vgg16", 64), ("facenet", 112), ("tiny-cnn", 16)])
def test_checkpoint_round_trip(tmp_path, name, size):
    torch.manual_seed(0)
    source = build_classifier(name, {}, num_classes=10, in_channels=3, image_size=size).eval()
    official_style_checkpoint(source, tmp_path / "ckpt.tar")
    torch.manual_seed(1)
    target = build_classifier(name, {}, num_classes=10, in_channels=3, image_size=size).eval()
    load_strict(target, read_state_dict(tmp_path / "ckpt.tar"), "ckpt.tar")
    x = torch.rand(2, 3, size, size)
    torch.testing.assert_close(target(x).logits, source(x).logits)


def test_renamed_key_fails_loudly(tmp_path):
    model = build_classifier("vgg16", {}, num_classes=10, in_channels=3, image_size=64)
    state = dict(model.state_dict())
    state["fc.weight"] = state.pop("fc_layer.weight")
    torch.save({"state_dict": state}, tmp_path / "renamed.tar")
    with pytest.raises(CheckpointError, match=r"missing keys fc_layer\.weight; unexpected keys fc\.weight"):
        load_strict(model, read_state_dict(tmp_path / "renamed.tar"), "renamed.tar")


def test_wrong_shape_and_unreadable_files(tmp_path):
    model = build_classifier("tiny-cnn", {}, num_classes=10, in_channels=3, image_size=16)
    other = build_classifier("tiny-cnn", {}, num_classes=7, in_channels=3, image_size=16)
    expected = r"shape mismatch head\.bias: \(7,\) vs \(10,\), head\.weight: \(7, 64\) vs \(10, 64\)"
    with pytest.raises(CheckpointError, match=expected):
        load_strict(model, other.state_dict(), "other")
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(tmp_path / "absent.tar")
    (tmp_path / "junk.tar").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_state_dict(tmp_path / "junk.tar")


def test_pretrained_backbone_initialisation(tmp_path):
    torch.manual_seed(0)
    ms1m = build_classifier("facenet", {}, num_classes=10, in_channels=3, image_size=112).feature
    torch.save(ms1m.state_dict(), tmp_path / "backbone_ir50_ms1m_epoch120.pth")
    target = build_classifier(
        "facenet64",
        {"pretrained": str(tmp_path / "backbone_ir50_ms1m_epoch120.pth")},
        num_classes=10,
        in_channels=3,
        image_size=64,
    )
    torch.testing.assert_close(target.feature.body[0].res_layer[1].weight, ms1m.body[0].res_layer[1].weight)
    imagenet = torchvision.models.vgg16_bn(weights=None)
    # the convolutional part only: the file's 120M-parameter classifier is never read, and saving it is slow
    convolutional = {k: v for k, v in imagenet.state_dict().items() if k.startswith("features.")}
    torch.save(convolutional, tmp_path / "vgg16_bn-imagenet.pth")
    vgg = build_classifier(
        "vgg16", {"pretrained": str(tmp_path / "vgg16_bn-imagenet.pth")}, num_classes=10, in_channels=3, image_size=64
    )
    torch.testing.assert_close(vgg.feature[0].weight, imagenet.features[0].weight)
    torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="cannot initialise feature"):
        build_classifier(
            "vgg16", {"pretrained": str(tmp_path / "bad.pth")}, num_classes=10, in_channels=3, image_size=64
        )


def test_a_checkpoint_whose_wrapper_contains_itself_is_refused(tmp_path):
    from mibench.checkpoints import read_state_dict
    from mibench.errors import CheckpointError

    cyclic: dict = {}
    cyclic["state_dict"] = cyclic
    torch.save(cyclic, tmp_path / "cycle.pt")
    with pytest.raises(CheckpointError, match="cycle"):
        read_state_dict(tmp_path / "cycle.pt")
    torch.save({"state_dict": {"w": torch.zeros(1), "meta": 3}}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="not named tensors"):
        read_state_dict(tmp_path / "odd.pt")


def test_a_target_checkpoint_in_the_official_facenet64_layout_loads_as_the_suites_target(tmp_path):
    # KED-MI's FaceNet64 (and IR152) keep `output_layer.*` beside the backbone; mibench keeps it inside
    # (`feature.output_layer.*`). A released checkpoint must load, translated (tests/goldens/architectures.pt pins
    # the translation against the official classes).
    from mibench.running.plan import build_plan
    from mibench.suite import load_suite
    from tests.conftest import TINY_SUITE, run_suite_file, write_suite

    net = build_classifier("facenet64", {}, num_classes=6, in_channels=3, image_size=16)
    official = {k.removeprefix("feature.") if k.startswith("feature.output_layer.") else k: v
                for k, v in net.state_dict().items()}  # fmt: skip
    assert any(k.startswith("output_layer.") for k in official)
    torch.save({"state_dict": official}, tmp_path / "FaceNet64_official.tar")
    suite = {**TINY_SUITE, "seeds": [0], "attacks": [], "metrics": ["test-accuracy"],
             "target": {"architecture": "facenet64",
                        "checkpoint": str(tmp_path / "FaceNet64_official.tar")}}  # fmt: skip
    path = write_suite(tmp_path / "s.yaml", suite)
    summary = run_suite_file(path, tmp_path / "cache", tmp_path / "run")
    assert not summary.failed, summary.failed
    assert len([j for j in build_plan(load_suite(path)).jobs.values() if j.stage == "target"]) == 1
