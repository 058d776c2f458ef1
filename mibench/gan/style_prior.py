"""The style-GAN prior shared by the attacks that search a StyleGAN's W space (PPA, IF-GMI, Mirror).

A released StyleGAN2 file (NVIDIA's pickle or a converted state dict, never trained here, keyed by content), or a
tiny style generator trained with WGAN-GP on the public images for tests and CPU suites. Attacks whose `gan`
parameters are equal share one trained prior artifact (the prior's name and parameters are its key).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from mibench.api.attack import DataInfo, PriorSpec
from mibench.api.context import RunContext
from mibench.api.oracle import TargetOracle
from mibench.data.base import ImageSet, resize_images
from mibench.gan.networks import GANPrior, WGANCritic
from mibench.gan.style import TinyStyleGenerator
from mibench.gan.stylegan2_files import load_stylegan2
from mibench.gan.wgan_gp import WGANGPParams, train_wgan_gp
from mibench.inversion.search import in_chunks
from mibench.models.base import freeze


class StyleGANParams(WGANGPParams):
    """The style generator: a released StyleGAN2 file, or a tiny one trained with WGAN-GP on the public data."""

    generator: Literal["tiny-style", "stylegan2"] = "tiny-style"
    checkpoint: str | None = Field(None, description="stylegan2: NVIDIA's network pickle (ffhq.pkl) or a converted .pt")
    z_dim: int = Field(32, ge=1, description="tiny-style only (StyleGAN2 takes its sizes from the file)")
    w_dim: int = Field(32, ge=1)
    width: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _released_needs_a_file(self) -> StyleGANParams:
        if self.generator == "stylegan2" and not self.checkpoint:
            raise ValueError("gan.generator 'stylegan2' needs gan.checkpoint (ffhq.pkl or a converted file)")
        return self


def repeat_w(generator: nn.Module, w: torch.Tensor) -> torch.Tensor:
    """One w per image (N x w_dim) repeated over the generator's layers (N x num_ws x w_dim)."""
    return w.unsqueeze(1).expand(-1, generator.num_ws, -1)


def truncated_ws(generator: nn.Module, w: torch.Tensor, psi: float, cutoff: int | None) -> torch.Tensor:
    """One w per image repeated over the layers, the first `cutoff` (all if None) pulled to `w_avg` by psi.

    The truncation genforce's StyleGAN applies to W-space codes at every render (Mirror searches untruncated w and
    sees truncated images); differentiable in w.
    """
    ws = repeat_w(generator, w)
    if psi == 1:
        return ws
    layers = torch.arange(generator.num_ws, device=w.device) < (generator.num_ws if cutoff is None else cutoff)
    return torch.where(layers[None, :, None], generator.w_avg.lerp(ws, psi), ws)


@torch.no_grad()
def sample_pool(generator: nn.Module, size: int, ctx: RunContext) -> torch.Tensor:
    """`size` untruncated w = mapping(z), z ~ N(0, I) from the job's "pool" stream, on the CPU.

    Mirror's pool (the official `all_ws.pt`) and C2FMI's latent pool.
    """
    z = torch.randn(size, generator.z_dim, generator=ctx.generator("pool"))
    return torch.cat([generator.mapping(z[c].to(ctx.device))[:, 0].cpu() for c in in_chunks(size, 256)])


@torch.no_grad()
def initial_candidates(
    generator: nn.Module,
    oracle: TargetOracle,
    classes: torch.Tensor,
    size: int,
    *,
    pool: int,
    count: int,
    psi: float,
    cutoff: int | None,
    crop: float,
    batch_size: int,
    rng: torch.Generator,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPA's candidate search (`find_initial_w`), shared by PPA and IF-GMI: (styles, their classes).

    `pool` z are mapped with truncation and rendered (clamped, centre crop, resize); each class takes the `count`
    distinct pool members with the highest target confidence, averaged over the render and its mirror image.
    Returns styles N x num_ws x w_dim (class-major) and the N classes.
    """
    z = torch.randn(pool, generator.z_dim, generator=rng).to(device)
    ws = torch.cat([generator.mapping(z[c], psi, cutoff) for c in in_chunks(pool, 256)])
    probs = []
    for c in in_chunks(pool, batch_size):  # renders at the generator's resolution: memory-bound
        x = render(generator, ws[c], size, crop)
        probs.append(((oracle.probabilities(x) + oracle.probabilities(x.flip(-1))) / 2)[:, classes.to(device)])
    top = torch.cat(probs).topk(min(count, pool), dim=0).indices.T  # classes x count, distinct per class
    return ws[top.flatten()], classes.repeat_interleave(top.shape[1])


def render(
    generator: nn.Module,
    ws: torch.Tensor,
    size: int,
    crop: float,
    clip: bool = True,
    noise: torch.Generator | None = None,
) -> torch.Tensor:
    """Synthesis, centre crop, antialiased resize to `size`, mapped from [-1, 1] to [0, 1], clamped if `clip`.

    `noise`: fresh per-pixel noise for this render, drawn from that generator (NVIDIA's `noise_mode='random'`,
    rosinality's `randomize_noise=True`); None renders with the generator's stored constant noise. Generators
    without noise inputs (the tiny style generator) ignore it.
    """
    return to_target(synthesize(generator, ws, noise), size, crop, clip)


def synthesize(generator: nn.Module, ws: torch.Tensor, noise: torch.Generator | None = None) -> torch.Tensor:
    """Images in [-1, 1] from styles, with constant noise, or fresh noise seeded from `noise` (see `render`)."""
    if noise is None or not getattr(generator, "has_noise_inputs", False):
        return generator.synthesis(ws)
    # The port draws random noise with torch.randn; a seed taken from the job's stream makes that draw a function
    # of the job's key, and fork_rng keeps the global stream as it was.
    seed = int(torch.randint(0, 2**62, (), generator=noise))
    with torch.random.fork_rng(devices=[ws.device] if ws.device.type == "cuda" else []):
        torch.manual_seed(seed)
        return generator.synthesis(ws, noise_mode="random")


@torch.no_grad()
def render_latents(
    generator: nn.Module,
    latents: torch.Tensor,
    to_ws,
    size: int | tuple[int, int],
    crop: float,
    batch_size: int,
    device: torch.device,
    clip: bool = True,
    noise: torch.Generator | None = None,
) -> torch.Tensor:
    """Fresh renders of kept latents at `size` (the evaluator's input), in batches, on the CPU.

    What the official code evaluates when it re-renders, or saves the generator's full-resolution output, instead
    of the target-sized reconstructions upsampled. `to_ws` turns a batch of latents into the attack's styles.
    """
    if not isinstance(size, int):
        raise ValueError(f"style generators render square images; the evaluator takes {size}")
    return torch.cat(
        [
            render(generator, to_ws(latents[c].to(device)), size, crop, clip, noise).cpu()
            for c in in_chunks(len(latents), batch_size)
        ]
    )


def to_target(images: torch.Tensor, size: int, crop: float, clip: bool = True) -> torch.Tensor:
    """Generator images in [-1, 1]: centre crop, antialiased resize to `size`, to [0, 1], clamped if `clip`."""
    side = images.shape[-1]
    keep = max(1, round(side * crop))
    top = (side - keep) // 2
    images = (resize_images(images[..., top : top + keep, top : top + keep], size, antialias=True) + 1) / 2
    return images.clamp(0, 1) if clip else images


class StyleGANPrior:
    """Mixin for attacks with a `gan: StyleGANParams` parameter: prior spec, building, training and loading."""

    prior_name: ClassVar[str] = "style-gan"

    @property
    def released(self) -> bool:
        """Whether the generator is a pre-trained file (no prior to train)."""
        return self.params.gan.generator == "stylegan2"

    def prior_params(self) -> StyleGANParams:
        """Only the generator settings determine the prior (target-independent, shared)."""
        return self.params.gan

    def priors(self) -> list[PriorSpec]:
        """The tiny generator is trained (and cached); a released StyleGAN2 is read from its file at inversion."""
        return [] if self.released else super().priors()

    def external_files(self) -> dict[str, str]:
        """The StyleGAN2 file, keyed by content."""
        return {"gan.checkpoint": self.params.gan.checkpoint} if self.released else {}

    def build_prior(self, info: DataInfo, name: str | None = None) -> GANPrior:
        """The style generator (and the critic that trains it) at the data's resolution."""
        g = self.params.gan
        generator = TinyStyleGenerator(info.image_size, info.channels, g.z_dim, g.w_dim, g.width)
        return GANPrior(generator, WGANCritic(info.image_size, info.channels, g.width))

    def train_prior(
        self, prior: nn.Module, public: ImageSet, oracle: TargetOracle | None, ctx: RunContext, name: str | None = None
    ) -> None:
        """WGAN-GP on the public images (a released StyleGAN2 would be loaded instead)."""
        train_wgan_gp(prior.generator, prior.discriminator, public, self.params.gan, ctx)

    def style_generator(self, prior: nn.Module | None, ctx: RunContext) -> nn.Module:
        """The frozen generator: the released StyleGAN2 file, or the trained tiny prior."""
        if self.released:
            generator = load_stylegan2(self.params.gan.checkpoint, what="PPA StyleGAN2 generator")
        else:
            generator = self.generative_prior(prior).generator
        return freeze(generator).to(ctx.device)
