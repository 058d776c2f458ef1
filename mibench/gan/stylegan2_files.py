"""StyleGAN2 generator files: a converted file (config and state dict) or NVIDIA's network pickle, loaded strictly.

The configuration of either is checked against `check_config_bounds` before the network is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path

import torch

from mibench.checkpoints import build_strict, read_checkpoint
from mibench.errors import CheckpointError
from mibench.gan.nvidia_pickle import read_network_pickle
from mibench.gan.stylegan2 import StyleGAN2Config, StyleGAN2Generator, check_config_bounds, infer_config


def load_stylegan2(path: str | Path, *, what: str = "StyleGAN2 generator") -> StyleGAN2Generator:
    """The generator of a converted file or of NVIDIA's network pickle (G_ema), loaded strictly.

    Raises CheckpointError naming the file when it is absent, unreadable or does not match the architecture.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"{what} file not found: {path}. Download NVIDIA's StyleGAN2-ADA network pickle (e.g. ffhq.pkl from "
            "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl) and point "
            "attacks[].params.gan.checkpoint at it"
        )
    if path.suffix == ".pkl":
        state, config = read_network_pickle(path, "G_ema")
    else:
        obj = read_checkpoint(path, what=what)
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"{what} {path} holds no state dict")
        state = obj.get("state_dict", obj)
        config = _stored_config(obj["config"], path) if "config" in obj else infer_config(state)
    check_config_bounds(config)  # before the network is built: a crafted config could ask for gigabytes
    # the network is built only once the file's tensors are known to fill it (a file at the bounds costs ~4.4 GB)
    generator = build_strict(lambda: StyleGAN2Generator(config), state, str(path))
    return generator.eval()


def _stored_config(stored: object, path: Path) -> StyleGAN2Config:
    """The config a converted file stores: known fields with numbers (or null for conv_clamp), else an error."""
    known = {f.name for f in fields(StyleGAN2Config)}
    if not isinstance(stored, Mapping) or set(stored) - known:
        extra = sorted(set(stored) - known) if isinstance(stored, Mapping) else type(stored).__name__
        raise CheckpointError(f"{path}: not a StyleGAN2 configuration ({extra})")
    if not all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in stored.values()):
        raise CheckpointError(f"{path}: the StyleGAN2 configuration holds values that are not numbers")
    return StyleGAN2Config(**stored)


def save_stylegan2(generator: StyleGAN2Generator, path: str | Path) -> None:
    """A converted file: config and state dict, readable with weights_only=True."""
    torch.save({"config": asdict(generator.config), "state_dict": generator.state_dict()}, path)
