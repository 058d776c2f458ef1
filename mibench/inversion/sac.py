"""Soft actor-critic agents, one per class, trained together (RLB-MI's latent-space agent).

RLB-MI (Han et al., CVPR 2023) trains, per attacked class, a soft actor-critic agent (Haarnoja et al., 2018) whose
action is a latent vector of the GAN and whose reward is the target's confidence in the class. This module is that
agent as the official code builds it (HanGyojin/RLB-MI @ 3a113bd, `SAC.py`), with every class's networks stored with
a leading class dimension so that C independent agents step in one batched pass:

* actor: state -> two ReLU layers of 256 -> (mu, log std clamped to [-20, 2]); the action is tanh(mu + e std) where
  the official `Normal(0, 1).sample()` draws **one scalar e per call**, shared by every coordinate and every sample
  of the batch (kept: it is what the published numbers ran); its log-probability is the squashed Gaussian's, with
  the per-coordinate terms *averaged* (`.mean(1)`) rather than summed (kept);
* two critics (state, action) -> ReLU 256 -> ReLU 256 -> Q, with target copies; the official constructors reseed
  the global generator before each network, so both critics and both targets start identical (kept: with identical
  starts and updates the twin critics coincide);
* learning once more than 256 transitions are stored: a uniform batch of 256 without replacement; critics regress
  0.5 MSE to r + gamma (1 - done) (min target Q(s', a') - alpha log pi(a'|s')); alpha = exp(log alpha) with target
  entropy -dim(action); actor loss alpha log pi - Q1; Adam 5e-4 for all; soft target updates with tau 0.01.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn


class BatchedLinear(nn.Module):
    """C independent linear layers (C x n x in -> C x n x out), each initialised as `nn.Linear`."""

    def __init__(self, classes: int, fan_in: int, fan_out: int, generator: torch.Generator):
        super().__init__()
        bound = 1 / math.sqrt(fan_in)
        self.weight = nn.Parameter((torch.rand(classes, fan_in, fan_out, generator=generator) * 2 - 1) * bound)
        self.bias = nn.Parameter((torch.rand(classes, 1, fan_out, generator=generator) * 2 - 1) * bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Each class c's x W_c + b_c."""
        return torch.baddbmm(self.bias, x, self.weight)


class Actor(nn.Module):
    """Squashed-Gaussian policy per class."""

    def __init__(self, classes: int, state: int, action: int, hidden: int, generator: torch.Generator):
        super().__init__()
        self.fc1 = BatchedLinear(classes, state, hidden, generator)
        self.fc2 = BatchedLinear(classes, hidden, hidden, generator)
        self.mu = BatchedLinear(classes, hidden, action, generator)
        self.log_std = BatchedLinear(classes, hidden, action, generator)

    def forward(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, clamped log std) of each class's policy at `state` (C x n x dim)."""
        h = F.relu(self.fc2(F.relu(self.fc1(state))))
        return self.mu(h), self.log_std(h).clamp(-20, 2)

    def sample(self, state: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(action, log pi) with the noise `e` (C x 1 x 1: one scalar per class and call, as official)."""
        mu, log_std = self(state)
        std = log_std.exp()
        pre = mu + e * std
        action = torch.tanh(pre)
        gaussian = -((pre - mu) ** 2) / (2 * std**2) - log_std - 0.5 * math.log(2 * math.pi)
        log_pi = (gaussian - torch.log(1 - action.pow(2) + 1e-6)).mean(-1, keepdim=True)
        return action, log_pi


class Critic(nn.Module):
    """Q(state, action) per class."""

    def __init__(self, classes: int, state: int, action: int, hidden: int, generator: torch.Generator):
        super().__init__()
        self.fc1 = BatchedLinear(classes, state + action, hidden, generator)
        self.fc2 = BatchedLinear(classes, hidden, hidden, generator)
        self.fc3 = BatchedLinear(classes, hidden, 1, generator)

    def forward(self, state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q values C x n x 1."""
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(torch.cat([state, action], dim=-1))))))


class ClassAgents:
    """C soft actor-critic agents with their replay buffers (see module docstring)."""

    def __init__(
        self,
        classes: int,
        dim: int,
        *,
        capacity: int,
        generator: torch.Generator,
        device: torch.device,
        hidden: int = 256,
        batch_size: int = 256,
        lr: float = 5e-4,
        gamma: float = 0.99,
        tau: float = 1e-2,
    ):
        self.classes, self.dim, self.batch_size = classes, dim, batch_size
        self.gamma, self.tau, self.device, self.generator = gamma, tau, device, generator
        self.actor = Actor(classes, dim, dim, hidden, generator).to(device)
        self.critic1 = Critic(classes, dim, dim, hidden, generator).to(device)
        # identical starts, as the official constructors' reseeding gives
        self.critic2, self.target1, self.target2 = (copy.deepcopy(self.critic1) for _ in range(3))
        self.log_alpha = torch.zeros(classes, 1, 1, device=device, requires_grad=True)
        self.alpha: torch.Tensor = torch.ones(classes, 1, 1, device=device)
        self.target_entropy = -float(dim)
        adam = lambda params: torch.optim.Adam(params, lr=lr)  # noqa: E731
        self.actor_opt, self.alpha_opt = adam(self.actor.parameters()), adam([self.log_alpha])
        self.critic1_opt, self.critic2_opt = adam(self.critic1.parameters()), adam(self.critic2.parameters())
        width = 3 * dim + 2  # state, action, reward, next state, done
        self.memory = torch.zeros(classes, capacity, width, device=device)
        self.stored = 0

    def noise(self) -> torch.Tensor:
        """One scalar N(0, 1) draw per class (the official `Normal(0, 1).sample()`)."""
        return torch.randn(self.classes, 1, 1, generator=self.generator).to(self.device)

    @torch.no_grad()
    def act(self, state: torch.Tensor) -> torch.Tensor:
        """An action per class for states C x dim."""
        action, _ = self.actor.sample(state.unsqueeze(1), self.noise())
        return action.squeeze(1)

    def step(self, state, action, reward, next_state, done: bool) -> None:
        """Store one transition per class (C x ...), then learn once more than a batch is stored."""
        if self.stored >= self.memory.shape[1]:
            raise ValueError("RLB-MI replay buffer is full (the official buffer holds 1e6 transitions)")
        done_column = torch.full((self.classes, 1), float(done), device=self.device)
        row = torch.cat([state, action, reward.view(-1, 1), next_state, done_column], dim=1)
        self.memory[:, self.stored] = row
        self.stored += 1
        if self.stored > self.batch_size:
            self.learn(self.sample_batch())

    def sample_batch(self) -> torch.Tensor:
        """C x batch x width, each class's batch uniform without replacement over its stored transitions."""
        keys = torch.rand(self.classes, self.stored, generator=self.generator).to(self.device)
        picks = keys.topk(self.batch_size, dim=1).indices
        return self.memory.gather(1, picks.unsqueeze(2).expand(-1, -1, self.memory.shape[2]))

    def learn(self, batch: torch.Tensor) -> None:
        """One SAC update of every class's agent (see module docstring)."""
        d = self.dim
        states, actions = batch[..., :d], batch[..., d : 2 * d]
        rewards, next_states, dones = batch[..., 2 * d : 2 * d + 1], batch[..., 2 * d + 1 : 3 * d + 1], batch[..., -1:]
        with torch.no_grad():
            next_actions, next_log_pi = self.actor.sample(next_states, self.noise())
            q_next = torch.min(self.target1(next_states, next_actions), self.target2(next_states, next_actions))
            q_target = rewards + self.gamma * (1 - dones) * (q_next - self.alpha * next_log_pi)
        for critic, opt in ((self.critic1, self.critic1_opt), (self.critic2, self.critic2_opt)):
            loss = 0.5 * (critic(states, actions) - q_target).pow(2).mean(dim=(1, 2)).sum()  # per-class MSE
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        alpha = self.log_alpha.exp()
        predicted, log_pi = self.actor.sample(states, self.noise())
        alpha_loss = -(self.log_alpha * (log_pi + self.target_entropy).detach()).mean(dim=(1, 2)).sum()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()
        self.alpha = alpha.detach()
        actor_loss = (alpha.detach() * log_pi - self.critic1(states, predicted)).mean(dim=(1, 2)).sum()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()
        with torch.no_grad():
            for local, target in ((self.critic1, self.target1), (self.critic2, self.target2)):
                for t, p in zip(target.parameters(), local.parameters(), strict=True):
                    t.mul_(1 - self.tau).add_(self.tau * p)
