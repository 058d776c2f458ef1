"""MIDAS: "An Approximate Memory based Defense against Model Inversion Attacks to Neural Networks".

Xu, Arafin, Qu, IEEE TETC 2022 (AsianHOST 2020). The deployed model runs from approximate (reduced-refresh) DRAM,
so stored values suffer random bit flips; the noise this puts on confidence scores and gradients degrades inversion
while accuracy stays usable. Training is unchanged; only `deploy` differs.

As the official notebooks do it (katekemu/model_inversion_defense @ 1f32327, `MIDAS_shallow.ipynb` cells 28-33,
`MIDAS_deep.ipynb` cells 18-21), the default `memory: fixed-point`:

* weights are stored as `bits`-bit sign-magnitude fixed point (12: one sign bit and 11 magnitude bits) with one
  step 2^e for the whole model, e = ceil(log2(max W1 / (2^11 - 1))) + 1 where W1 is the first corrupted layer's
  weight matrix the logits depend on (its signed maximum, as the notebooks); magnitudes are truncated toward zero
  and wrap beyond 11 bits;
* every stored bit flips independently with probability `bit_error_rate`;
* the flips are drawn **once per trial**: `deploy` returns one corrupted copy, seeded from the target's key, that
  serves the whole accuracy test and the whole inversion (several trials are several seeds);
* only the fully connected layers are corrupted (`layers: linear`; the shallow target is all Linear, the deep one
  corrupts its `fc` head); `layers: all` adds the convolutions, with the same step, as the deep notebook's per-layer
  conv study does (it corrupts one conv layer at a time; mibench all of them at once).

The official rate grids are `SHALLOW_RATES` (2^-12 ... 2^-3; the notebook runs only the two ends) and `DEEP_RATES`
(2^-10 ... 2^-4 with 4/3 and 5/3 multiples, and 0.07). The default rate 2^-7 is mibench's pick from the middle of the
deep grid, where the notebook's accuracy falls from 85.5% to 83.3%.

`memory: float32-per-query` keeps mibench's earlier model as a named variant: every bit of every float32 parameter
(and optionally activation) flips, redrawn on each forward call. One flip of exponent bit 30 multiplies a weight by
2^128, so its useful rates are around 1e-6, orders of magnitude below the published ones.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.func import functional_call

from mibench.api.defense import Defense
from mibench.data.base import height_width
from mibench.models.base import ClassifierOutput, clone_model
from mibench.params import Params
from mibench.registry import DEFENSES

_FLOAT_BITS = 32

# The official grids (`MIDAS_shallow.ipynb` cell 32 spans these ends; `MIDAS_deep.ipynb` cell 20).
SHALLOW_RATES: tuple[float, ...] = tuple(2.0**-k for k in range(12, 2, -1))
DEEP_RATES: tuple[float, ...] = tuple(
    sorted({*(2.0**-k for k in range(10, 3, -1)), *(2.0**-k * f for k in (5, 6, 7) for f in (4 / 3, 5 / 3)), 0.07})
)


class MIDASParams(Params):
    """Bit-error rate and memory model (defaults: the official notebooks' fixed-point, once-per-trial model)."""

    bit_error_rate: float = Field(2.0**-7, ge=0, le=0.5, description="probability that a stored bit flips")
    memory: Literal["fixed-point", "float32-per-query"] = "fixed-point"
    bits: int = Field(12, ge=2, le=24, description="fixed-point word: one sign bit and bits - 1 magnitude bits")
    layers: Literal["linear", "all"] = Field("linear", description="which layers sit in approximate memory")
    activations: bool = Field(False, description="float32-per-query only: flip activation bits too")
    attacker_training: Literal["clean", "deployed"] = Field(
        "clean",
        description="what attacks' target-dependent priors are trained on: the clean classifier (the deep notebook "
        "trains the inversion network's decoder before corrupting the weights) or the deployed, corrupted copy",
    )

    @model_validator(mode="after")
    def _activations_need_float_model(self) -> MIDASParams:
        if self.activations and self.memory != "float32-per-query":
            raise ValueError("activations: true is only defined for memory: float32-per-query")
        return self


# ---------------------------------------------------------------------------------------------------------------------
# Fixed-point storage (the official model)


def fixed_point_exponent(reference: torch.Tensor, bits: int) -> int:
    """The notebooks' step exponent: ceil(log2(max(W) / (2^(bits-1) - 1))) + 1 (one bit of headroom).

    `max` is the signed maximum, as the notebooks compute it; a tensor with no positive entry falls back to max |W|.
    """
    top = reference.max().item() if reference.numel() else 0.0
    if top <= 0:
        top = reference.abs().max().item() if reference.numel() else 0.0
    if top <= 0:
        return 0
    return math.ceil(math.log2(top / (2 ** (bits - 1) - 1))) + 1


def encode_fixed_point(values: torch.Tensor, exponent: int, bits: int) -> torch.Tensor:
    """Sign-magnitude words (int64): sign bit at position bits-1, then |v| / 2^e truncated, kept to bits-1 bits.

    Magnitudes past the range wrap (their high bits are lost), as the notebooks' bit decomposition does. Zero and
    positive values get sign 0 (the notebooks' `torch.sign` gives 0.5 for exact zeros, which decodes to NaN).
    """
    # Scaling by a power of two is exact in floating point, so the truncation is exact too.
    magnitude = torch.floor(values.abs().float() * 2.0**-exponent).to(torch.int64) % (1 << (bits - 1))
    sign = torch.signbit(values).to(torch.int64)  # -0.0 (a flipped sign bit over magnitude 0) keeps its sign
    return (sign << (bits - 1)) | magnitude


def decode_fixed_point(words: torch.Tensor, exponent: int, bits: int, dtype: torch.dtype) -> torch.Tensor:
    """Inverse of `encode_fixed_point`: (-1)^s * magnitude * 2^e."""
    magnitude = (words & ((1 << (bits - 1)) - 1)).float()  # exact: at most 23 magnitude bits
    negative = ((words >> (bits - 1)) & 1).bool()
    value = magnitude * 2.0**exponent
    return torch.where(negative, -value, value).to(dtype)


def bernoulli_positions(total: int, rate: float, generator: torch.Generator) -> torch.Tensor:
    """The indices below `total` at which a Bernoulli(rate) stream succeeds, drawn in O(successes).

    The gaps between successes of independent Bernoulli trials are Geometric(rate): floor(log U / log(1 - rate)) + 1
    with U uniform in (0, 1], so summing drawn gaps gives exactly the distribution of per-bit coin flips without
    drawing one number per bit (a 10M-weight layer has 125M stored bits).
    """
    if rate <= 0 or total <= 0:
        return torch.zeros(0, dtype=torch.int64)
    chunk = int(total * rate * 1.05) + 64
    found, last = [], -1
    while True:
        u = 1.0 - torch.rand(chunk, generator=generator, dtype=torch.float64)  # in (0, 1]
        gaps = torch.floor(torch.log(u) / math.log1p(-rate)).to(torch.int64) + 1
        positions = last + torch.cumsum(gaps, 0)
        inside = positions < total
        found.append(positions[inside])
        if not inside.all():
            return torch.cat(found)
        last = int(positions[-1])


def bit_error_masks(count: int, bits: int, rate: float, generator: torch.Generator) -> torch.Tensor:
    """`count` int64 XOR masks in which each of the low `bits` bits is set independently with probability `rate`."""
    positions = bernoulli_positions(count * bits, rate, generator)
    masks = torch.zeros(count, dtype=torch.int64)
    # Positions are distinct, so the bits added into one element are distinct too: the sum is their OR.
    return masks.index_put_((positions // bits,), torch.ones_like(positions) << (positions % bits), accumulate=True)


def flip_fixed_point(
    values: torch.Tensor, rate: float, exponent: int, bits: int, generator: torch.Generator
) -> torch.Tensor:
    """`values` stored in `bits`-bit sign-magnitude fixed point, every bit flipped with probability `rate`, read back.

    Even at rate 0 the result is the quantised value (the model lives in fixed point).
    """
    words = encode_fixed_point(values.detach().cpu(), exponent, bits)
    if rate > 0:
        words = words ^ bit_error_masks(words.numel(), bits, rate, generator).view_as(words)
    return decode_fixed_point(words, exponent, bits, values.dtype).to(values.device)


def approximate_memory_tensors(model: nn.Module, layers: str, used: set[str] | None) -> list[tuple[str, torch.Tensor]]:
    """The (name, tensor) pairs stored in approximate memory, in module order.

    The weights and biases of the fully connected layers, or (`all`) of the fully connected and convolutional layers,
    as the deep notebook's per-layer conv study corrupts them (normalisation layers stay exact). Layers the logits
    never depend on (a backbone's own head under MID's bottleneck) are not part of the deployed network: `used` names
    the parameters they do depend on (`parameters_reaching_logits`; None keeps every one).
    """
    kinds = (nn.Linear,) if layers == "linear" else (nn.Linear, nn.modules.conv._ConvNd)
    tensors = [
        (f"{name}.{pname}" if name else pname, p)
        for name, module in model.named_modules()
        if isinstance(module, kinds)
        for pname, p in module.named_parameters(recurse=False)
    ]
    return [(name, t) for name, t in tensors if used is None or name in used]


def parameters_reaching_logits(model: nn.Module) -> set[str] | None:
    """Names of the parameters the model's logits depend on, by one probe pass on a copy (None: no probe possible).

    The probe is a zero batch of the input shape the architecture declares (`in_channels`, `image_size`), run in
    eval mode on a copy (a forward may leave state behind, as MID's KL) without touching the global random stream.
    """
    declared = next((m for m in model.modules() if hasattr(m, "image_size") and hasattr(m, "in_channels")), None)
    parameters = list(model.parameters())
    if declared is None or not parameters:
        return None
    probe_model = clone_model(model).eval()
    names, tensors = zip(*probe_model.named_parameters(), strict=True)
    height, width = height_width(declared.image_size)
    with torch.random.fork_rng(devices=[]), torch.enable_grad():
        for t in tensors:
            t.requires_grad_(True)  # a frozen target too
        probe = torch.zeros(2, declared.in_channels, height, width, device=parameters[0].device)
        grads = torch.autograd.grad(probe_model(probe).logits.sum(), tensors, allow_unused=True)
    return {name for name, grad in zip(names, grads, strict=True) if grad is not None}


def corrupt_once(model: nn.Module, params: MIDASParams, generator: torch.Generator) -> nn.Module:
    """A copy of `model` whose approximate-memory tensors hold one draw of fixed-point bit errors (one trial)."""
    corrupted = clone_model(model)
    used = parameters_reaching_logits(corrupted)
    tensors = approximate_memory_tensors(corrupted, params.layers, used)
    if not tensors:
        raise ValueError(f"MIDAS: the model has no {params.layers!r} layers to store in approximate memory")
    # The step comes from the first FC weight matrix the network uses (the notebooks' W1), also when every layer is
    # corrupted.
    linear = approximate_memory_tensors(corrupted, "linear", used)
    reference = next(t for name, t in linear or tensors if name.endswith("weight"))
    exponent = fixed_point_exponent(reference.detach(), params.bits)
    with torch.no_grad():
        for _, tensor in tensors:
            tensor.copy_(flip_fixed_point(tensor, params.bit_error_rate, exponent, params.bits, generator))
    corrupted.midas_fixed_exponent = exponent  # provenance for tests and reports
    return corrupted


# ---------------------------------------------------------------------------------------------------------------------
# The float32 per-query variant (mibench's earlier model)


def flip_bits(values: torch.Tensor, rate: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A copy of float32 `values` in which each of the 32 bits of every element flips with probability `rate`.

    The number of flips is drawn from Binomial(32 n, rate) and their positions uniformly without replacement, which
    is exactly independent per-bit flipping.
    """
    if values.dtype != torch.float32:
        raise TypeError(f"bit errors are modelled on float32 storage, got {values.dtype}")
    n_bits = values.numel() * _FLOAT_BITS
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
    element, bit = positions // _FLOAT_BITS, positions % _FLOAT_BITS
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


class PerQueryFloatMemoryModel(nn.Module):
    """A model whose float32 weights (and optionally activations) get fresh bit errors on every forward call.

    The flips come from the generator handed to `deploy`, so a job's queries see the same sequence every run.
    """

    def __init__(self, model: nn.Module, rate: float, activations: bool, generator: torch.Generator):
        super().__init__()
        self.model = model
        self.rate = rate
        self.activations = activations
        self.generator = generator

    def _corrupt_output(self, module: nn.Module, inputs: object, output: object) -> object:
        if isinstance(output, torch.Tensor) and output.dtype == torch.float32:
            noise_free = output.detach()
            flipped = flip_bits(noise_free.cpu(), self.rate, self.generator).to(output.device)
            return output + (flipped - noise_free)  # gradients pass straight through
        return output

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        """One query: corrupt a copy of every float32 parameter (and activations), run the model on it."""
        params = {
            name: flip_bits(p.detach().cpu(), self.rate, self.generator).to(p.device) if p.dtype == torch.float32 else p
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
    official: ClassVar[str | None] = "katekemu/model_inversion_defense @ 1f32327"
    # 2: fixed-point storage, errors drawn once per trial, FC layers only
    # 3: only layers the logits depend on, the step from the first of them (an unused head under MID set it before);
    # attacks' target-dependent priors train on the clean classifier (`attacker_training`), as the deep notebook
    version: ClassVar[int] = 3
    Params = MIDASParams
    strength: ClassVar[tuple[str, ...]] = ("bit_error_rate",)
    deploy_only: ClassVar[bool] = True  # served from the undefended target's weights, as the notebooks do

    def attackers_train_before_deployment(self) -> bool:
        """The deep notebook's protocol by default: decoders learn from the clean classifier (`attacker_training`)."""
        return self.params.attacker_training == "clean"

    def deploy(self, model: nn.Module, generator: torch.Generator) -> nn.Module:
        """Serve the model from approximate memory (one corrupted copy, or per-query float32 flips)."""
        p: MIDASParams = self.params
        if p.memory == "float32-per-query":
            return PerQueryFloatMemoryModel(model, p.bit_error_rate, p.activations, generator)
        return corrupt_once(model, p, generator)
