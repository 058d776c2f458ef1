"""DP-SGD through Opacus: the reported epsilon is the accountant's, per-sample gradients are clipped, BatchNorm is
replaced as Opacus recommends."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mibench.api.context import RunContext
from mibench.api.recipe import TrainSpec
from mibench.defenses.dp_sgd import DPSGD, DPSGDParams
from mibench.training.stack import DefenseStack
from tests.conftest import tiny_model

opacus = pytest.importorskip("opacus")
SPEC = TrainSpec(epochs=2, batch_size=16, lr=0.05, selection="last")


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_batchnorm_becomes_groupnorm_and_the_model_is_valid_for_opacus():
    model = DPSGD(DPSGDParams(norm_groups=4)).wrap(tiny_model())
    norms = [m for m in model.modules() if isinstance(m, nn.GroupNorm)]
    assert [(m.num_groups, m.num_channels) for m in norms] == [(4, 64)]
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert opacus.validators.ModuleValidator.is_valid(model)


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_reported_epsilon_is_the_accountants_for_the_same_steps_noise_and_rate(defense_data, accountant):
    params = DPSGDParams(epsilon=None, noise_multiplier=1.1, accountant=accountant, norm_groups=1)
    trained = DefenseStack([DPSGD(params)]).fit(tiny_model(), defense_data, SPEC, RunContext(seed=0))
    (record,) = [m for m in trained.stats if m.metric == "dp_epsilon"]
    d = record.details
    n = len(defense_data.private_train)
    assert d["sample_rate"] == pytest.approx(1 / -(-n // SPEC.batch_size))
    assert d["steps"] == SPEC.epochs * -(-n // SPEC.batch_size)
    oracle = {"rdp": opacus.accountants.RDPAccountant, "prv": opacus.accountants.PRVAccountant}[accountant]()
    oracle.history = [(1.1, d["sample_rate"], d["steps"])]
    assert record.value == pytest.approx(oracle.get_epsilon(1e-5), rel=1e-9)
    assert 0 < record.value < 100


def test_a_target_epsilon_is_met(defense_data):
    trained = DefenseStack([DPSGD(DPSGDParams(epsilon=3.0, norm_groups=1))]).fit(
        tiny_model(), defense_data, SPEC, RunContext(seed=0)
    )
    (record,) = [m for m in trained.stats if m.metric == "dp_epsilon"]
    assert 2.5 < record.value <= 3.0 + 1e-3  # the accountant's noise search lands just under the target
    assert record.details["noise_multiplier"] > 0


def test_per_sample_gradients_are_clipped_before_summing(defense_data):
    """One noiseless DP step of plain SGD (lr 1) moves each weight by minus the mean of the clipped per-sample
    gradients over the expected batch size: computed here independently with torch.func."""
    clip = 0.05  # well below the per-sample gradient norms of an untrained net, so clipping binds
    defense = DPSGD(DPSGDParams(epsilon=None, noise_multiplier=0.0, max_grad_norm=clip, norm_groups=1))
    model = defense.wrap(tiny_model()).train()
    reference = {k: v.detach().clone() for k, v in model.named_parameters()}
    plain = copy.deepcopy(model)  # for the independent per-sample gradients (Opacus hooks the trained one)
    spec = TrainSpec(epochs=1, batch_size=16, lr=1.0, momentum=0.0, weight_decay=0.0, hflip=False)
    private, optimizer, loader, _ = defense.private_training(model, defense_data.private_train, spec, RunContext())
    images, labels = next(iter(loader))
    x = images.float() / 255

    def loss_of(params, xi, yi):
        out = torch.func.functional_call(plain, params, (xi[None],))
        return F.cross_entropy(out.logits, yi[None])

    grads = torch.func.vmap(torch.func.grad(loss_of), in_dims=(None, 0, 0))(reference, x, labels)
    norms = torch.sqrt(sum(g.flatten(1).pow(2).sum(1) for g in grads.values()))
    assert (norms > clip).all()
    factor = (clip / (norms + 1e-6)).clamp(max=1.0)
    # Opacus divides by the expected batch size q * N (int), not the drawn one: 150 images, q = 1/ceil(150/16) -> 15
    expected_batch = int(len(defense_data.private_train) * loader.sample_rate)
    assert expected_batch == optimizer.expected_batch_size == 15
    loss = F.cross_entropy(private(x).logits, labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    for name, param in model.named_parameters():
        clipped_mean = torch.einsum("n,n...->...", factor, grads[name]) / expected_batch
        torch.testing.assert_close(reference[name] - param.detach(), clipped_mean, rtol=1e-4, atol=1e-6)


def test_a_suite_with_dp_sgd_names_the_missing_extra_before_any_work(tiny_suite, monkeypatch):
    import importlib.util

    from mibench.errors import ConfigError
    from mibench.suite import resolve_suite

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "opacus" else real(name, *a))
    tiny_suite["defenses"] = [{"name": "dp-sgd", "label": "DP"}]
    with pytest.raises(ConfigError) as info:
        resolve_suite(tiny_suite)
    assert info.value.problems == ["defenses[0]: dp-sgd needs the 'opacus' package: pip install 'mibench[dp]'"]
