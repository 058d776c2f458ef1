"""Trap-MID and TeD: triggers, injection, label assignment, augmentation, trigger step, trapdoor success."""

from __future__ import annotations

import pytest
import torch

from mibench.api.context import RunContext
from mibench.api.recipe import TrainSpec
from mibench.defenses.negls import NegLS, NegLSParams
from mibench.defenses.trap_mid import TeD, TeDParams, TrapMID, TrapMIDParams
from mibench.errors import MibenchError
from mibench.training.augmentation import AffineAugmentParams, random_affine_augment
from mibench.training.stack import DefenseStack
from mibench.training.trapdoor import balanced_targets, blend_triggers, inject, patch_triggers
from tests.conftest import tiny_model

# The paper's alpha 0.02 is too faint for a 150-image tiny CNN to learn in a few hundred CPU steps; this tiny-data
# setting keeps every mechanism on (trigger optimisation, discriminator) with a stronger blend.
TINY = {"alpha": 0.25, "beta": 0.5, "augment": False}
SPEC = TrainSpec(epochs=40, batch_size=16, lr=0.05, selection="last")


@pytest.fixture
def data(defense_data):
    return defense_data


def test_blend_injection_closed_form():
    gen = torch.Generator().manual_seed(0)
    pattern, mask = blend_triggers(4, (3, 8, 8), 0.02, gen)
    x = torch.rand(6, 3, 8, 8)
    t = torch.tensor([0, 1, 2, 3, 0, 1])
    torch.testing.assert_close(inject(x, t, pattern, mask), 0.98 * x + 0.02 * pattern[t])
    assert pattern.min() >= 0 and pattern.max() < 1


def test_patch_triggers_are_five_squares_at_the_mask_ratio():
    pattern, mask = patch_triggers(3, (3, 64, 64), 0.1, torch.Generator().manual_seed(0))
    assert mask.unique().tolist() == [0.0, pytest.approx(0.1)]
    for k in range(3):
        covered = (mask[k, 0] > 0).sum().item()
        assert 36 <= covered <= 5 * 36  # five 6x6 squares, possibly overlapping
        assert pattern[k][:, mask[k, 0] == 0].abs().sum() == 0  # pattern only inside the squares
    assert pattern.min() >= 0 and pattern.max() <= 1


@pytest.mark.parametrize(("n", "k"), [(27008, 1000), (64, 5), (3, 5)])
def test_balanced_targets(n, k):
    t = balanced_targets(n, k, torch.Generator().manual_seed(0))
    counts = torch.bincount(t, minlength=k)
    q, r = divmod(n, k)
    assert t.numel() == n and counts.min() >= q and counts.max() <= q + 1
    assert (counts == q + 1).sum() == r


def test_augmentation_identity_flip_and_gradients():
    x = torch.rand(5, 3, 16, 16, requires_grad=True)
    off = AffineAugmentParams(crop_p=0, flip_p=0, rotation_p=0)
    torch.testing.assert_close(random_affine_augment(x, off, torch.Generator()), x, atol=1e-5, rtol=0)
    flip = AffineAugmentParams(crop_p=0, flip_p=1, rotation_p=0)
    torch.testing.assert_close(random_affine_augment(x, flip, torch.Generator()), x.flip(-1), atol=1e-5, rtol=0)
    out = random_affine_augment(x, AffineAugmentParams(), torch.Generator().manual_seed(0))
    out.sum().backward()
    assert out.shape == x.shape and x.grad.abs().sum() > 0


def test_trigger_step_is_a_clipped_signed_step():
    from mibench.api.defense import cross_entropy

    defense = TrapMID(TrapMIDParams(discriminator=False))
    model = tiny_model().eval()
    pattern, mask = blend_triggers(5, (3, 16, 16), 0.5, torch.Generator().manual_seed(0))
    x, t = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 1, 3])
    new = defense._trigger_step(model, None, x, t, pattern, mask, cross_entropy, 0, lambda v: v)
    # Oracle: the same loss's gradient by hand, then clip(P - 0.01 sign(grad), 0, 1).
    leaf = pattern.clone().requires_grad_(True)
    cross_entropy(model(inject(x, t, leaf, mask)).logits, t, 0).backward()
    torch.testing.assert_close(new, (pattern - 0.01 * leaf.grad.sign()).clamp(0, 1))
    assert ((new - pattern).abs() <= 0.01 + 1e-7).all()
    assert torch.equal(new[[2, 4]], pattern[[2, 4]])  # classes without an image in the batch keep their trigger


def test_trap_mid_learns_trapdoors_on_tiny_data(data):
    trained = DefenseStack([TrapMID(TrapMIDParams(**TINY))]).fit(tiny_model(), data, SPEC, RunContext(seed=0))
    (success,) = trained.stats
    assert success.metric == "trapdoor_success" and success.unit == "fraction" and success.value > 0.9
    assert trained.test_accuracy > 0.6  # chance 0.2
    assert trained.extras["0.triggers"].shape == (5, 3, 16, 16)
    assert trained.extras["0.trigger_mask"].unique().tolist() == [pytest.approx(0.25)]


def test_min_trapdoor_success_fails_the_job(data):
    params = TrapMIDParams(**TINY, min_trapdoor_success=1.0)
    spec = SPEC.model_copy(update={"epochs": 1})
    with pytest.raises(MibenchError, match=r"below the required 1\.0"):
        DefenseStack([TrapMID(params)]).fit(tiny_model(), data, spec, RunContext(seed=0))


def test_ted_keeps_its_patches_fixed(data):
    params = TeDParams(alpha=0.2)
    trained = DefenseStack([TeD(params)]).fit(
        tiny_model(), data, SPEC.model_copy(update={"epochs": 2}), RunContext(seed=0)
    )
    expected, _ = patch_triggers(5, (3, 16, 16), 0.2, RunContext(seed=0).generator("triggers"))
    torch.testing.assert_close(trained.extras["0.triggers"], expected)


def test_trap_mid_with_negls_uses_negls_for_both_losses(data, monkeypatch):
    import mibench.defenses.negls as negls_module

    calls = []
    real = negls_module.label_smoothing_loss
    monkeypatch.setattr(negls_module, "label_smoothing_loss", lambda *a: calls.append(a[0].shape[0]) or real(*a))
    no_recipe = {"recipe": dict.fromkeys(("optimizer", "lr", "weight_decay", "batch_size", "epochs", "milestones"))}
    stack = DefenseStack([TrapMID(TrapMIDParams(**TINY)), NegLS(NegLSParams.model_validate(no_recipe))])
    trained = stack.fit(tiny_model(), data, SPEC.model_copy(update={"epochs": 1}), RunContext(seed=0))
    assert "0.triggers" in trained.extras
    assert len(calls) >= 3 * 9  # per batch: trigger step, main loss, trapdoor loss


def test_trap_mid_applies_the_recipes_own_crops_and_jitter(data, monkeypatch):
    """A recipe with PPA's augmentations (crop_scale, color_jitter) reaches Trap-MID's own loop, once per batch."""
    from mibench.defenses import trap_mid
    from mibench.training.classifier import augment_batch

    seen = []

    def spy(images, spec, generator):
        seen.append((spec.crop_scale, spec.color_jitter))
        return augment_batch(images, spec, generator)

    monkeypatch.setattr(trap_mid, "augment_batch", spy)
    spec = SPEC.model_copy(update={"epochs": 1, "crop_scale": (0.85, 1.0), "color_jitter": (0.2, 0.2, 0.1, 0.1)})
    DefenseStack([TrapMID(TrapMIDParams(**TINY))]).fit(tiny_model(), data, spec, RunContext(seed=0))
    assert seen and set(seen) == {((0.85, 1.0), (0.2, 0.2, 0.1, 0.1))}
    assert len(seen) == len(data.private_train) // SPEC.batch_size


def _capture_optimizers(monkeypatch):
    import mibench.defenses.trap_mid as trap_mid_module

    made = []

    def capturing(params, spec):
        opt = trap_mid_module.make_optimizer.__wrapped__(params, spec)
        made.append(opt)
        return opt

    capturing.__wrapped__ = trap_mid_module.make_optimizer
    monkeypatch.setattr(trap_mid_module, "make_optimizer", capturing)
    return made


def test_trap_mid_steps_the_recipe_schedule_for_target_and_discriminator(data, monkeypatch):
    """Official engine: MultiStepLR of the recipe on T and D (Table 17's NegLS stack: [75, 90], gamma 0.1)."""
    made = _capture_optimizers(monkeypatch)
    spec = TrainSpec(epochs=2, batch_size=32, lr=0.05, milestones=[1], gamma=0.1, selection="last")
    TrapMID(TrapMIDParams(**TINY)).fit(
        tiny_model(), data, DefenseStack([TrapMID(TrapMIDParams())]).setup(spec), RunContext(seed=0)
    )
    assert len(made) == 2  # the target's and the discriminator's
    for opt in made:
        assert opt.param_groups[0]["lr"] == pytest.approx(0.005)  # 0.1x after the first milestone


def test_ted_trains_without_augmentation_and_ted_plus_with_it(data, monkeypatch):
    """App. D.1: TeD keeps the unprotected setup; random augmentation is a TeD+ addition."""
    import mibench.defenses.trap_mid as trap_mid_module
    from mibench.defenses.trap_mid import TeDPlus, TeDPlusParams

    calls = []
    original = trap_mid_module.random_affine_augment

    def counting(x, params, generator):
        calls.append(len(x))
        return original(x, params, generator)

    monkeypatch.setattr(trap_mid_module, "random_affine_augment", counting)
    spec = TrainSpec(epochs=1, batch_size=32, lr=0.05, selection="last")
    assert TeDParams().augment is False
    TeD(TeDParams()).fit(tiny_model(), data, DefenseStack([TeD(TeDParams())]).setup(spec), RunContext(seed=0))
    assert calls == []
    TeDPlus(TeDPlusParams()).fit(tiny_model(), data, DefenseStack([TeD(TeDParams())]).setup(spec), RunContext())
    assert calls


def test_one_channel_triggers_as_the_official_mnist_setting(data):
    """train.py: MNIST triggers are torch.rand(K, 1, H, W), expanded over the three channels when blended."""
    spec = TrainSpec(epochs=10, batch_size=16, lr=0.05, selection="last")
    params = TrapMIDParams(**TINY, trigger_channels=1)
    trained = DefenseStack([TrapMID(params)]).fit(tiny_model(), data, spec, RunContext(seed=0))
    pattern = trained.extras["0.triggers"]
    assert pattern.shape == (5, 1, 16, 16)
    images = torch.rand(4, 3, 16, 16)
    stamped = inject(images, torch.tensor([0, 1, 2, 3]), pattern, trained.extras["0.trigger_mask"])
    assert torch.allclose(stamped[:, 0] - 0.75 * images[:, 0], stamped[:, 1] - 0.75 * images[:, 1])  # same grey key
    (success,) = trained.stats
    assert success.value > 0.5
