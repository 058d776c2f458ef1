"""Synthetic data, architectures, GAN networks and the training loop."""

from __future__ import annotations

import pytest
import torch

from mibench.api.context import RunContext
from mibench.api.recipe import TrainSpec
from mibench.data.base import UNLABELLED, ImageSet, resize_images, to_float
from mibench.data.synthetic import SyntheticIdentities, SyntheticParams
from mibench.gan.networks import DCGANGenerator, WGANCritic
from mibench.models.base import build_classifier
from mibench.registry import ARCHITECTURES
from mibench.training.classifier import evaluate_accuracy, train_classifier


def small_bundle(size=16):
    params = SyntheticParams(
        num_private=5, num_public=7, train_per_identity=12, test_per_identity=4, public_per_identity=5
    )
    return SyntheticIdentities(params).load(None, size, None)


def test_synthetic_data_is_deterministic_and_identity_disjoint():
    a, b = small_bundle(), small_bundle()
    assert torch.equal(a.private_train.images, b.private_train.images)
    assert a.num_classes == 5 and len(a.private_train) == 60 and len(a.private_test) == 20 and len(a.public) == 35
    assert set(a.private_train.labels.tolist()) == set(range(5))
    assert set(a.public.labels.tolist()) == {UNLABELLED}
    assert a.private_train.images.dtype == torch.uint8
    # Public images come from other identities: none equals a private image.
    assert not any(torch.equal(p, q) for p in a.public.images[:10] for q in a.private_train.images)


def test_synthetic_identities_look_alike_across_resolutions():
    low, high = small_bundle(16), small_bundle(32)
    down = resize_images(to_float(high.private_train.images), 16)
    err = (down - to_float(low.private_train.images)).abs().mean()
    assert err < 0.05


def test_imageset_validates():
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(torch.zeros(2, 3, 4, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="one entry per image"):
        ImageSet(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("name", ARCHITECTURES.names())
def test_architectures_forward_backward(name):
    size = 299 if name == "inception-v3" else 32  # its auxiliary classifier needs 299x299
    model = build_classifier(name, {}, num_classes=7, in_channels=3, image_size=size)
    x = torch.rand(4, 3, size, size, requires_grad=True)
    out = model(x)
    assert out.logits.shape == (4, 7) and out.features.ndim == 2 and out.features.shape[0] == 4
    out.logits.sum().backward()
    assert x.grad is not None


def test_gan_networks_match_g64_and_dgwgan_at_64():
    g = DCGANGenerator(100, 64, 3, 64)
    # G64 (spec §2.1): Linear(100 -> 8192, no bias) + BN1d, ConvT 512->256->128->64 (no bias) + BN, ConvT 64->3 + bias.
    expected_g = 100 * 8192 + 2 * 8192 + sum(a * b * 25 + 2 * b for a, b in [(512, 256), (256, 128), (128, 64)])
    expected_g += 64 * 3 * 25 + 3
    assert sum(p.numel() for p in g.parameters()) == expected_g
    z = torch.randn(2, 100)
    x = g(z)
    assert x.shape == (2, 3, 64, 64) and x.min() >= 0 and x.max() <= 1
    d = WGANCritic(64, 3, 64)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs] == [
        (3, 64, 5),
        (64, 128, 5),
        (128, 256, 5),
        (256, 512, 5),
        (512, 1, 4),
    ]
    assert d(x).shape == (2,)
    with pytest.raises(ValueError, match="power of two"):
        DCGANGenerator(10, 48)


def test_training_learns_and_is_reproducible():
    data = small_bundle()
    spec = TrainSpec(epochs=6, batch_size=16, lr=0.05, selection="last")

    def run():
        torch.manual_seed(3)
        model = build_classifier("tiny-cnn", {}, num_classes=5, in_channels=3, image_size=16)
        return train_classifier(model, data.private_train, data.private_test, spec, RunContext(seed=3))

    first, second = run(), run()
    assert first.test_accuracy > 0.6  # chance is 0.2
    assert first.test_accuracy == second.test_accuracy
    assert first.test_accuracy == evaluate_accuracy(first.model, data.private_test, torch.device("cpu"))
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_best_test_selection_keeps_the_best_epoch():
    data = small_bundle()
    torch.manual_seed(0)
    model = build_classifier("tiny-cnn", {}, num_classes=5, in_channels=3, image_size=16)
    result = train_classifier(
        model,
        data.private_train,
        data.private_test,
        TrainSpec(epochs=5, batch_size=16, lr=0.2, selection="best_test"),
        RunContext(),
    )
    accs = [h["test_accuracy"] for h in result.history]
    assert result.test_accuracy == max(accs)
    assert result.best_epoch == accs.index(max(accs))
    assert evaluate_accuracy(result.model, data.private_test, torch.device("cpu")) == max(accs)
