"""MIDAS: "An Approximate Memory based Defense against Model Inversion Attacks to Neural Networks".

Xu, Arafin, Qu, IEEE TETC 2022 (AsianHOST 2020). The deployed model runs from approximate (reduced-refresh) DRAM,
so stored values suffer random bit flips; the noise this puts on confidence scores and gradients degrades inversion
while accuracy stays usable. In software: every query runs on a copy of the float32 weights in which each bit
flips independently with probability `bit_error_rate` (and optionally on the activations of every layer), redrawn
per query. Training is unchanged; only `deploy` differs.

The bit-error rate is the defense's knob; the seed description gives no single value, so the default (1e-6) is
mibench's choice, small enough to keep accuracy usable on float32 weights where a flip in a high exponent bit turns
a weight into a huge value. Sweep it in a suite to draw the utility/privacy trade-off.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn
from torch.func import functional_call

from mibench.defense import Defense
from mibench.models.base import ClassifierOutput
from mibench.params import Params
from mibench.registry import DEFENSES

_BITS = 32


class MIDASParams(Params):
    """Bit-error rate of the approximate memory, and whether activations are stored there too."""

    bit_error_rate: float = Field(1e-6, ge=0, le=0.5)
    activations: bool = False


def flip_bits(values: torch.Tensor, rate: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A copy of float32 `values` in which each of the 32 bits of every element flips with probability `rate`.

    The number of flips is drawn from Binomial(32 n, rate) and their positions uniformly without replacement, which
    is exactly independent per-bit flipping.
    """
    if values.dtype != torch.float32:
        raise TypeError(f"bit errors are modelled on float32 storage, got {values.dtype}")
    n_bits = values.numel() * _BITS
    if rate == 0 or n_bits == 0:
        return values.clone()
    count = int(torch.binomial(torch.tensor(float(n_bits)), torch.tensor(rate), generator=generator).item())
    if count == 0:
        return values.clone()
    positions = (
        torch.randperm(n_bits, generator=generator)[:count]
        if count > n_bits // 2
        else _distinct(n_bits, count, generator)
    )
    element, bit = positions // _BITS, positions % _BITS
    # Only the touched elements are read and written, on the tensor's own device.
    touched, inverse = torch.unique(element, return_inverse=True)
    masks = torch.zeros(touched.numel(), dtype=torch.int64).index_add_(0, inverse, torch.ones_like(bit) << bit)
    masks = torch.where(masks >= 2**31, masks - 2**32, masks).to(torch.int32)  # two's complement for the sign bit
    out = values.detach().clone().contiguous()
    words = out.view(-1).view(torch.int32)
    touched, masks = touched.to(out.device), masks.to(out.device)
    words[touched] = words[touched] ^ masks
    return out


def _distinct(n: int, count: int, generator: torch.Generator | None) -> torch.Tensor:
    """`count` distinct uniform integers below n (rejection of repeats; count is far below n)."""
    picked = torch.unique(torch.randint(0, n, (count,), generator=generator))
    while picked.numel() < count:
        extra = torch.randint(0, n, (count - picked.numel(),), generator=generator)
        picked = torch.unique(torch.cat([picked, extra]))
    return picked[torch.randperm(picked.numel(), generator=generator)]


class ApproximateMemoryModel(nn.Module):
    """A model whose weights (and optionally activations) get fresh random bit errors on every forward call."""

    def __init__(self, model: nn.Module, rate: float, activations: bool):
        super().__init__()
        self.model = model
        self.rate = rate
        self.activations = activations

    def _corrupt_output(self, module: nn.Module, inputs: object, output: object) -> object:
        if isinstance(output, torch.Tensor) and output.dtype == torch.float32:
            noise_free = output.detach()
            return output + (flip_bits(noise_free, self.rate) - noise_free)  # gradients pass straight through
        return output

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        """One query: corrupt a copy of every float32 parameter (and activations), run the model on it."""
        params = {
            name: flip_bits(p, self.rate) if p.dtype == torch.float32 else p
            for name, p in self.model.named_parameters()
        }
        # Activation hooks live for this query only, so the wrapped model itself is never changed.
        leaves = [m for m in self.model.modules() if not list(m.children())] if self.activations else []
        handles = [m.register_forward_hook(self._corrupt_output) for m in leaves]
        try:
            return functional_call(self.model, params, (x,))
        finally:
            for handle in handles:
                handle.remove()


@DEFENSES.register
class MIDAS(Defense):
    """Inference-time random bit errors in the stored weights (approximate memory)."""

    name: ClassVar[str] = "midas"
    paper: ClassVar[str] = "Xu, Arafin, Qu, An Approximate Memory based Defense against MI Attacks, IEEE TETC 2022"
    Params = MIDASParams

    def deploy(self, model: nn.Module) -> nn.Module:
        """Serve the model from approximate memory."""
        return ApproximateMemoryModel(model, self.params.bit_error_rate, self.params.activations)
