"""Defenses: each loss or transform against hand-computed values, stacking, and training on tiny data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mibench.api.context import RunContext
from mibench.api.defense import TrainingSetup
from mibench.api.recipe import TrainSpec
from mibench.defenses.bido import BiDO, BiDOParams, coco, gaussian_kernel, normalized_hsic
from mibench.defenses.mid import MID, MIDParams, gaussian_kl
from mibench.defenses.midas import (
    DEEP_RATES,
    MIDAS,
    SHALLOW_RATES,
    MIDASParams,
    decode_fixed_point,
    encode_fixed_point,
    fixed_point_exponent,
    flip_bits,
    flip_fixed_point,
)
from mibench.defenses.negls import NegLS, NegLSParams, label_smoothing_loss, smoothing_at
from mibench.models.base import build_classifier, freeze
from mibench.registry import DEFENSES
from mibench.suite import resolve_suite
from mibench.training import classifier
from mibench.training.classifier import evaluate_accuracy
from mibench.training.stack import DefenseStack
from tests.conftest import tiny_model

SPEC = TrainSpec(epochs=5, batch_size=32, lr=0.05, selection="last")
NO_RECIPE = {
    "recipe": {
        k: None for k in ("optimizer", "lr", "weight_decay", "batch_size", "epochs", "milestones", "gamma", "sampler")
    }
}


@pytest.fixture
def data(defense_data):
    return defense_data


# --- MID ----------------------------------------------------------------------------------------------------------


def test_gaussian_kl_closed_form():
    assert gaussian_kl(torch.zeros(3, 4), torch.ones(3, 4)).item() == 0.0
    mu, sigma = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, 2.0]])
    expected = 0.5 * ((1 + 0.25 - 2 * math.log(0.5) - 1) + (4 + 4 - 2 * math.log(2.0) - 1))
    assert gaussian_kl(mu, sigma).item() == pytest.approx(expected)


def test_mid_bottleneck_samples_at_test_time_as_the_official_code():
    model = MID(MIDParams()).wrap(tiny_model()).eval()
    assert model.k == 32  # half of tiny-cnn's 64-d feature
    x = torch.rand(4, 3, 16, 16)
    a, b = model(x), model(x)
    assert not torch.equal(a.logits, b.logits)  # fresh noise per query
    torch.testing.assert_close(a.features, b.features)  # the exposed feature is mu
    deterministic = MID(MIDParams(sample_at_test=False)).wrap(tiny_model()).eval()
    torch.testing.assert_close(deterministic(x).logits, deterministic(x).logits)


def test_mid_loss_adds_weighted_kl(data):
    defense = MID(MIDParams(beta=0.5))
    model = defense.wrap(tiny_model()).train()
    setup = defense.configure(TrainingSetup(SPEC))
    terms = setup.step(model, torch.rand(6, 3, 16, 16), torch.arange(6) % 5, 0)
    assert terms["kl"].item() == pytest.approx(0.5 * model.kl.item(), rel=1e-5)
    assert terms["loss"].item() == pytest.approx(terms["ce"].item() + terms["kl"].item(), rel=1e-5)


# --- NegLS ----------------------------------------------------------------------------------------------------------


def test_negls_schedule_as_coded():
    # CelebA, N = 100: zero before 50, (e + 1 - 50) / 50 of the final value until 74, then the final value (the jump).
    assert smoothing_at(49, 100, -0.05) == 0.0
    assert smoothing_at(50, 100, -0.05) == pytest.approx(-0.05 / 50)
    assert smoothing_at(74, 100, -0.05) == pytest.approx(-0.025)
    assert smoothing_at(75, 100, -0.05) == -0.05
    assert smoothing_at(74, 100, -0.05, "linear") == pytest.approx(-0.05)
    # Trap-MID's MNIST schedule, N = 10: 0 before 5, eps (e - 4) / 5 for 5 <= e < 7, then eps.
    assert [smoothing_at(e, 10, -0.1) for e in (4, 5, 6, 7)] == pytest.approx([0.0, -0.02, -0.04, -0.1])
    assert smoothing_at(0, 100, 0.1) == 0.1  # positive smoothing is constant


@pytest.mark.parametrize("eps", [-0.05, 0.0, 0.1])
def test_negls_loss_equals_cross_entropy_with_targets_summing_to_one(eps):
    torch.manual_seed(0)
    logits, labels = torch.randn(7, 5), torch.randint(0, 5, (7,))
    targets = (1 - eps) * F.one_hot(labels, 5).float() + eps / 5
    torch.testing.assert_close(targets.sum(1), torch.ones(7))
    expected = -(targets * F.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(label_smoothing_loss(logits, labels, eps), expected)
    if eps == 0.0:
        torch.testing.assert_close(label_smoothing_loss(logits, labels, eps), F.cross_entropy(logits, labels))


def test_negls_recipe_overrides_and_nulls_keep_the_suite():
    setup = NegLS(NegLSParams()).configure(TrainingSetup(SPEC))
    assert (setup.spec.optimizer, setup.spec.lr, setup.spec.batch_size, setup.spec.epochs) == ("adam", 1e-3, 128, 100)
    assert setup.spec.milestones == [75, 90] and setup.spec.weight_decay == 0.0
    kept = NegLS(NegLSParams.model_validate(NO_RECIPE)).configure(TrainingSetup(SPEC))
    assert kept.spec == SPEC


# --- BiDO -----------------------------------------------------------------------------------------------------------


def numpy_normalized_hsic(kx, ky, eps=1e-5):
    m = kx.shape[0]
    h = np.eye(m) - np.ones((m, m)) / m
    rx = kx @ h @ np.linalg.inv(kx @ h + eps * m * np.eye(m))
    ry = ky @ h @ np.linalg.inv(ky @ h + eps * m * np.eye(m))
    return sum(rx[a, b] * ry[b, a] for a in range(m) for b in range(m))


def test_gaussian_kernel_scales_bandwidth_with_dimension():
    x = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    k = gaussian_kernel(x, sigma=5.0)
    assert k[0, 0].item() == 1.0
    assert k[0, 1].item() == pytest.approx(math.exp(-2.0 / (2 * 25 * 2)))


def test_normalized_hsic_and_coco_match_numpy():
    torch.manual_seed(0)
    x, z = torch.randn(8, 12).double(), torch.randn(8, 3).double()
    kx, kz = gaussian_kernel(x, 5.0).double(), gaussian_kernel(z, 5.0).double()
    assert normalized_hsic(kx, kz).item() == pytest.approx(numpy_normalized_hsic(kx.numpy(), kz.numpy()), rel=1e-6)
    h = np.eye(8) - 1 / 8
    expected = math.sqrt(np.linalg.norm((h @ kx.numpy() @ h) @ (h @ kz.numpy() @ h))) / 8
    assert coco(kx, kz).item() == pytest.approx(expected, rel=1e-9)


def test_hsic_is_larger_for_dependent_than_independent_labels():
    labels = torch.arange(16) % 4
    onehot = F.one_hot(labels, 4).float().double()
    ky = onehot @ onehot.T
    dependent = gaussian_kernel(onehot * 3, 5.0).double()
    independent = gaussian_kernel(torch.randn(16, 4, generator=torch.Generator().manual_seed(1)), 5.0).double()
    assert normalized_hsic(ky, dependent) > normalized_hsic(ky, independent)


def test_bido_terms_cover_hidden_layers_and_feature():
    defense = BiDO(BiDOParams.model_validate(NO_RECIPE))
    model = defense.wrap(tiny_model()).train()
    terms = defense.configure(TrainingSetup(SPEC)).step(model, torch.rand(8, 3, 16, 16), torch.arange(8) % 5, 0)
    assert terms["dep_x"].item() > 0 and terms["dep_y"].item() < 0
    assert defense.recorder.outputs == []  # consumed by the step
    model.eval()(torch.rand(2, 3, 16, 16))
    assert defense.recorder.outputs == []  # evaluation passes are not recorded


def test_bido_terms_read_the_first_rows_of_a_joint_forward():
    """Stacked with Trap-MID, BiDO sees the clean half of the clean + trapdoored batch: its terms are those of the
    forward's first len(images) rows."""
    defense = BiDO(BiDOParams.model_validate(NO_RECIPE))
    model = defense.wrap(tiny_model()).train()
    torch.manual_seed(0)
    clean, labels = torch.rand(8, 3, 16, 16), torch.arange(8) % 5
    out = model(torch.cat([clean, torch.rand(8, 3, 16, 16)]))
    recorded = [z.clone() for z in defense.recorder.outputs]
    terms = defense.dependency_terms(model, clean, labels, out)
    kx = gaussian_kernel(clean, 5.0)
    expected = sum(normalized_hsic(kx, gaussian_kernel(z[:8], 5.0)) for z in [*recorded, out.features])
    torch.testing.assert_close(terms["dep_x"], (0.05 * expected).float())


# --- MIDAS ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [1e-4, 1e-2])
def test_float32_bit_flip_rate_within_binomial_bounds(rate):
    n = 50_000
    flipped = flip_bits(torch.zeros(n), rate, torch.Generator().manual_seed(0))
    bits = ((flipped.view(torch.int32).view(-1, 1) >> torch.arange(32)) & 1).sum().item()
    mean, sd = n * 32 * rate, math.sqrt(n * 32 * rate * (1 - rate))
    assert abs(bits - mean) < 5 * sd


def test_float32_bit_flips_are_xor_and_rate_zero_is_identity():
    x = torch.tensor([1.0, -2.5, 3.25])
    assert torch.equal(flip_bits(x, 0.0), x)
    y = flip_bits(x, 0.3, torch.Generator().manual_seed(3))
    diff = x.view(torch.int32) ^ y.view(torch.int32)
    z = flip_bits(y, 0.0)
    assert torch.equal(z.view(torch.int32) ^ diff, x.view(torch.int32))
    with pytest.raises(TypeError, match="float32"):
        flip_bits(x.double(), 0.1)


def test_midas_fixed_point_exponent_and_round_trip():
    # max W = 1: ceil(log2(1 / 2047)) + 1 = -10 + 1 = -9, so the step is 2^-9 and the range (2^11 - 1) 2^-9 ~ 4.
    assert fixed_point_exponent(torch.tensor([-3.0, 0.25, 1.0]), 12) == -9
    assert fixed_point_exponent(torch.tensor([-0.5, -0.25]), 12) == -10  # no positive entry: max |W|
    x = torch.linspace(-3.99, 3.99, 1001)
    words = encode_fixed_point(x, -9, 12)
    assert words.max() < 2**12 and words.min() >= 0
    back = decode_fixed_point(words, -9, 12, torch.float32)
    # Magnitudes are truncated toward zero: |x| - 2^-9 < |back| <= |x|, and the sign is kept.
    assert ((x.abs() - back.abs()) >= 0).all() and ((x.abs() - back.abs()) < 2**-9).all()
    assert (torch.sign(back) * torch.sign(x) >= 0).all()
    # Exact words: 1.5 = 768 steps of 2^-9, sign bit 11 for negatives.
    assert encode_fixed_point(torch.tensor([1.5, -1.5]), -9, 12).tolist() == [768, 2048 + 768]


@pytest.mark.parametrize("rate", [2.0**-10, 2.0**-3])
def test_midas_fixed_point_flips_binomial_and_bounded(rate):
    n, bits, exponent = 40_000, 12, -9
    values = torch.zeros(n)
    words = encode_fixed_point(flip_fixed_point(values, rate, exponent, bits, torch.Generator().manual_seed(1)), -9, 12)
    flipped = ((words.view(-1, 1) >> torch.arange(bits)) & 1).sum().item()
    mean, sd = n * bits * rate, math.sqrt(n * bits * rate * (1 - rate))
    assert abs(flipped - mean) < 5 * sd
    x = torch.randn(n) * 1.5
    corrupted = flip_fixed_point(x, rate, exponent, bits, torch.Generator().manual_seed(2))
    # No corrupted weight leaves the fixed-point range (a float32 exponent flip would reach 2^128).
    assert corrupted.abs().max().item() <= (2**11 - 1) * 2.0**exponent


def test_midas_corrupts_once_per_trial_and_only_linear_layers():
    model = freeze(tiny_model())
    defense = MIDAS(MIDASParams(bit_error_rate=2.0**-6))
    deployed = freeze(defense.deploy(model, torch.Generator().manual_seed(0)))
    x = torch.rand(4, 3, 16, 16)
    # One corrupted copy per trial: every query of the trial sees the same model.
    torch.testing.assert_close(deployed(x).logits, deployed(x).logits, rtol=0, atol=0)
    assert not torch.equal(deployed(x).logits, model(x).logits)
    same = freeze(defense.deploy(model, torch.Generator().manual_seed(0)))
    other = freeze(defense.deploy(model, torch.Generator().manual_seed(1)))
    assert torch.equal(same(x).logits, deployed(x).logits) and not torch.equal(other(x).logits, deployed(x).logits)
    clean, noisy = dict(model.named_parameters()), dict(deployed.named_parameters())
    linear = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    for name, p in clean.items():
        if name.rsplit(".", 1)[0] in linear:
            assert not torch.equal(p, noisy[name]), name
        else:
            assert torch.equal(p, noisy[name]), name  # conv layers are not in approximate memory
    every = freeze(MIDAS(MIDASParams(bit_error_rate=2.0**-6, layers="all")).deploy(model, torch.Generator()))
    layers = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)}
    for name, p in clean.items():
        changed = not torch.equal(p, dict(every.named_parameters())[name])
        assert changed == (name.rsplit(".", 1)[0] in layers), name  # convolutions too; normalisation stays exact


def test_midas_accuracy_falls_gently_over_the_official_grid(data):
    model = tiny_model()
    DefenseStack([DEFENSES.get("none")(DEFENSES.get("none").Params())]).fit(model, data, SPEC, RunContext())
    clean = evaluate_accuracy(freeze(model), data.private_test, torch.device("cpu"))
    accs = [
        evaluate_accuracy(
            freeze(MIDAS(MIDASParams(bit_error_rate=r)).deploy(model, torch.Generator().manual_seed(0))),
            data.private_test,
            torch.device("cpu"),
        )
        for r in (DEEP_RATES[0], 2.0**-7)
    ]
    assert accs[0] >= clean - 0.05 and accs[1] >= clean - 0.15, (clean, accs)


def test_midas_float32_per_query_variant_redraws_from_the_deploy_generator(data):
    model = freeze(tiny_model())
    params = MIDASParams(memory="float32-per-query", bit_error_rate=1e-4)
    deployed = freeze(MIDAS(params).deploy(model, torch.Generator().manual_seed(0)))
    x = torch.rand(3, 3, 16, 16)
    first, second = deployed(x).logits, deployed(x).logits
    assert not torch.equal(first.nan_to_num(), second.nan_to_num())  # fresh flips per query
    again = freeze(MIDAS(params).deploy(model, torch.Generator().manual_seed(0)))
    torch.manual_seed(123)  # the global stream is not what the flips come from
    torch.testing.assert_close(again(x).logits, first, equal_nan=True, rtol=0, atol=0)
    with pytest.raises(ValueError, match="float32-per-query"):
        MIDASParams(activations=True)


def test_midas_grids_are_the_notebooks():
    assert SHALLOW_RATES[0] == 2.0**-12 and SHALLOW_RATES[-1] == 2.0**-3 and len(SHALLOW_RATES) == 10
    assert len(DEEP_RATES) == 14 and DEEP_RATES[0] == 2.0**-10 and DEEP_RATES[-1] == 0.07
    assert 2.0**-7 * 4 / 3 in DEEP_RATES


# --- stacking and training -------------------------------------------------------------------------------------------


def test_stack_combines_criterion_and_terms():
    stack = DefenseStack([NegLS(NegLSParams.model_validate(NO_RECIPE)), MID(MIDParams())])
    setup = stack.setup(SPEC)
    assert setup.criterion_owner == "negls" and [n for n, _ in setup.extra_terms] == ["kl"]
    with pytest.raises(ValueError, match="both replace the training criterion"):
        DefenseStack([NegLS(NegLSParams()), NegLS(NegLSParams())]).setup(SPEC)


def test_suite_stack_schema(tiny_suite):
    tiny_suite["defenses"].append({"label": "MID w/ NegLS", "stack": [{"name": "mid"}, "negls"]})
    rs = resolve_suite(tiny_suite)
    assert [m.name for m in rs.defenses[1].members] == ["mid", "negls"]
    tiny_suite["defenses"].append({"name": "mid", "stack": ["negls"]})
    from mibench.errors import ConfigError

    with pytest.raises(ConfigError, match="either `name`"):
        resolve_suite(tiny_suite)


# DP-SGD: the tiny CNN's 64-d BatchNorm1d needs one GroupNorm group (Opacus's 32 groups of 2 erase the feature).
LOOSE = {"dp-sgd": {"norm_groups": 1}, "tl-dmi": {**NO_RECIPE, "pretrain_epochs": 3}}


def params_for(name):
    params = NO_RECIPE if name in ("negls", "bido", "mid") else LOOSE.get(name, {})
    return DEFENSES.get(name).Params.model_validate(params)


@pytest.mark.parametrize("name", DEFENSES.names())
def test_every_defense_trains_above_chance(name, data):
    stack = DefenseStack([DEFENSES.get(name)(params_for(name))])
    model = tiny_model()
    if DEFENSES.get(name).architecture_problem(type(model)) is not None:  # RoLSS, SSF, TTS: a residual network
        torch.manual_seed(0)
        model = build_classifier("tiny-resnet", {"width": 8}, num_classes=5, in_channels=3, image_size=16)
    trained = stack.fit(model, data, SPEC, RunContext(seed=0))
    deployed = freeze(stack.deploy(trained.model, 0))
    acc = evaluate_accuracy(deployed, data.private_test, torch.device("cpu"))
    assert acc > 0.5, (name, acc)  # chance is 0.2
    assert trained.wall_time_s > 0


def test_midas_activation_errors_change_outputs_but_keep_input_gradients():
    model = freeze(tiny_model())
    params = MIDASParams(memory="float32-per-query", bit_error_rate=1e-3, activations=True)
    deployed = MIDAS(params).deploy(model, torch.Generator().manual_seed(0))
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    out = deployed(x).logits
    finite = torch.isfinite(out).all()
    out[torch.isfinite(out)].sum().backward()
    assert x.grad is not None
    clean = model(x).logits
    assert not torch.equal(out.detach(), clean.detach()) or not finite
    weights_only = MIDAS(MIDASParams(memory="float32-per-query", bit_error_rate=0.0)).deploy(model, torch.Generator())
    torch.testing.assert_close(weights_only(x).logits, clean)


@pytest.mark.parametrize("name", ["mid", "bido", "negls", "trap-mid", "ted"])
def test_defenses_train_under_bf16_autocast(name, data, monkeypatch):
    """The CUDA mixed-precision path (bf16 autocast, channels_last), exercised on the CPU: no dtype errors, finite
    losses, a model that still learns."""
    monkeypatch.setattr(classifier, "MIXED_PRECISION_DEVICES", {"cuda", "cpu"})
    stack = DefenseStack([DEFENSES.get(name)(params_for(name))])
    trained = stack.fit(tiny_model(), data, SPEC, RunContext(seed=0))
    acc = evaluate_accuracy(freeze(stack.deploy(trained.model, 0)), data.private_test, torch.device("cpu"))
    assert acc > 0.4, (name, acc)  # chance is 0.2


def test_identity_sampler_batches_are_identity_balanced():
    from mibench.data.base import identity_batches

    labels = torch.tensor([0] * 10 + [1] * 9 + [2] * 2 + [3] * 8 + [4] * 12)  # identity 2 has fewer than 4 images
    batches = identity_batches(labels, 8, 4, torch.Generator().manual_seed(0))
    groups = torch.cat(batches).view(-1, 4)
    assert all(len(b) == 8 for b in batches) and len(batches) >= 3
    assert all(len(set(labels[g].tolist())) == 1 for g in groups)  # groups of 4 images of one identity
    assert all(len(set(labels[b].view(2, 4)[:, 0].tolist())) == 2 for b in batches)  # two identities per batch
    used = torch.cat(batches)
    ok = used[labels[used] != 2]
    assert len(ok.unique()) == len(ok)  # an image is used once, except where an identity needed repeats
    # identities keep groups until fewer than two can fill a batch (the official loop's stopping rule)
    chunks = {i: max(int((labels == i).sum()), 4) // 4 for i in range(5)}
    left = {i: chunks[i] - int((labels[groups[:, 0]] == i).sum()) for i in range(5)}
    assert sum(v > 0 for v in left.values()) < 2
    again = identity_batches(labels, 8, 4, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))
    with pytest.raises(ValueError, match="at least 4 identities"):
        identity_batches(labels[labels < 3], 16, 4, torch.Generator())


def test_bido_trains_with_its_identity_sampler(data):
    assert BiDOParams().recipe.sampler == "identity"
    params = BiDOParams.model_validate({"recipe": {**NO_RECIPE["recipe"], "sampler": "identity"}})
    stack = DefenseStack([BiDO(params)])
    spec = SPEC.model_copy(update={"batch_size": 16})
    trained = stack.fit(tiny_model(), data, spec, RunContext(seed=0))
    acc = evaluate_accuracy(freeze(stack.deploy(trained.model, 0)), data.private_test, torch.device("cpu"))
    assert acc > 0.5, acc


# --- MID and BiDO on the paper's architectures ------------------------------------------------------------------------


def test_mid_on_vgg16_reads_the_raw_flattened_feature_as_vgg16_vib():
    from mibench.models.base import build_classifier

    torch.manual_seed(0)
    vgg = build_classifier("vgg16", {}, num_classes=7, in_channels=3, image_size=64)
    model = MID(MIDParams()).wrap(vgg).eval()
    assert model.statistics.in_features == 2048 and model.k == 1024  # VGG16_vib: raw 512*2*2 flatten, k = 1024
    x = torch.rand(2, 3, 64, 64)
    out = model(x)
    raw = vgg.feature(x).flatten(1)
    torch.testing.assert_close(out.features, raw)  # the exposed feature is the pre-bottleneck raw feature


def test_mid_trains_with_the_identity_sampler(data):
    setup = DefenseStack([MID(MIDParams())]).setup(SPEC)
    assert setup.spec.sampler == "identity" and setup.spec.images_per_identity == 4
    from mibench.training.classifier import epoch_batches

    labels = torch.arange(16).repeat_interleave(6)
    spec = setup.spec.model_copy(update={"batch_size": 64})
    batches = epoch_batches(labels, spec, torch.Generator().manual_seed(0), torch.Generator(), torch.device("cpu"))
    for idx, _ in batches:
        counts = torch.bincount(labels[idx], minlength=16)
        assert len(idx) == 64 and set(counts[counts > 0].tolist()) == {4}  # 16 identities x 4 images


def test_ir_net_baselines_mid_512_and_bido_on_four_blocks():
    import mibench.defenses.bido as bido_module
    from mibench.models.base import build_classifier

    torch.manual_seed(0)
    net = build_classifier("facenet64", {}, num_classes=8, in_channels=3, image_size=64)
    assert MID(MIDParams()).wrap(net).k == 512  # Trap-MID App. C.6 (half the feature would be 256)
    defense = BiDO(BiDOParams())
    model = defense.wrap(build_classifier("facenet64", {}, num_classes=8, in_channels=3, image_size=64))
    seen = []
    measure = bido_module.normalized_hsic

    def counting(k1, k2):
        seen.append(k2.shape)
        return measure(k1, k2)

    x, y = torch.rand(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    out = model(x)
    original, bido_module.normalized_hsic = bido_module.normalized_hsic, counting
    try:
        defense.dependency_terms(model, x, y, out)
    finally:
        bido_module.normalized_hsic = original
    assert len(seen) == 2 * 4  # d(X, Z_j) and d(Y, Z_j) over exactly the four stage outputs


def test_train_mode_scores_and_midas_work_on_a_mid_target_after_a_forward():
    """MID keeps its last KL (a graph tensor) on the module: neither path may deep-copy it as is."""
    from mibench.api.oracle import Access, TargetOracle

    model = MID(MIDParams()).wrap(tiny_model()).train()
    model(torch.rand(4, 3, 16, 16))  # leaves a non-leaf `kl` behind
    deployed = MIDAS(MIDASParams()).deploy(model, torch.Generator().manual_seed(0))
    assert deployed is not model and deployed.kl.is_leaf
    oracle = TargetOracle(freeze(model), Access.WHITE_BOX, num_classes=5, image_shape=(3, 16, 16))
    probs = oracle.train_mode_probabilities(torch.rand(8, 3, 16, 16))
    torch.testing.assert_close(probs.sum(1), torch.ones(8))


def test_midas_takes_its_step_from_the_first_fc_layer_the_model_uses_not_an_unused_one():
    # Stacked on MID, the backbone's own head (fc_layer) is never used: the bottleneck reads its feature and its own
    # Linear layers classify. The notebooks' W1 is the first weight matrix the network computes with; mibench took
    # the first nn.Linear in module order, the unused head, whose scale set a wrong step for the trained layers.
    from mibench.defenses.mid import VIBClassifier
    from mibench.models.base import ClassifierOutput

    class Backbone(torch.nn.Module):
        in_channels, image_size, num_classes = 3, 8, 4

        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 2, 3)
            self.fc_layer = torch.nn.Linear(72, 4)  # the unused head, much larger than the trained layers
            torch.nn.init.constant_(self.fc_layer.weight, 5.0)

        def forward(self, x):
            features = self.conv(x).flatten(1)
            return ClassifierOutput(features, self.fc_layer(features))

    torch.manual_seed(0)
    model = freeze(VIBClassifier(Backbone(), 72, 4, k=6, sample_at_test=False))
    deployed = MIDAS(MIDASParams(bit_error_rate=2.0**-6)).deploy(model, torch.Generator().manual_seed(0))
    assert deployed.midas_fixed_exponent == fixed_point_exponent(model.statistics.weight.detach(), 12)
    assert deployed.midas_fixed_exponent != fixed_point_exponent(model.backbone.fc_layer.weight.detach(), 12)
    # the unused head is not in approximate memory; both trained Linear layers are
    assert torch.equal(deployed.backbone.fc_layer.weight, model.backbone.fc_layer.weight)
    assert not torch.equal(deployed.statistics.weight, model.statistics.weight)
    assert not torch.equal(deployed.head.weight, model.head.weight)
