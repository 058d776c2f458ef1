"""RLB-MI: the reward's terms, the batched SAC agents (independent per class, identical twin critics as official),
and an attack from scores only that beats chance with the stated query count."""

from __future__ import annotations

import math

import pytest
import torch

from mibench.api.context import RunContext
from mibench.api.oracle import Access, TargetOracle
from mibench.attacks.rlbmi import RLBMI, RLBMIParams, log_margin
from mibench.errors import AccessDenied
from mibench.inversion.sac import ClassAgents
from tests.conftest import hit_rate

# lr 3e-3 instead of 5e-4: 300 episodes instead of 40,000
SMALL = {"episodes": 300, "hidden": 64, "replay_batch": 64, "class_batch": 6, "lr": 3e-3}


def test_margin_reward_term():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.5, 0.4]])
    assert log_margin(probs, torch.tensor([0, 0])).tolist() == pytest.approx([math.log(0.5), math.log(1e-7)])


def test_agents_learn_independently_per_class_with_identical_twin_critics():
    agents = ClassAgents(3, 4, capacity=40, generator=torch.Generator().manual_seed(0), device=torch.device("cpu"),
                         hidden=8, batch_size=4)  # fmt: skip
    for c1, c2 in zip(agents.critic1.parameters(), agents.critic2.parameters(), strict=True):
        assert torch.equal(c1, c2)  # the official constructors reseed before each critic
    before = [p.detach().clone() for p in agents.actor.parameters()]
    state = torch.randn(3, 4)
    for _ in range(6):  # learning starts once more than a batch is stored
        action = agents.act(state)
        reward = torch.tensor([1.0, 0.0, -1.0])
        agents.step(state, action, reward, action, done=True)
    moved = [(p - b).abs().flatten(1).sum(1) for p, b in zip(agents.actor.parameters(), before, strict=True)]
    assert all((m > 0).all() for m in moved)  # every class's actor learnt
    # a class's gradient reaches only its own slice: zero one class's loss and its parameters stay put
    q = agents.critic1(state.unsqueeze(1), agents.act(state).unsqueeze(1))
    agents.critic1.zero_grad()  # the last actor update left gradients in the critic
    q[1].sum().backward()
    grads = agents.critic1.fc1.weight.grad
    assert grads[1].abs().sum() > 0 and grads[0].abs().sum() == 0 and grads[2].abs().sum() == 0
    for c1, c2 in zip(agents.critic1.parameters(), agents.critic2.parameters(), strict=True):
        torch.testing.assert_close(c1, c2)  # same start, same data, same loss: the twins coincide


def test_agents_move_their_policy_to_each_class_rewarded_action():
    """A one-step bandit per class, reward -||a - target_c||^2: each class's policy mean moves to its own target."""
    gen = torch.Generator().manual_seed(0)
    cpu = torch.device("cpu")
    agents = ClassAgents(2, 2, capacity=500, generator=gen, device=cpu, hidden=32, batch_size=32, lr=3e-3)
    targets = torch.tensor([[0.5, -0.5], [-0.5, 0.5]])

    def distance() -> torch.Tensor:
        with torch.no_grad():
            mu, _ = agents.actor(torch.randn(2, 200, 2, generator=gen))
        return (torch.tanh(mu) - targets[:, None]).norm(dim=-1).mean(1)

    before = distance()
    for _ in range(400):
        state = torch.randn(2, 2, generator=gen)
        action = agents.act(state)
        agents.step(state, action, -(action - targets).pow(2).sum(1), action, done=True)
    assert (distance() < 0.75 * before).all()  # measured 0.69 -> 0.09 and 0.80 -> 0.27 after 600 steps


def test_rlbmi_uses_scores_only_beats_chance_and_counts_its_queries(attack_setting, gmi_gan):
    target, _ = attack_setting
    gmi, prior = gmi_gan
    attack = RLBMI(RLBMIParams(gan=gmi.params.gan, **SMALL))
    oracle = TargetOracle(target, Access.PROBABILITIES, num_classes=6, image_shape=(3, 16, 16))
    recon = attack.invert(prior, oracle, torch.arange(6), RunContext(seed=0))
    assert recon.images.shape == (6, 3, 16, 16) and recon.labels.tolist() == list(range(6))
    assert hit_rate(target, recon.images, recon.labels) >= 0.5  # chance is 1/6; measured 0.67
    # per class and episode: the state and the action image, then one test image
    assert oracle.queries == 3 * SMALL["episodes"] * 6
    labels_only = TargetOracle(target, Access.LABELS, num_classes=6, image_shape=(3, 16, 16))
    with pytest.raises(AccessDenied):
        RLBMI(RLBMIParams(gan=gmi.params.gan, episodes=1)).invert(prior, labels_only, torch.arange(2), RunContext())
