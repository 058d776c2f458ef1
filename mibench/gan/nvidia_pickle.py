"""Reading NVIDIA's StyleGAN2-ADA network pickles without running the code inside them.

NVIDIA's `.pkl` files store each network as a "persistent" object: a call to
`torch_utils.persistence._reconstruct_persistent_obj(meta)` whose `meta` holds the *source code* of the module that
defines the class (executed by `exec` when the official code unpickles it), the class name and the object's
`__dict__` (its `_parameters`, `_buffers`, `_modules` and `_init_kwargs`). Tensors inside are
`torch._utils._rebuild_tensor_v2` / `_rebuild_parameter` calls over storages serialised with `torch.save`.

`read_network_pickle` unpickles with a restricted `find_class`: the persistent-object hook becomes an inert record
of (class name, state) and the stored source is never executed; tensor storages are read with
`torch.load(weights_only=True)`; only a fixed list of tensor-rebuilding functions and plain containers resolve, and
every other global (dnnlib's EasyDict, NumPy, the augmentation pipeline's classes) becomes an inert placeholder.
The result is a flat state dict with NVIDIA's names and the generator's constructor arguments.
"""

from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path
from typing import Any

import torch

from mibench.checkpoints import read_planned_bytes
from mibench.errors import CheckpointError
from mibench.gan.stylegan2 import StyleGAN2Config, check_config_bounds


class PersistentRecord:
    """What a persistent object is reduced to: its class name and instance state, nothing executed."""

    def __init__(self, meta: Any):
        meta = meta if isinstance(meta, dict) else {}
        self.class_name = meta.get("class_name", "?")
        self.state = meta.get("state") if isinstance(meta.get("state"), dict) else {}


class Inert:
    """Placeholder for any other global: accepts construction and state, keeps nothing, runs nothing."""

    def __new__(cls, *args, **kwargs):
        """Any constructor arguments are dropped."""
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


class InertDict(dict):
    """dnnlib.EasyDict and similar dict subclasses: kept as plain dicts (their items are constructor arguments)."""

    def __setstate__(self, state):
        pass


def _storage_from_bytes(data: bytes):
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _rebuild_tensor(storage, offset, size, stride, *rest):
    untyped = storage._untyped_storage  # a TypedStorage from torch.load
    return torch.empty(0, dtype=storage.dtype, device=untyped.device).set_(untyped, offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *rest):
    return data


_ALLOWED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): PersistentRecord,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("dnnlib.util", "EasyDict"): InertDict,
    ("dnnlib", "EasyDict"): InertDict,
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        return _ALLOWED.get((module, name), Inert)


def _flatten(record: PersistentRecord, prefix: str, out: dict[str, torch.Tensor]) -> None:
    state = record.state
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if isinstance(value, torch.Tensor):
                out[prefix + name] = value
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, PersistentRecord):
            _flatten(child, f"{prefix}{name}.", out)


def _config_from_init_kwargs(kwargs: dict[str, Any]) -> StyleGAN2Config:
    if kwargs.get("c_dim", 0):
        raise CheckpointError(
            f"conditional StyleGAN2 (c_dim={kwargs['c_dim']}) is not supported; PPA uses unconditional"
        )
    synthesis = dict(kwargs.get("synthesis_kwargs") or {})
    mapping = dict(kwargs.get("mapping_kwargs") or {})
    if synthesis.get("architecture", "skip") != "skip":
        raise CheckpointError(f"only the 'skip' synthesis architecture is supported, got {synthesis['architecture']!r}")
    # Settings the port hard-codes at NVIDIA's defaults: a pickle that changes them would render other images.
    unsupported = [
        f"synthesis_kwargs.{key}={synthesis[key]!r}"
        for key, ok in (
            ("resample_filter", lambda v: v is None or list(v) == [1, 3, 3, 1]),
            ("use_noise", lambda v: v is True),
            ("activation", lambda v: v == "lrelu"),
        )
        if key in synthesis and not ok(synthesis[key])
    ]
    if mapping.get("activation", "lrelu") != "lrelu":
        unsupported.append(f"mapping_kwargs.activation={mapping['activation']!r}")
    if unsupported:
        raise CheckpointError(
            f"the StyleGAN2 port implements NVIDIA's defaults (resample_filter [1, 3, 3, 1], use_noise, lrelu); this "
            f"pickle sets {', '.join(unsupported)}"
        )
    default = StyleGAN2Config()
    config = StyleGAN2Config(
        z_dim=int(kwargs.get("z_dim", default.z_dim)),
        w_dim=int(kwargs.get("w_dim", default.w_dim)),
        resolution=int(kwargs.get("img_resolution", default.resolution)),
        img_channels=int(kwargs.get("img_channels", default.img_channels)),
        mapping_layers=int(mapping.get("num_layers", default.mapping_layers)),
        channel_base=int(synthesis.get("channel_base", default.channel_base)),
        channel_max=int(synthesis.get("channel_max", default.channel_max)),
        conv_clamp=synthesis.get("conv_clamp", default.conv_clamp),
        mapping_lr_multiplier=float(mapping.get("lr_multiplier", default.mapping_lr_multiplier)),
    )
    check_config_bounds(config)
    return config


def read_network_pickle(path: str | Path, network: str = "G_ema"):
    """(state dict, StyleGAN2Config) of `network` in an NVIDIA StyleGAN2-ADA pickle, without executing its code."""
    path = Path(path)
    planned = read_planned_bytes(path, "NVIDIA network pickle") if path.is_file() else None
    try:
        with io.BytesIO(planned) if planned is not None else path.open("rb") as f:
            data = _RestrictedUnpickler(f).load()
    except Exception as exc:  # a truncated or foreign file fails in many ways
        raise CheckpointError(f"cannot read NVIDIA network pickle {path}: {exc}") from None
    record = data.get(network) if isinstance(data, dict) else None
    if not isinstance(record, PersistentRecord):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: no network {network!r} in the pickle (found {keys})")
    state: dict[str, torch.Tensor] = {}
    _flatten(record, "", state)
    init_kwargs = record.state.get("_init_kwargs") or {}
    return state, _config_from_init_kwargs(dict(init_kwargs))
