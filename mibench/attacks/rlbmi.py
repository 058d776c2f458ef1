"""RLB-MI: "Reinforcement Learning-Based Black-Box Model Inversion Attacks" (Han, Choi, Lee, Song, Kim; CVPR 2023).

A soft actor-critic agent per class learns to move through the GAN's latent space using nothing but the target's
confidence scores. Official code: HanGyojin/RLB-MI @ 3a113bd (`attack.py`, `SAC.py`, `main.py`,
`run_experiments.sh`), read for this file; the agents are `mibench.inversion.sac` (the toolbox's `optimize/rlb.py`
was read too: it scores the test sample's *state* image, a bug not copied).

Per class, for `episodes` (40,000) episodes of `max_step` (1) steps:

1. the state is z ~ N(0, I); the agent's action a (tanh-squashed, in [-1, 1]^d) moves it to
   z' = alpha z + (1 - alpha) a (alpha 0: z' = a);
2. the reward is 2 log p_y(G(z')) + 2 log p_y(G(a)) + 8 log max(1e-7, p_y(G(z')) - max_{c != y} p_c(G(z'))), from
   the target's probabilities of both images (two queries, identical images when alpha is 0);
3. the transition is stored and the agent learns (once more than 256 are stored);
4. a test episode from a fresh z ~ N(0, I) gives an image and its p_y (one query); the image with the highest test
   confidence so far (ties: the later) is the class's reconstruction.

The generator is GMI's public-data WGAN-GP (the official `weights/CelebA.tar` is GMI's G), shared with GMI.
Differences: classes are trained together as independent batched agents (`class_batch` at a time), their random
draws from one generator per batch of classes, so `class_batch` is part of the result's key as a seed is; `samples`
> 1 keeps that many best test images per class (official: 1).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from mibench.api.attack import GenerativeAttack, Reconstructions
from mibench.api.context import RunContext
from mibench.api.oracle import Access, TargetOracle
from mibench.attacks.gmi import UsesGMIGAN
from mibench.gan.wgan_gp import WGANGPParams
from mibench.inversion.sac import ClassAgents
from mibench.inversion.search import in_chunks
from mibench.models.base import freeze
from mibench.params import Params
from mibench.registry import ATTACKS


class RLBMIParams(Params):
    """The official run script's settings (`-max_episodes 40000 -max_step 1 -alpha 0`) and `SAC.py`'s constants."""

    gan: WGANGPParams = Field(default_factory=WGANGPParams)
    episodes: int = Field(40_000, ge=1)
    max_step: int = Field(1, ge=1)
    alpha: float = Field(0.0, ge=0, lt=1, description="z' = alpha z + (1 - alpha) action")
    reward_weights: tuple[float, float, float] = Field((2.0, 2.0, 8.0), description="state, action, margin")
    hidden: int = Field(256, ge=1)
    replay_batch: int = Field(256, ge=1)
    lr: float = Field(5e-4, gt=0)
    gamma: float = Field(0.99, ge=0, le=1)
    tau: float = Field(1e-2, gt=0, le=1)
    samples: int = Field(1, ge=1, description="best test images kept per class (official: 1)")
    class_batch: int = Field(50, ge=1, description="agents trained together (their draws share a generator)")


def log_confidence(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Log p_y per row (a probability that underflowed to 0 counts as 1e-45, not -inf)."""
    return probs.gather(1, labels.view(-1, 1)).squeeze(1).clamp_min(1e-45).log()


def log_margin(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Log max(1e-7, p_y - max_{c != y} p_c) per row (RLB-MI's third reward term)."""
    own = probs.gather(1, labels.view(-1, 1)).squeeze(1)
    others = probs.scatter(1, labels.view(-1, 1), float("-inf")).amax(dim=1)
    return (own - others).clamp_min(1e-7).log()


@ATTACKS.register
class RLBMI(UsesGMIGAN, GenerativeAttack):
    """A soft actor-critic agent per class in GMI's latent space, rewarded by the target's scores."""

    name: ClassVar[str] = "rlb-mi"
    paper: ClassVar[str] = "Han et al., Reinforcement Learning-Based Black-Box Model Inversion Attacks, CVPR 2023"
    official: ClassVar[str | None] = "HanGyojin/RLB-MI @ 3a113bd"
    access: ClassVar[Access] = Access.PROBABILITIES
    Params = RLBMIParams

    def reward(self, oracle: TargetOracle, generator: nn.Module, z: torch.Tensor, a: torch.Tensor, y: torch.Tensor):
        """Weighted state, action and margin terms (two target queries per class)."""
        w_state, w_action, w_margin = self.params.reward_weights
        state_probs, action_probs = oracle.probabilities(generator(z)), oracle.probabilities(generator(a))
        return (
            w_state * log_confidence(state_probs, y)
            + w_action * log_confidence(action_probs, y)
            + w_margin * log_margin(state_probs, y)
        )

    def train_agents(self, generator: nn.Module, oracle: TargetOracle, classes: torch.Tensor, ctx, index: int, advance):
        """Episodes for one batch of classes; returns (best test latents C x samples x d, their confidences)."""
        p: RLBMIParams = self.params
        device, dim, n = ctx.device, p.gan.z_dim, len(classes)
        rng = ctx.generator("rlb", index)
        agents = ClassAgents(
            n, dim, capacity=p.episodes * p.max_step, generator=rng, device=device, hidden=p.hidden,
            batch_size=p.replay_batch, lr=p.lr, gamma=p.gamma, tau=p.tau,
        )  # fmt: skip
        y = classes.to(device)
        best_z = torch.zeros(n, p.samples, dim, device=device)
        best_score = torch.full((n, p.samples), -1.0, device=device)
        for _ in range(p.episodes):
            z = torch.randn(n, dim, generator=rng).to(device)
            for t in range(p.max_step):
                with torch.no_grad():
                    action = agents.act(z)
                    moved = p.alpha * z + (1 - p.alpha) * action
                    reward = self.reward(oracle, generator, moved, action, y)
                agents.step(z, action, reward, moved, done=t == p.max_step - 1)
                z = moved
            with torch.no_grad():
                test = torch.randn(n, dim, generator=rng).to(device)
                for _ in range(p.max_step):
                    test = p.alpha * test + (1 - p.alpha) * agents.act(test)
                score = oracle.probabilities(generator(test)).gather(1, y.view(-1, 1)).squeeze(1)
                # keep the `samples` best; a later test image wins ties (official `>=`)
                candidates = torch.cat([test.unsqueeze(1), best_z], dim=1)
                scores = torch.cat([score.unsqueeze(1), best_score], dim=1)
                order = scores.argsort(dim=1, descending=True, stable=True)[:, : p.samples]
                best_z = candidates.gather(1, order.unsqueeze(2).expand(-1, -1, dim))
                best_score = scores.gather(1, order)
            advance(1)
        return best_z, best_score

    def invert(self, prior: nn.Module, oracle: TargetOracle, classes: torch.Tensor, ctx: RunContext) -> Reconstructions:
        """Agents per batch of classes; the best test images are the reconstructions."""
        p: RLBMIParams = self.params
        generator = freeze(self.generative_prior(prior).generator).to(ctx.device)
        chunks = in_chunks(len(classes), p.class_batch)
        latents, scores = [], []
        with ctx.reporter.bar("RLB-MI agents", p.episodes * len(chunks)) as advance:
            for index, c in enumerate(chunks):
                z, score = self.train_agents(generator, oracle, classes[c], ctx, index, advance)
                latents.append(z.reshape(-1, p.gan.z_dim).cpu())
                scores.append(score.cpu())
        latents_all = torch.cat(latents)
        with torch.no_grad():
            images = torch.cat(
                [generator(latents_all[s].to(ctx.device)).cpu() for s in in_chunks(len(latents_all), 256)]
            )
        stats = {"target_queries": float(oracle.queries), "mean_best_confidence": float(torch.cat(scores).mean())}
        restarts = torch.arange(p.samples).repeat(len(classes))
        return Reconstructions(images, classes.repeat_interleave(p.samples), restarts, latents_all, stats)
