"""MIDAS parity: the notebooks' fixed-point encoding, bit flips and decoding against mibench's.

The functions are those of `MIDAS_shallow.ipynb` cell 28 (`float2bin_gpu`, `integer2bit`, `bin2float_gpu`,
`bin_add_bit_error`), compiled from the notebook's own source (the cell up to its self-check). The step exponent is
the cell's formula on the weights' signed maximum. The flips `bin_add_bit_error` draws (`torch.rand(b.shape) > rate`
on the global stream, seeded 31) are turned into mibench's XOR masks (sign bit at position 11, magnitude bits below
it, most significant first as the notebook orders them) and applied by mibench's `flip_fixed_point` through its
`bit_error_masks`.

    MIBENCH_OFFICIAL_MODEL_INVERSION_DEFENSE=DIR python -m parity.midas
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from parity._harness import largest_difference, official_checkout, replaced, seeded, write_golden

REPO, COMMIT = "katekemu/model_inversion_defense", "1f32327"
BITS, RATE, SEED = 12, 0.05, 31


def notebook_functions(notebook: str) -> dict:
    """Cell 28's functions, compiled from the notebook's source (the self-check after them is left out)."""
    cells = json.loads(Path(notebook).read_text())["cells"]
    source = next("".join(c["source"]) for c in cells if "def float2bin_gpu" in "".join(c["source"]))
    namespace = {"torch": torch, "device": "cpu"}
    exec(compile(source.split("# evauluation")[0], f"{notebook}:float2bin_gpu", "exec"), namespace)
    return namespace


def inputs() -> dict[str, torch.Tensor]:
    weights = torch.randn(5, 7, generator=seeded(13)) * 0.1
    return {"weights": torch.where(weights == 0, torch.full_like(weights, 1e-3), weights)}  # no exact zeros


def masks_of(original: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
    """The notebook's flipped bit vectors (sign, then magnitude from the top) as mibench's int64 XOR masks."""
    changed = (original != flipped).to(torch.int64)
    weights = torch.tensor([1 << (BITS - 1 - j) for j in range(BITS)], dtype=torch.int64)  # sign: bit BITS - 1
    return (changed * weights).sum(-1)


def ours(golden: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    from mibench.defenses import midas

    w = golden["weights"]
    exponent = midas.fixed_point_exponent(w, BITS)
    quantised = midas.decode_fixed_point(midas.encode_fixed_point(w, exponent, BITS), exponent, BITS, w.dtype)
    with replaced(midas, bit_error_masks=lambda count, bits, rate, generator: golden["masks"].view(-1)):
        corrupted = midas.flip_fixed_point(w, RATE, exponent, BITS, torch.Generator())
    return {"exponent": torch.tensor(float(exponent)), "quantised": quantised, "corrupted": corrupted}


def main() -> None:
    path = official_checkout(REPO, COMMIT)
    f = notebook_functions(str(path / "MIDAS_shallow.ipynb"))
    x = inputs()
    w = x["weights"]
    exponent = torch.ceil(torch.log2(torch.max(w) / (2 ** (BITS - 1) - 1))) + 1  # the cell's formula
    bits = f["float2bin_gpu"](w, exponent, BITS)
    torch.manual_seed(SEED)
    flipped = f["bin_add_bit_error"](bits, RATE)
    official = {
        "exponent": exponent.float(),
        "quantised": f["bin2float_gpu"](bits, exponent, BITS),
        "corrupted": f["bin2float_gpu"](flipped, exponent, BITS),
    }
    golden = {**x, "masks": masks_of(bits, flipped)}
    write_golden(
        "midas",
        {**golden, **official},
        outputs=sorted(official),
        method="midas",
        repository=REPO,
        commit=COMMIT,
        files=["MIDAS_shallow.ipynb (cell 28)"],
        functions=["float2bin_gpu", "integer2bit", "bin2float_gpu", "bin_add_bit_error", "the step exponent"],
        units="12-bit sign-magnitude encoding with the notebook's exponent, decoding, and 5% bit flips at the "
        "notebook's positions",
        injected="the flips: bin_add_bit_error's draws after torch.manual_seed(31), handed to mibench as XOR masks "
        "(`masks` in the golden) through bit_error_masks",
        not_covered="how mibench draws flip positions (geometric gaps, the same Bernoulli law), exact zeros (the "
        "notebook decodes them to NaN; mibench to 0, FIDELITY.md), which layers are corrupted, the deep notebook",
        difference=largest_difference(ours(golden), official),
    )


if __name__ == "__main__":
    main()
