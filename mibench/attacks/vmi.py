"""VMI: "Variational Model Inversion Attacks" (Wang, Fu, Zhang, Wang, Zemel; NeurIPS 2021).

For each attacked class y, a distribution q_y over the GAN's latent space is fitted to
min E_{z ~ q_y}[-log p_target(y | G(z))] + lambda KL(q_y || N(0, I)) (paper Eq. 5, with the generator's prior as the
reference), and the reconstructions are images of samples of q_y. Official code: wangkua1/vmi @ f308752
(`attack_dcgan.py`, `attack_stylegan.py`, `likelihood_model.py`, `run_scripts/neurips2021-celeba-stylegan-flow.sh`);
the toolbox's version (ffhibnese/Model-Inversion-Attack-ToolBox @ d9ad48f, `attack/VMI`, `examples/.../vmi.py`) was
read too.

As the official code: q_y is a flow (`mibench.inversion.flows`: 10 Glow steps of actnorm, shuffle and additive
coupling whose network has 100 hidden ELU units with hidden actnorms and a learned output scale, every actnorm
data-initialised, samples drawn through the reverse flow; pinned to the official modules by the `vmi` parity
golden), as the released run script (`neurips2021-celeba-stylegan-flow.sh`: K 10, shuffle, additive, actnorm,
lr 1e-4, lambda_kl 1e-3, patience 1000, i.e. no early stopping); each iteration draws a batch of 64 z from q_y,
takes the mean negative log-softmax of the target for y on G(z), adds lambda_kl times a Monte-Carlo KL estimate from
a second batch of 64 samples (mean of log q(z) - log N(z)), and takes an SGD step (momentum 0.9); an epoch is
10,000 / 64 rounded up = 157 iterations; training stops after 20 epochs and `samples` (50) images of q_y per class
are the reconstructions, as the released sampler (`generate_vmi_attack_samples.py`) loads `miner_20` (saved
before epoch 20 runs: 20 epochs trained) and draws 50 per identity.

The prior is GMI's public-data WGAN-GP (shared with GMI, LOMMA-GMI and BREP-MI), as the Trap-MID protocol's
attacks; the VMI paper trains its own DCGAN/StyleGAN on the public split. Classes are trained together as
independent flows (one batched module, summed losses, per-class random streams), not as one process per class.

Differences: the StyleGAN variant's layered flows (one flow per style layer, `l_identity`) and Glow's multi-scale
levels (`flow_L` 3: 30 steps with two learned Split2d priors, sampling from a quarter of the noise dimensions) are
not built; on a flat DCGAN latent the first has no counterpart. The MineGAN (full-covariance Gaussian) and
Gaussian-mixture miners are not built.
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
from mibench.inversion.flows import ClassFlows
from mibench.inversion.losses import cross_entropy_identity
from mibench.inversion.search import in_chunks, zero_nonfinite_grads
from mibench.models.base import freeze
from mibench.params import Params
from mibench.registry import ATTACKS


class VMIParams(Params):
    """The released run script's flow and optimiser, the released sampler's epoch and samples (module docstring)."""

    gan: WGANGPParams = Field(default_factory=WGANGPParams)
    epochs: int = Field(20, ge=1, description="the released sampler's miner_20: 20 epochs trained")
    iterations_per_epoch: int = Field(157, ge=1, description="official: range(0, 10000, batch 64)")
    batch_size: int = Field(64, ge=1, description="samples of q_y per class and iteration")
    lr: float = Field(1e-4, gt=0, description="the released run script's (2e-4 is attack_dcgan.py's default)")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    kl_weight: float = Field(1e-3, ge=0, description="lambda_kl of the released run script")
    flow_steps: int = Field(10, ge=1)
    flow_hidden: int = Field(100, ge=1)
    samples: int = Field(50, ge=1, description="reconstructions per class, drawn from q_y (the released sampler's)")
    class_batch: int = Field(10, ge=1, description="classes trained together (memory only; results do not change)")


@ATTACKS.register
class VMI(UsesGMIGAN, GenerativeAttack):
    """A flow per class over the GAN's latents, trained by the variational objective (see module docstring)."""

    name: ClassVar[str] = "vmi"
    paper: ClassVar[str] = "Wang et al., Variational Model Inversion Attacks, NeurIPS 2021"
    official: ClassVar[str | None] = "wangkua1/vmi @ f308752"
    access: ClassVar[Access] = Access.WHITE_BOX
    # 2: Glow's coupling network (hidden actnorms, learned output scale), data-initialised actnorms, samples through
    # the reverse flow; the released run script's lr 1e-4, the released sampler's epoch 20 and 50 samples
    version: ClassVar[int] = 2
    Params = VMIParams

    def fit_flows(
        self, generator: nn.Module, oracle: TargetOracle, classes: list[int], ctx: RunContext, advance
    ) -> ClassFlows:
        """Train one flow per class of `classes` (a physical batch of classes)."""
        p: VMIParams = self.params
        device = ctx.device
        flows = ClassFlows.initialised(
            classes, p.gan.z_dim, p.flow_steps, p.flow_hidden, lambda c: ctx.generator("vmi-shuffle", c)
        ).to(device)
        opt = torch.optim.SGD(flows.parameters(), lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
        streams = {c: ctx.generator("vmi-train", c) for c in classes}
        labels = torch.tensor(classes, device=device).repeat_interleave(p.batch_size)
        for _ in range(p.epochs * p.iterations_per_epoch):
            z, _ = flows.sample(p.batch_size, streams.__getitem__, classes)
            images = generator(z.reshape(-1, p.gan.z_dim))
            attack = cross_entropy_identity(oracle.logits(images), labels).view(len(classes), -1).mean(1)
            loss = attack
            if p.kl_weight > 0:
                loss = loss + p.kl_weight * flows.kl_to_standard_normal(p.batch_size, streams.__getitem__, classes)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()  # independent classes: each flow gets its own class's gradient
            zero_nonfinite_grads(flows.parameters())
            opt.step()
            advance(1)
        return flows

    def invert(self, prior: nn.Module, oracle: TargetOracle, classes: torch.Tensor, ctx: RunContext) -> Reconstructions:
        """Fit the flows class batch by class batch, then draw `samples` images per class."""
        p: VMIParams = self.params
        generator = freeze(self.generative_prior(prior).generator).to(ctx.device)
        images, latents = [], []
        chunks = in_chunks(len(classes), p.class_batch)
        with ctx.reporter.bar("VMI flow training", p.epochs * p.iterations_per_epoch * len(chunks)) as advance:
            for c in chunks:
                batch = classes[c].tolist()
                flows = self.fit_flows(generator, oracle, batch, ctx, advance)
                with torch.no_grad():
                    z, _ = flows.sample(p.samples, lambda k: ctx.generator("vmi-sample", k), batch)
                    z = z.reshape(-1, p.gan.z_dim)
                    images.append(torch.cat([generator(z[s]).cpu() for s in in_chunks(len(z), 256)]))
                latents.append(z.cpu())
        labels = classes.repeat_interleave(p.samples)
        restarts = torch.arange(p.samples).repeat(len(classes))
        stats = {"target_queries": float(oracle.queries)}
        return Reconstructions(torch.cat(images), labels, restarts, torch.cat(latents), stats)
