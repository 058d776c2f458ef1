"""δ_face (FaceNet/VGGFace2 embedding distance) and the offline FD-EffNetLite0 extractor."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mibench.api.context import RunContext
from mibench.api.metric import MeasureInputs
from mibench.data.base import to_float
from mibench.errors import CheckpointError, MibenchError
from mibench.metrics.facenet_distance import FACENET_WEIGHTS, FaceNetDistance, FaceNetDistanceParams
from mibench.models.inception_resnet_v1 import InceptionResnetV1, load_facenet_embedding
from tests.conftest import random_measure_inputs, random_uint8_images

# Names and shapes of facenet-pytorch's InceptionResnetV1 state dict (its models/inception_resnet_v1.py).
REFERENCE_KEYS = {
    "conv2d_1a.conv.weight": (32, 3, 3, 3),
    "conv2d_4b.bn.running_var": (256,),
    "repeat_1.4.branch2.2.conv.weight": (32, 32, 3, 3),
    "repeat_1.0.conv2d.bias": (256,),
    "mixed_6a.branch0.conv.weight": (384, 256, 3, 3),
    "mixed_6a.branch1.2.conv.weight": (256, 192, 3, 3),
    "repeat_2.9.branch1.1.conv.weight": (128, 128, 1, 7),
    "repeat_2.9.branch1.2.conv.weight": (128, 128, 7, 1),
    "mixed_7a.branch0.1.conv.weight": (384, 256, 3, 3),
    "mixed_7a.branch2.2.conv.weight": (256, 256, 3, 3),
    "repeat_3.4.branch1.1.conv.weight": (192, 192, 1, 3),
    "block8.conv2d.weight": (1792, 384, 1, 1),
    "last_linear.weight": (512, 1792),
    "last_bn.num_batches_tracked": (),
}


@pytest.fixture(scope="module")
def facenet_file(tmp_path_factory):
    """A random-init embedding saved as the released file is: with its 8,631-identity `logits` head."""
    torch.manual_seed(0)
    net = InceptionResnetV1().eval()
    with torch.no_grad():
        for m in net.modules():  # non-trivial BN statistics
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    state = {**net.state_dict(), "logits.weight": torch.zeros(8631, 512), "logits.bias": torch.zeros(8631)}
    path = tmp_path_factory.mktemp("weights") / FACENET_WEIGHTS
    torch.save(state, path)
    return path, net


def test_module_names_and_shapes_match_facenet_pytorch():
    state = InceptionResnetV1().state_dict()
    assert {k: tuple(state[k].shape) for k in REFERENCE_KEYS} == REFERENCE_KEYS
    assert not [k for k in state if "relu" in k or "dropout" in k or k.startswith("logits")]


def test_embeddings_are_unit_length_and_loading_is_strict(facenet_file, tmp_path):
    path, net = facenet_file
    loaded = load_facenet_embedding(path)
    x = torch.rand(2, 3, 160, 160) * 2 - 1
    with torch.no_grad():
        e = loaded(x)
        torch.testing.assert_close(e, net(x))
    assert e.shape == (2, 512)
    torch.testing.assert_close(e.norm(dim=1), torch.ones(2))
    state = torch.load(path, weights_only=True)
    del state["repeat_2.3.branch0.bn.weight"]
    torch.save(state, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match=r"repeat_2\.3\.branch0\.bn\.weight"):
        load_facenet_embedding(tmp_path / "broken.pt")


def _inputs(recon_images: torch.Tensor, recon_labels: torch.Tensor) -> MeasureInputs:
    return random_measure_inputs([0, 0, 0, 1, 1, 2], recon_images, recon_labels.tolist())


def test_facenet_distance_is_the_knn_distance_in_the_embedding(facenet_file):
    path, net = facenet_file
    metric = FaceNetDistance(FaceNetDistanceParams(weights=str(path)))
    private = _inputs(torch.zeros(1, 3, 16, 16), torch.tensor([0])).data.private_train
    exact = _inputs(to_float(private.images[[0, 4]]), torch.tensor([0, 1]))  # copies of private images
    (m,) = metric.compute(exact, RunContext())
    assert m.metric == "facenet_dist" and m.value == pytest.approx(0.0, abs=1e-9) and m.details["n"] == 2

    recon = to_float(random_uint8_images(4, 3))
    labels = torch.tensor([0, 1, 1, 0])
    (m,) = metric.compute(_inputs(recon, labels), RunContext())

    def embed(x):
        x = F.interpolate(x.float(), size=(160, 160), mode="bilinear", antialias=True)
        with torch.no_grad():
            return net(x * 2 - 1).double()

    real = embed(to_float(private.images))
    fake = embed(recon)
    expected = [min(((fake[i] - real[j]) ** 2).sum().item() for j in range(6) if private.labels[j] == labels[i])
                for i in range(4)]  # fmt: skip
    assert m.value == pytest.approx(sum(expected) / 4, rel=1e-6)
    assert m.details["weights_sha256"] and m.higher_is_better


def test_missing_facenet_weights_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("MIBENCH_WEIGHTS", str(tmp_path))
    with pytest.raises(MibenchError, match=FACENET_WEIGHTS):
        FaceNetDistance(FaceNetDistanceParams()).compute(_inputs(torch.zeros(1, 3, 16, 16), torch.tensor([0])), None)


def test_offline_effnet_lite0_recognises_a_real_photo_and_gives_a_labelled_fd():
    pytest.importorskip("efficientnet_lite_pytorch")
    from sklearn.datasets import load_sample_image

    from mibench.metrics.frechet import FrechetDistance, FrechetParams, effnet_lite0_extractor, network_features

    net, path = effnet_lite0_extractor(torch.device("cpu"))
    flower = torch.tensor(load_sample_image("flower.jpg")).permute(2, 0, 1)[None]
    x = F.interpolate(flower.float() / 255, size=(224, 224), mode="bilinear", antialias=True) * 2 - 1
    with torch.no_grad():
        logits = net.net(x)
    assert logits.argmax().item() == 985  # ImageNet class 985: daisy
    assert network_features(flower, net, 224, torch.device("cpu")).shape == (1, 1280)
    inputs = _inputs(to_float(random_uint8_images(4, 3)), torch.tensor([0, 1, 1, 0]))
    (m,) = FrechetDistance(FrechetParams(extractor="effnet-lite0", fake_subset="all")).compute(inputs, RunContext())
    assert m.metric == "fd_effnet_lite0" and m.value > 0 and m.details["weights"] == path.name


def test_facenet_distance_is_never_set_beside_a_papers_value(facenet_file):
    # PPA's δ_face re-renders each kept latent unclamped at 160 px and Trap-MID's Table 11 code is not released;
    # mibench embeds the stored reconstructions, so its records say standard and --compare-paper leaves them alone
    import types

    from mibench.reporting.compare import measured_protocols

    path, _ = facenet_file
    inputs = _inputs(to_float(random_uint8_images(2, 3)), torch.tensor([0, 1]))
    inputs.protocol, inputs.pipeline = "published", "ppa"
    (m,) = FaceNetDistance(FaceNetDistanceParams(weights=str(path))).compute(inputs, RunContext())
    assert m.details["protocol"] == "published" and m.details["pipeline"].startswith("standard (")
    followed = measured_protocols([types.SimpleNamespace(attack="PPA", metric=m.metric, details=m.details)])
    assert followed == {("PPA", "facenet_dist"): {"standard"}}
