"""StyleGAN2 parity: NVIDIA's StyleGAN2-ADA `Generator` (training/networks.py), run on the CPU with its reference
ops, against mibench's plain-PyTorch `StyleGAN2Generator`.

A small unconditional generator (32x32, z and w 32-d, 4 mapping layers, channel base 1024 / max 64, conv_clamp 256),
its weights and buffers (constant noise maps, w_avg) from one seeded stream in NVIDIA's state-dict order, loaded
strictly into mibench's network by name. Compared: w = mapping(z) with truncation psi 0.7, and the images of
synthesis(w) with `noise_mode='const'` (mibench returns [0, 1], NVIDIA [-1, 1]: mibench's output is mapped back).

    MIBENCH_OFFICIAL_STYLEGAN2_ADA_PYTORCH=DIR python -m parity.stylegan2
"""

from __future__ import annotations

import torch

from parity import _harness as h

REPO, COMMIT = "NVlabs/stylegan2-ada-pytorch", "d72cc7d"
CONFIG = {"z_dim": 32, "w_dim": 32, "resolution": 32, "img_channels": 3, "mapping_layers": 4, "channel_base": 1024,
          "channel_max": 64, "conv_clamp": 256}  # fmt: skip
PSI = 0.7


def inputs() -> dict[str, torch.Tensor]:
    return {"z": torch.randn(3, CONFIG["z_dim"], generator=h.seeded(43))}


def ours(golden: dict) -> dict[str, torch.Tensor]:
    from mibench.checkpoints import load_strict
    from mibench.gan.stylegan2 import StyleGAN2Config, StyleGAN2Generator

    generator = StyleGAN2Generator(StyleGAN2Config(**CONFIG)).eval()
    load_strict(generator, h.seeded_state(golden["layout"], seed=300), "NVIDIA's layout")
    with torch.no_grad():
        ws = generator.mapping(golden["z"], PSI)
        images = generator.synthesis(ws)
    return {"ws": ws, "images": images}


def main() -> None:
    path = h.official_checkout(REPO, COMMIT)
    x = inputs()
    with h.official_modules(path, "training", "torch_utils", "dnnlib"):
        from training.networks import Generator

        generator = Generator(
            z_dim=CONFIG["z_dim"], c_dim=0, w_dim=CONFIG["w_dim"], img_resolution=CONFIG["resolution"],
            img_channels=CONFIG["img_channels"], mapping_kwargs={"num_layers": CONFIG["mapping_layers"]},
            synthesis_kwargs={"channel_base": CONFIG["channel_base"], "channel_max": CONFIG["channel_max"],
                              "conv_clamp": CONFIG["conv_clamp"], "num_fp16_res": 0},
        ).eval()  # fmt: skip
        layout = h.seed_network(generator, seed=300)
        with torch.no_grad():
            ws = generator.mapping(x["z"], None, truncation_psi=PSI)
            images = generator.synthesis(ws, noise_mode="const", force_fp32=True)
    official = {"ws": ws, "images": images}
    golden = {**x, "layout": layout}
    h.write_golden(
        "stylegan2",
        {**golden, **official},
        outputs=sorted(official),
        method="ppa,if-gmi",
        component="NVIDIA's StyleGAN2-ADA generator, the prior PPA and IF-GMI load",
        repository=REPO,
        commit=COMMIT,
        files=["training/networks.py (Generator, MappingNetwork, SynthesisNetwork)", "torch_utils/ops (ref impls)"],
        functions=["Generator.mapping (truncation 0.7)", "Generator.synthesis (noise_mode const, fp32)"],
        units="a 32x32 generator: w from z with truncation, and the images from w (modulated convolutions, "
        "upfirdn2d, bias_act and clamping through NVIDIA's reference ops on the CPU)",
        injected="weights and buffers from one seeded stream in NVIDIA's state-dict order; no random draws "
        "(constant noise)",
        not_covered="the 1024x1024 FFHQ network itself (weights not downloadable), fp16 layers, random noise, "
        "NVIDIA's CUDA kernels, the pickle loader (its own tests)",
        difference=h.largest_difference(ours(golden), official),
    )


if __name__ == "__main__":
    main()
