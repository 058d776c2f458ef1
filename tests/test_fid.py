"""The standard FID path: torch-fidelity's Inception-v3 on a random-init state dict the test writes (the released
weights cannot be downloaded here), float64 Fréchet distance in mibench, provenance, and clear errors."""

from __future__ import annotations

import pickle

import pytest
import torch

from mibench.api.context import RunContext
from mibench.checkpoints import file_sha256
from mibench.data.base import to_float
from mibench.errors import MibenchError
from mibench.metrics import frechet
from mibench.metrics.frechet import FID_WEIGHTS, FrechetDistance, FrechetParams, inception_extractor
from mibench.metrics.functional import frechet_distance_of_features
from tests.conftest import random_measure_inputs, random_uint8_images

fidelity = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A randomly initialised FID Inception state dict, saved under the released file's name."""
    cls = fidelity.FeatureExtractorInceptionV3
    with pytest.MonkeyPatch.context() as mp:  # build the network without its released weights
        mp.setattr(fidelity, "load_state_dict_from_url", lambda *a, **k: {})
        mp.setattr(cls, "load_state_dict", lambda self, state, *a, **k: None)
        torch.manual_seed(0)
        net = cls("inception-v3-compat", ["2048"])
    path = tmp_path_factory.mktemp("weights") / FID_WEIGHTS
    torch.save(net.state_dict(), path)
    return path


images = random_uint8_images


@pytest.fixture
def inputs():
    return random_measure_inputs([0, 0, 0, 1, 1, 1, 2, 2], to_float(images(5, 3)), [0, 1, 0, 1, 0])


def test_inception_path_gives_2048_d_features(weights):
    extractor = inception_extractor(weights, torch.device("cpu"))
    feats = frechet.inception_features(images(3, 4), extractor, torch.device("cpu"))
    assert feats.shape == (3, 2048) and feats.dtype == torch.float64 and torch.isfinite(feats).all()
    grey = frechet.inception_features(images(2, 5)[:, :1], extractor, torch.device("cpu"))
    assert grey.shape == (2, 2048)  # one-channel images are repeated to RGB


def test_fid_metric_is_the_float64_frechet_distance_of_inception_features(weights, inputs):
    params = FrechetParams(extractor="inception", weights=str(weights), fake_subset="all")
    (m,) = FrechetDistance(params).compute(inputs, RunContext())
    extractor = inception_extractor(weights, torch.device("cpu"))
    real = frechet.inception_features(inputs.data.private_train.images[:6], extractor, torch.device("cpu"))
    fake = frechet.inception_features(
        (inputs.reconstructions.images * 255).round().to(torch.uint8), extractor, torch.device("cpu")
    )
    assert m.value == pytest.approx(frechet_distance_of_features(real, fake), rel=1e-9)
    # a random file is not the released FID network: recorded as fd_inception, with the file's hash
    assert m.metric == "fd_inception"
    assert m.details["weights_sha256"] == file_sha256(weights) and m.details["n_fake"] == 5
    assert m.details["n_real"] == 6 and m.details["rank_deficient"] is True


def test_only_the_released_weights_make_a_fid(weights, inputs, monkeypatch):
    monkeypatch.setattr(frechet, "file_sha256", lambda path: frechet.FID_SHA256_PREFIX + "0" * 56)
    params = FrechetParams(extractor="inception", weights=str(weights), fake_subset="all")
    (m,) = FrechetDistance(params).compute(inputs, RunContext())
    assert m.metric == "fid" and m.details["resize"].startswith("299")


def test_missing_weights_say_which_file_goes_where(tmp_path, inputs, monkeypatch):
    monkeypatch.delenv("MIBENCH_WEIGHTS", raising=False)
    metric = FrechetDistance(FrechetParams(extractor="inception"))
    with pytest.raises(MibenchError, match=r"weights-inception-2015-12-05-6726825d\.pth.*\$MIBENCH_WEIGHTS"):
        metric.compute(inputs, RunContext())
    monkeypatch.setenv("MIBENCH_WEIGHTS", str(tmp_path))
    with pytest.raises(MibenchError, match=f"FID weights not found: {tmp_path / FID_WEIGHTS}"):
        metric.compute(inputs, RunContext())


class NotATensor:
    """Anything a weights-only unpickler refuses."""


def test_a_file_with_code_never_reaches_the_unrestricted_loader(tmp_path, monkeypatch):
    path = tmp_path / "evil.pth"
    torch.save({"x": NotATensor()}, path)
    built = []
    monkeypatch.setattr(fidelity, "FeatureExtractorInceptionV3", lambda *a, **k: built.append(1))
    with pytest.raises(pickle.UnpicklingError):
        inception_extractor(path, torch.device("cpu"))
    assert built == []
