"""torchvision 224x224 architectures (PPA's targets and evaluation model): shapes, sizes against torchvision's
metadata, normalisation, and initialisation from ImageNet files (including DenseNet's old key names)."""

from __future__ import annotations

import re

import pytest
import torch
import torchvision

from mibench.errors import CheckpointError
from mibench.models.base import build_classifier


@pytest.mark.parametrize(
    ("name", "size", "dim"),
    [("resnet18", 64, 512), ("resnet152", 224, 2048), ("densenet169", 224, 1664), ("inception-v3", 299, 2048)],
)
def test_forward_backward_and_feature_size(name, size, dim):
    torch.manual_seed(0)
    model = build_classifier(name, {}, num_classes=7, in_channels=3, image_size=size).eval()
    out = model(torch.rand(1, 3, size, size))
    assert out.features.shape == (1, dim) and out.logits.shape == (1, 7)
    out.logits.sum().backward()
    assert model.fc.weight.grad is not None and len(model.hidden_layers()) >= 3


@pytest.mark.parametrize(
    ("name", "weights"),
    [
        ("resnet152", "ResNet152_Weights"),
        ("densenet169", "DenseNet169_Weights"),
        ("densenet161", "DenseNet161_Weights"),
        ("resnet101", "ResNet101_Weights"),
    ],
)
def test_parameter_counts_match_torchvision_metadata(name, weights):
    model = build_classifier(name, {}, num_classes=1000, in_channels=3, image_size=224)
    expected = getattr(torchvision.models, weights).IMAGENET1K_V1.meta["num_params"]
    assert sum(p.numel() for p in model.parameters()) == expected


def test_inputs_are_normalised_with_ppa_mean_and_std():
    torch.manual_seed(0)
    model = build_classifier("resnet18", {}, num_classes=3, in_channels=3, image_size=32).eval()
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(model(x).features, model.body(x * 2 - 1))


def test_pretrained_files_initialise_the_body_only(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    model = build_classifier(
        "resnet18", {"pretrained": str(tmp_path / "resnet18.pth")}, num_classes=5, in_channels=3, image_size=32
    )
    torch.testing.assert_close(model.body.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)
    assert model.fc.weight.shape == (5, 512)
    state = reference.state_dict()
    del state["layer4.1.bn2.running_var"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"layer4\.1\.bn2\.running_var"):
        build_classifier("resnet18", {"pretrained": str(tmp_path / "broken.pth")}, num_classes=5, in_channels=3,
                         image_size=32)  # fmt: skip


def test_old_densenet_key_names_are_remapped(tmp_path):
    torch.manual_seed(2)
    reference = torchvision.models.densenet121(weights=None)
    old = {  # the 2017 file: old layer names and no BatchNorm counters
        re.sub(r"(denselayer\d+\.(?:norm|relu|conv))(\d)\.", r"\1.\2.", k): v
        for k, v in reference.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }
    assert "features.denseblock1.denselayer1.norm.1.weight" in old
    torch.save(old, tmp_path / "densenet121-old-keys.pth")
    params = {"pretrained": str(tmp_path / "densenet121-old-keys.pth")}
    model = build_classifier("densenet121", params, num_classes=4, in_channels=3, image_size=64)
    torch.testing.assert_close(
        model.body.features.denseblock2.denselayer3.norm1.weight,
        reference.features.denseblock2.denselayer3.norm1.weight,
    )


def test_too_small_inputs_are_refused():
    with pytest.raises(ValueError, match="needs 299x299 inputs"):
        build_classifier("inception-v3", {}, num_classes=4, in_channels=3, image_size=224)
    with pytest.raises(ValueError, match="at least 75x75"):
        build_classifier("inception-v3", {"aux_logits": False}, num_classes=4, in_channels=3, image_size=64)


def test_inception_trains_its_auxiliary_classifier_as_ppa(tmp_path):
    from mibench.training.classifier import cross_entropy_step

    torch.manual_seed(0)
    model = build_classifier("inception-v3", {}, num_classes=5, in_channels=3, image_size=299)
    x, y = torch.rand(2, 3, 299, 299), torch.tensor([1, 3])
    out = model.train()(x)
    assert out.aux_logits.shape == (2, 5) and out.logits.shape == (2, 5)
    terms = cross_entropy_step(model, x, y, 0)
    assert set(terms) == {"loss", "ce", "aux_ce"}
    torch.testing.assert_close(terms["loss"].detach(), terms["ce"] + terms["aux_ce"], rtol=1e-5, atol=1e-5)
    assert model.eval()(x).aux_logits is None
    # an ImageNet file initialises the auxiliary classifier's convolutions, not its new 5-class head
    reference = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=True)
    torch.save(reference.state_dict(), tmp_path / "inception_v3_test.pth")
    params = {"pretrained": str(tmp_path / "inception_v3_test.pth")}
    loaded = build_classifier("inception-v3", params, num_classes=5, in_channels=3, image_size=299)
    torch.testing.assert_close(loaded.body.AuxLogits.conv1.conv.weight, reference.AuxLogits.conv1.conv.weight)
    assert loaded.body.AuxLogits.fc.out_features == 5


def test_resnest101_matches_the_released_network_layout():
    """48.3M parameters as ResNeSt's model zoo lists; module names of zhanghang1989/ResNeSt's state dict."""
    from mibench.models.resnest import ResNeStNet

    state = ResNeStNet().state_dict()
    assert sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k) == 48_275_016
    reference = {
        "conv1.0.weight": (64, 3, 3, 3),
        "conv1.6.weight": (128, 64, 3, 3),
        "bn1.running_mean": (128,),
        "layer1.0.downsample.1.weight": (256, 128, 1, 1),
        "layer1.0.conv2.conv.weight": (128, 32, 3, 3),
        "layer1.0.conv2.bn0.weight": (128,),
        "layer2.0.conv2.fc1.weight": (64, 128, 1, 1),
        "layer3.22.conv2.fc2.bias": (512,),
        "layer4.0.downsample.2.running_var": (2048,),
        "fc.weight": (1000, 2048),
    }
    assert {k: tuple(state[k].shape) for k in reference} == reference


def test_split_attention_with_uniform_attention_averages_the_splits():
    from mibench.models.resnest import SplitAttentionConv

    torch.manual_seed(0)
    block = SplitAttentionConv(8, stride=1).eval()
    torch.nn.init.zeros_(block.fc2.weight)
    torch.nn.init.zeros_(block.fc2.bias)  # equal logits: softmax weights 1/2 for both splits
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        splits = torch.relu(block.bn0(block.conv(x))).chunk(2, dim=1)
        torch.testing.assert_close(block(x), (splits[0] + splits[1]) / 2)


def test_resnest101_forward_backward_at_224():
    torch.manual_seed(0)
    model = build_classifier("resnest101", {}, num_classes=7, in_channels=3, image_size=224).eval()
    out = model(torch.rand(1, 3, 224, 224))
    assert out.features.shape == (1, 2048) and out.logits.shape == (1, 7)
    out.logits.sum().backward()
    assert model.body.layer3[5].conv2.fc1.weight.grad is not None
