"""Defenses: each loss or transform against hand-computed values, stacking, and training on tiny data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mibench import training
from mibench.context import RunContext
from mibench.defense import DefenseStack, TrainingSetup
from mibench.defenses.bido import BiDO, BiDOParams, coco, gaussian_kernel, normalized_hsic
from mibench.defenses.mid import MID, MIDParams, gaussian_kl
from mibench.defenses.midas import MIDAS, MIDASParams, flip_bits
from mibench.defenses.negls import NegLS, NegLSParams, label_smoothing_loss, smoothing_at
from mibench.models.base import freeze
from mibench.registry import DEFENSES
from mibench.suite import TrainSpec, resolve_suite
from mibench.training import evaluate_accuracy
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
    torch.testing.assert_close(terms["dep_x"], 0.05 * expected)


# --- MIDAS ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [1e-4, 1e-2])
def test_bit_flip_rate_within_binomial_bounds(rate):
    n = 50_000
    flipped = flip_bits(torch.zeros(n), rate, torch.Generator().manual_seed(0))
    bits = ((flipped.view(torch.int32).view(-1, 1) >> torch.arange(32)) & 1).sum().item()
    mean, sd = n * 32 * rate, math.sqrt(n * 32 * rate * (1 - rate))
    assert abs(bits - mean) < 5 * sd


def test_bit_flips_are_xor_and_rate_zero_is_identity():
    x = torch.tensor([1.0, -2.5, 3.25])
    assert torch.equal(flip_bits(x, 0.0), x)
    y = flip_bits(x, 0.3, torch.Generator().manual_seed(3))
    diff = x.view(torch.int32) ^ y.view(torch.int32)
    z = flip_bits(y, 0.0)
    assert torch.equal(z.view(torch.int32) ^ diff, x.view(torch.int32))
    with pytest.raises(TypeError, match="float32"):
        flip_bits(x.double(), 0.1)


def test_midas_redraws_errors_per_query_and_keeps_accuracy(data):
    model = tiny_model()
    DefenseStack([DEFENSES.get("none")(DEFENSES.get("none").Params())]).fit(model, data, SPEC, RunContext())
    clean = evaluate_accuracy(freeze(model), data.private_test, torch.device("cpu"))
    deployed = freeze(MIDAS(MIDASParams(bit_error_rate=1e-2)).deploy(model))
    x = torch.rand(3, 3, 16, 16)
    assert not torch.equal(deployed(x).logits, deployed(x).logits)
    torch.manual_seed(0)
    default = freeze(MIDAS(MIDASParams()).deploy(model))
    # The default rate flips ~0.6 of tiny-cnn's ~20k x 32 bits per query: accuracy within 5 points.
    assert evaluate_accuracy(default, data.private_test, torch.device("cpu")) >= clean - 0.05


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


def params_for(name):
    return DEFENSES.get(name).Params.model_validate(NO_RECIPE if name in ("negls", "bido") else {})


@pytest.mark.parametrize("name", DEFENSES.names())
def test_every_defense_trains_above_chance(name, data):
    stack = DefenseStack([DEFENSES.get(name)(params_for(name))])
    trained = stack.fit(tiny_model(), data, SPEC, RunContext(seed=0))
    deployed = freeze(stack.deploy(trained.model))
    acc = evaluate_accuracy(deployed, data.private_test, torch.device("cpu"))
    assert acc > 0.5, (name, acc)  # chance is 0.2
    assert trained.wall_time_s > 0


def test_midas_activation_errors_change_outputs_but_keep_input_gradients():
    model = freeze(tiny_model())
    deployed = MIDAS(MIDASParams(bit_error_rate=1e-3, activations=True)).deploy(model)
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    torch.manual_seed(0)
    out = deployed(x).logits
    finite = torch.isfinite(out).all()
    out[torch.isfinite(out)].sum().backward()
    assert x.grad is not None
    clean = model(x).logits
    assert not torch.equal(out.detach(), clean.detach()) or not finite
    weights_only = MIDAS(MIDASParams(bit_error_rate=0.0, activations=False)).deploy(model)
    torch.testing.assert_close(weights_only(x).logits, clean)


@pytest.mark.parametrize("name", ["mid", "bido", "negls", "trap-mid", "ted"])
def test_defenses_train_under_bf16_autocast(name, data, monkeypatch):
    """The CUDA mixed-precision path (bf16 autocast, channels_last), exercised on the CPU: no dtype errors, finite
    losses, a model that still learns."""
    monkeypatch.setattr(training, "MIXED_PRECISION_DEVICES", {"cuda", "cpu"})
    stack = DefenseStack([DEFENSES.get(name)(params_for(name))])
    trained = stack.fit(tiny_model(), data, SPEC, RunContext(seed=0))
    acc = evaluate_accuracy(freeze(stack.deploy(trained.model)), data.private_test, torch.device("cpu"))
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
    acc = evaluate_accuracy(freeze(stack.deploy(trained.model)), data.private_test, torch.device("cpu"))
    assert acc > 0.5, acc
