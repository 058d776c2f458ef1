"""A deterministic synthetic "identities" dataset for CPU tests and the smoke suite.

Each identity is a code c in R^d drawn from N(0, I). A sample of identity c has the code c + s * eps plus nuisance
factors n ~ N(0, I) (pose and lighting stand-ins), and its image is
sigmoid(g * (sum_k code_k B_k + sum_j n_j N_j + B_0)) for fixed smooth random basis images B, N. The bases are
drawn at 4x4 and upsampled, so an identity looks the same at every resolution (the evaluator may run at a higher
one), and they are left-right symmetric, so horizontal flips preserve identity as they do for aligned faces.

Private identities (the classifier's classes) and public identities (the attacker's auxiliary data) are disjoint
draws from the same code distribution, mirroring the MI protocol of disjoint CelebA identities.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from mibench.data.base import UNLABELLED, DataBundle, Dataset, ImageSet, to_uint8
from mibench.params import Params
from mibench.registry import DATASETS

_BASE_RESOLUTION = 4


class SyntheticParams(Params):
    """Sizes and difficulty of the synthetic identities."""

    num_private: int = Field(10, ge=2, description="identities the target classifies")
    num_public: int = Field(20, ge=1, description="disjoint identities in the attacker's public data")
    train_per_identity: int = Field(30, ge=1)
    test_per_identity: int = Field(10, ge=1)
    public_per_identity: int = Field(30, ge=1)
    identity_dim: int = Field(8, ge=1)
    nuisance_dim: int = Field(4, ge=0)
    within_scale: float = Field(0.35, ge=0.0, description="std of a sample's code around its identity code")
    gain: float = Field(1.5, gt=0.0)
    channels: int = Field(3, ge=1)
    seed: int = 1234


@DATASETS.register
class SyntheticIdentities(Dataset):
    """Smooth random-field "faces", generated in code; no files needed."""

    name: ClassVar[str] = "synthetic-identities"
    paper: ClassVar[str] = "mibench test fixture (no paper)"
    Params = SyntheticParams
    needs_root: ClassVar[bool] = False

    @classmethod
    def class_count(cls, params: SyntheticParams) -> int:
        """num_private identities."""
        return params.num_private

    def load(self, root: Path | None, image_size: int, cache_dir: Path) -> DataBundle:
        """Generate the bundle at `image_size` (root and cache are unused)."""
        p: SyntheticParams = self.params
        gen = torch.Generator().manual_seed(p.seed)
        identity_basis = _smooth_basis(p.identity_dim, p.channels, image_size, gen)
        nuisance_basis = _smooth_basis(p.nuisance_dim, p.channels, image_size, gen)
        offset = _smooth_basis(1, p.channels, image_size, gen)[0] * 0.5
        codes = torch.randn(p.num_private + p.num_public, p.identity_dim, generator=gen)

        def render(identities: torch.Tensor) -> torch.Tensor:
            n = identities.numel()
            sample_codes = codes[identities] + p.within_scale * torch.randn(n, p.identity_dim, generator=gen)
            nuisance = torch.randn(n, p.nuisance_dim, generator=gen)
            field = (
                torch.einsum("nk,kchw->nchw", sample_codes, identity_basis)
                + torch.einsum("nk,kchw->nchw", nuisance, nuisance_basis)
                + offset
            )
            return to_uint8(torch.sigmoid(p.gain * field))

        private = torch.arange(p.num_private)
        public = torch.arange(p.num_private, p.num_private + p.num_public)
        train_ids = private.repeat_interleave(p.train_per_identity)
        test_ids = private.repeat_interleave(p.test_per_identity)
        public_ids = public.repeat_interleave(p.public_per_identity)
        return DataBundle(
            private_train=ImageSet(render(train_ids), train_ids),
            private_test=ImageSet(render(test_ids), test_ids),
            public=ImageSet(render(public_ids), torch.full_like(public_ids, UNLABELLED)),
            num_classes=p.num_private,
            name=self.name,
            public_identities=public_ids - p.num_private,
        )


def _smooth_basis(count: int, channels: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """`count` left-right symmetric smooth fields (count x C x size x size), each with unit std."""
    coarse = torch.randn(count, channels, _BASE_RESOLUTION, _BASE_RESOLUTION, generator=gen)
    coarse = 0.5 * (coarse + coarse.flip(-1))
    if count == 0:
        return coarse.new_zeros(0, channels, size, size)
    fields = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return fields / fields.flatten(1).std(dim=1).clamp_min(1e-6).view(-1, 1, 1, 1)
