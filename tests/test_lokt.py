"""LOKT: the T-ACGAN discriminator, the endless real-image sampler, and a label-only attack through surrogates that
beats chance with the stated query count and never queries the target while inverting."""

from __future__ import annotations

import pytest
import torch

from mibench.api.attack import DataInfo
from mibench.api.context import RunContext
from mibench.api.oracle import Access, TargetOracle
from mibench.attacks.lokt import LOKT, LOKTParams
from mibench.data.base import endless_batches, to_float
from mibench.errors import AccessDenied
from mibench.gan.conditional import SNAuxiliaryClassifierDiscriminator
from mibench.models.base import NetworkSpec
from tests.conftest import hit_rate

# CPU budget: 600 discriminator steps instead of 100,000, the class losses from step 50, lr 1e-3 (not 2e-4) to make
# up for it; two tiny surrogates on 60 generated images per class, one pass per epoch; 100 search steps.
GAN = {"ch": 16, "z_dim": 32, "iterations": 600, "batch_size": 32, "class_start": 50, "lr": 1e-3}
SURROGATE_TRAINING = {"per_class": 60, "epochs": 5, "batch_size": 32, "lr": 0.05, "epoch_images": None}


def labels_only(target) -> TargetOracle:
    return TargetOracle(target, Access.LABELS, num_classes=6, image_shape=(3, 16, 16))


def test_auxiliary_classifier_discriminator_at_64():
    d = SNAuxiliaryClassifierDiscriminator(1000, 64, 3, 64)
    assert [b.c_sc.weight_orig.shape[0] for b in d.blocks] == [64, 128, 256, 512, 1024]  # the toolbox's five blocks
    assert not hasattr(d.l_out, "weight_orig") and not hasattr(d.l_class, "weight_orig")  # plain linear heads
    real_fake, classes = d(torch.rand(2, 3, 64, 64))
    assert real_fake.shape == (2,) and classes.shape == (2, 1000)


def test_endless_batches_cover_every_index_once_per_pass():
    batches = endless_batches(10, 4, torch.Generator().manual_seed(0))
    drawn = torch.cat([next(batches) for _ in range(5)])  # 20 indices: exactly two passes over range(10)
    assert sorted(drawn[:10].tolist()) == list(range(10)) and sorted(drawn[10:].tolist()) == list(range(10))
    assert not torch.equal(drawn[:10], drawn[10:])  # each pass reshuffled


def test_default_params_are_the_authors_recipe_and_the_toolbox_a_named_preset():
    # ngoc-nguyen-0/LOKT_neurips2023: train_tacgan.py (batch 128, 19,000 + 1,000 iterations of one G and 5 D steps,
    # class losses after iteration 1,000), train_surrogate_model.py (SGD 0.1, wd 5e-4, batch 256, 200 epochs of
    # int(30000/256) batches, clean + augmented views), classifier.py (DenseNets with the head on the flattened map)
    p = LOKTParams()
    g, t = p.gan, p.surrogate_training
    assert (g.z_dim, g.batch_size, g.iterations, g.n_dis, g.generator_first) == (128, 128, 100_000, 5, True)
    assert (g.lr, g.beta1, g.beta2, g.class_weight, g.class_start) == (2e-4, 0.0, 0.9, 1.5, 5000)
    assert [s.architecture for s in p.surrogates] == ["densenet121", "densenet161", "densenet169"]
    assert all(s.params["pool"] is False for s in p.surrogates)
    assert (t.per_class, t.epochs, t.epoch_images, t.batch_size, t.lr, t.momentum, t.weight_decay, t.two_views) == (
        500, 200, 30_000, 256, 0.1, 0.9, 5e-4, True,
    )  # fmt: skip
    assert (t.augment.crop_p, t.augment.jitter_p, t.augment.flip_p, t.augment.rotation_p) == (1.0, 0.5, 0.5, 0.5)
    assert (p.iterations, p.lr, p.restarts, p.views) == (600, 0.1, 5, 2)
    # the toolbox's FaceScrub scripts, version 1's defaults, under whatever a suite sets
    tb = LOKTParams(preset="toolbox", surrogate_training={"epochs": 3})
    assert (tb.gan.batch_size, tb.gan.iterations, tb.gan.generator_first) == (256, 105_000, False)
    t = tb.surrogate_training
    assert (t.epochs, t.epoch_images, t.batch_size, t.lr, t.weight_decay, t.two_views, t.augment_p) == (
        3, None, 128, 0.01, 0.0, False, 0.5,
    )  # fmt: skip
    assert all(s.params["pool"] is True for s in tb.surrogates)


def test_the_authors_densenet_surrogates_read_the_flattened_map():
    # classifier.py: nn.Sequential(*densenet.children()[:-1]) (features up to norm5: no ReLU, no pooling), flattened,
    # then Linear(feat_dim, n) with feat_dim 4096 / 8832 / 6656 at 64x64
    from mibench.models.base import build_classifier

    for depth, width in ((121, 4096), (161, 8832), (169, 6656)):
        net = build_classifier(f"densenet{depth}", {"pool": False}, num_classes=7, in_channels=3, image_size=64)
        x = torch.rand(2, 3, 64, 64)
        out = net(x)
        assert out.features.shape == (2, width) and net.fc.in_features == width
        expected = net.body.features((x - 0.5) / 0.5).flatten(1)  # no ReLU: signed features
        torch.testing.assert_close(out.features, expected)
        assert (out.features < 0).any()


def test_surrogate_training_takes_both_views_for_the_authors_number_of_batches():
    from mibench.attacks.lokt import SurrogateTrainParams, train_surrogate

    calls = []

    class Counting(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))

        def forward(self, x):
            calls.append(len(x))
            logits = self.net(x)
            return type("Out", (), {"logits": logits})()

    generator = lambda z, y: torch.sigmoid(z.view(-1, 3, 8, 8))  # noqa: E731
    data = (torch.randn(40, 192), torch.arange(40) % 3, torch.arange(40) % 3)
    p = SurrogateTrainParams(per_class=1, epochs=2, epoch_images=100, batch_size=16)
    train_surrogate(Counting(), generator, data, p, RunContext(seed=0), "test")
    assert calls == [16] * (2 * 2 * (100 // 16))  # 2 epochs x int(100 / 16) batches x (clean, augmented)


@pytest.fixture(scope="module")
def lokt_prior(attack_setting):
    target, data = attack_setting
    torch.manual_seed(0)  # network initialisation draws from the global stream
    params = LOKTParams(
        gan=GAN,
        surrogates=[NetworkSpec(architecture="tiny-cnn"), NetworkSpec(architecture="tiny-cnn", params={"width": 8})],
        surrogate_training=SURROGATE_TRAINING,
        iterations=100,
        restarts=3,
    )
    attack = LOKT(params)
    prior = attack.build_prior(DataInfo(3, 16, 6))
    oracle = labels_only(target)
    attack.train_prior(prior, data.public, oracle, RunContext(seed=2))
    return attack, prior, oracle.queries


def test_lokt_prior_queries_only_labels_by_its_budget_formula(lokt_prior):
    _, prior, queries = lokt_prior
    # labels of every fake batch from discriminator step class_start on (the authors' iteration n_uncond + 1), then
    # of the generated set
    expected = GAN["batch_size"] * (GAN["iterations"] - GAN["class_start"]) + 6 * SURROGATE_TRAINING["per_class"]
    assert queries == expected == float(prior.target_queries)


def test_lokt_beats_chance_from_labels_only_without_querying_while_inverting(attack_setting, lokt_prior):
    target, _ = attack_setting
    attack, prior, _ = lokt_prior
    oracle = labels_only(target)
    with pytest.raises(AccessDenied):
        oracle.probabilities(torch.rand(1, 3, 16, 16))  # the level the whole attack ran at gives no scores
    # a cached prior: a fresh build loads the trained state
    restored = attack.build_prior(DataInfo(3, 16, 6))
    restored.load_state_dict(prior.state_dict())
    recon = attack.invert(restored, oracle, torch.arange(6), RunContext(seed=3))
    assert oracle.queries == 0 == recon.stats["target_queries"]  # inversion sees the surrogates only
    assert recon.stats["prior_target_queries"] == float(prior.target_queries)
    assert recon.images.shape == (18, 3, 16, 16) and recon.images.min() >= 0 and recon.images.max() <= 1
    attacked = hit_rate(target, recon.images, recon.labels)
    with torch.no_grad():
        latents = torch.randn(18, GAN["z_dim"], generator=torch.Generator().manual_seed(0))
        random = prior.generator(latents, recon.labels).clamp(0, 1)
    baseline = hit_rate(target, random, recon.labels)
    # measured: 1.00 vs 0.39 for random latents of the same conditional generator (chance 1/6)
    assert attacked >= 0.7 and attacked >= baseline + 0.35


def test_lokt_surrogates_agree_with_the_target_on_unseen_private_images(attack_setting, lokt_prior):
    """Taught only by the target's labels of generated images, each surrogate mimics it on real private images."""
    target, data = attack_setting
    _, prior, _ = lokt_prior
    x = to_float(data.private_test.images)
    with torch.no_grad():
        wanted = target(x).logits.argmax(1)
        agreement = [(s(x).logits.argmax(1) == wanted).float().mean().item() for s in prior.surrogates]
    assert min(agreement) >= 2 / 6  # measured 0.70 and 0.67; chance 1/6
