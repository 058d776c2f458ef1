"""The plain-PyTorch StyleGAN2 generator and the code-free reader of NVIDIA's network pickles."""

from __future__ import annotations

import pickle
import sys
import types
from collections import OrderedDict
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F

from mibench.errors import CheckpointError
from mibench.gan.stylegan2 import (
    StyleGAN2Config,
    StyleGAN2Generator,
    infer_config,
    modulated_conv2d,
    setup_filter,
    upfirdn2d,
    upsample2d,
)
from mibench.gan.stylegan2_files import load_stylegan2, save_stylegan2

SMALL = StyleGAN2Config(z_dim=16, w_dim=16, resolution=32, mapping_layers=2, channel_base=256, channel_max=32)


def small_generator(seed: int = 0) -> StyleGAN2Generator:
    torch.manual_seed(seed)
    g = StyleGAN2Generator(SMALL).eval()
    with torch.no_grad():  # non-zero noise strengths and w_avg so that every tensor matters
        for name, p in g.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
        g.mapping.w_avg.normal_()
    return g


def test_config_f_has_the_released_size():
    """FFHQ 1024 config F: 18 styles and NVIDIA's 30,370,060 generator parameters."""
    g = StyleGAN2Generator()
    assert g.num_ws == 18
    assert sum(p.numel() for p in g.parameters()) == 30_370_060
    assert infer_config(g.state_dict()) == g.config


def test_upsampling_keeps_a_constant_image_constant_away_from_the_border():
    x = torch.full((1, 2, 6, 6), 0.7)
    y = upsample2d(x, setup_filter([1, 3, 3, 1]))
    assert y.shape == (1, 2, 12, 12)
    torch.testing.assert_close(y[..., 2:-2, 2:-2], torch.full((1, 2, 8, 8), 0.7))


def test_upsampling_modulated_conv_equals_the_generic_zero_insertion_form():
    """Transposed conv + FIR (the official fast path) == zero-insert, FIR with pad (3, 2), convolve (its fallback)."""
    torch.manual_seed(0)
    x, weight, styles = torch.randn(2, 4, 5, 5), torch.randn(6, 4, 3, 3), torch.randn(2, 4)
    f = setup_filter([1, 3, 3, 1])
    fast = modulated_conv2d(x, weight, styles, demodulate=True, up=True, kernel=f)
    up = upfirdn2d(x * styles[:, :, None, None], f, up=2, pad=(3, 2, 3, 2), gain=4)
    generic = F.conv2d(up, weight.flip([2, 3]))
    d = ((weight[None] * styles[:, None, :, None, None]).square().sum([2, 3, 4]) + 1e-8).rsqrt()
    torch.testing.assert_close(fast, generic * d[:, :, None, None])
    assert fast.shape == (2, 6, 10, 10)


def test_modulated_conv_equals_the_fused_grouped_form_and_ignores_style_scale():
    torch.manual_seed(1)
    x, weight, styles = torch.randn(3, 4, 7, 7), torch.randn(5, 4, 3, 3), torch.randn(3, 4)
    out = modulated_conv2d(x, weight, styles, demodulate=True)
    w = weight[None] * styles[:, None, :, None, None]
    w = w / w.square().sum([2, 3, 4], keepdim=True).add(1e-8).sqrt()
    fused = F.conv2d(x.reshape(1, -1, 7, 7), w.reshape(-1, 4, 3, 3), padding=1, groups=3).reshape(3, 5, 7, 7)
    torch.testing.assert_close(out, fused, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(modulated_conv2d(x, weight, 3 * styles, demodulate=True), out, rtol=1e-4, atol=1e-5)


def test_generator_shapes_and_truncation():
    g = small_generator()
    assert g.num_ws == 2 * 5 - 2
    z = torch.randn(3, 16)
    ws = g.mapping(z, psi=0.0, cutoff=4)
    torch.testing.assert_close(ws[:, :4], g.mapping.w_avg.expand(3, 4, -1))
    torch.testing.assert_close(ws[:, 4:], g.mapping(z)[:, 4:])
    img = g.synthesis(g.mapping(z))
    assert img.shape == (3, 3, 32, 32) and torch.isfinite(img).all()
    torch.testing.assert_close(g.synthesis(g.mapping(z)), img)  # constant noise: deterministic
    assert not torch.allclose(g.synthesis(g.mapping(z), noise_mode="none"), img)  # the noise maps are used


def test_converted_file_round_trip_and_strict_loading(tmp_path):
    g = small_generator()
    z = torch.randn(2, 16)
    save_stylegan2(g, tmp_path / "g.pt")
    torch.testing.assert_close(load_stylegan2(tmp_path / "g.pt")(z), g(z))
    torch.save(g.state_dict(), tmp_path / "bare.pt")  # no config: inferred from the shapes
    torch.testing.assert_close(load_stylegan2(tmp_path / "bare.pt")(z), g(z))
    state = g.state_dict()
    state["synthesis.b8.conv0.affine.weightX"] = state.pop("synthesis.b8.conv0.affine.weight")
    torch.save({"config": asdict(SMALL), "state_dict": state}, tmp_path / "renamed.pt")
    with pytest.raises(CheckpointError, match=r"synthesis\.b8\.conv0\.affine\.weight"):
        load_stylegan2(tmp_path / "renamed.pt")
    with pytest.raises(CheckpointError, match=r"ffhq\.pkl"):
        load_stylegan2(tmp_path / "absent.pkl")


# --- NVIDIA network pickles -------------------------------------------------------------------------------------
# A stand-in for NVIDIA's format: every module pickles as torch_utils.persistence._reconstruct_persistent_obj(meta)
# with the defining module's source, class name and __dict__, constructor arguments in a dnnlib EasyDict.

EXECUTED = "stored source code was executed"


def _fake_nvidia_modules(monkeypatch):
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # pragma: no cover - never called by the reader
        raise AssertionError("the official hook must not run")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")

    class EasyDict(dict):
        pass

    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    util.EasyDict = EasyDict
    for name, module in {
        "torch_utils": types.ModuleType("torch_utils"),
        "torch_utils.persistence": persistence,
        "dnnlib": types.ModuleType("dnnlib"),
        "dnnlib.util": util,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    return _reconstruct_persistent_obj, EasyDict


class _Persistent:
    def __init__(self, hook, meta):
        self.hook, self.meta = hook, meta

    def __reduce__(self):
        return self.hook, (self.meta,)


def _as_persistent(module: torch.nn.Module, hook, init_kwargs=None):
    state = {
        "training": False,
        "_parameters": OrderedDict((k, torch.nn.Parameter(v.detach())) for k, v in module._parameters.items()),
        "_buffers": OrderedDict(module._buffers),
        "_non_persistent_buffers_set": set(),
        "_modules": OrderedDict((k, _as_persistent(v, hook)) for k, v in module._modules.items()),
        "_init_kwargs": init_kwargs or {},
    }
    source = f"raise RuntimeError({EXECUTED!r})"
    return _Persistent(hook, {"type": "class", "version": 6, "module_src": source, "class_name": "X", "state": state})


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_network_pickle_is_read_without_executing_its_code(tmp_path, monkeypatch):
    hook, easy = _fake_nvidia_modules(monkeypatch)
    g = small_generator(seed=3)
    kwargs = easy(
        z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3,
        mapping_kwargs=easy(num_layers=2), synthesis_kwargs=easy(channel_base=256, channel_max=32, conv_clamp=256),
    )  # fmt: skip
    blob = {"G": _as_persistent(small_generator(seed=4), hook), "G_ema": _as_persistent(g, hook, kwargs)}
    blob["augment_pipe"], blob["training_set_kwargs"] = _Evil(tmp_path / "pwned"), easy(path="x")
    with (tmp_path / "ffhq.pkl").open("wb") as f:
        pickle.dump(blob, f)
    for name in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"):
        monkeypatch.delitem(sys.modules, name)  # the reader needs none of NVIDIA's code
    loaded = load_stylegan2(tmp_path / "ffhq.pkl")
    assert loaded.config == SMALL
    z = torch.randn(4, 16)
    torch.testing.assert_close(loaded(z, psi=0.7, cutoff=3), g(z, psi=0.7, cutoff=3))
    assert not (tmp_path / "pwned").exists()


def test_a_pickle_without_the_network_is_a_named_error(tmp_path):
    with (tmp_path / "other.pkl").open("wb") as f:
        pickle.dump({"D": 1}, f)
    with pytest.raises(CheckpointError, match="no network 'G_ema'"):
        load_stylegan2(tmp_path / "other.pkl")


@pytest.mark.parametrize(
    ("where", "setting"),
    [
        ("synthesis", {"resample_filter": [1, 2, 1]}),
        ("synthesis", {"use_noise": False}),
        ("synthesis", {"activation": "relu"}),
        ("mapping", {"activation": "linear"}),
    ],
)
def test_a_pickle_with_settings_the_port_lacks_is_refused(tmp_path, monkeypatch, where, setting):
    hook, easy = _fake_nvidia_modules(monkeypatch)
    synthesis = easy(channel_base=256, channel_max=32, conv_clamp=256, **(setting if where == "synthesis" else {}))
    mapping = easy(num_layers=2, **(setting if where == "mapping" else {}))
    kwargs = easy(
        z_dim=16, c_dim=0, w_dim=16, img_resolution=32, img_channels=3, mapping_kwargs=mapping,
        synthesis_kwargs=synthesis,
    )  # fmt: skip
    with (tmp_path / "ffhq.pkl").open("wb") as f:
        pickle.dump({"G_ema": _as_persistent(small_generator(seed=3), hook, kwargs)}, f)
    key = next(iter(setting))
    with pytest.raises(CheckpointError, match=f"{where}_kwargs.{key}"):
        load_stylegan2(tmp_path / "ffhq.pkl")


def test_a_pickle_asking_for_huge_layers_is_refused_before_allocating(tmp_path, monkeypatch):
    import time

    hook, easy = _fake_nvidia_modules(monkeypatch)
    kwargs = easy(
        z_dim=16, c_dim=0, w_dim=16, img_resolution=1024, img_channels=3, mapping_kwargs=easy(num_layers=2),
        synthesis_kwargs=easy(channel_base=1 << 30, channel_max=1 << 20),
    )  # fmt: skip
    with (tmp_path / "ffhq.pkl").open("wb") as f:
        pickle.dump({"G_ema": _as_persistent(small_generator(seed=3), hook, kwargs)}, f)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match="channel_max=1048576"):
        load_stylegan2(tmp_path / "ffhq.pkl")
    assert time.perf_counter() - start < 5  # named before any network is built


def test_a_converted_file_with_a_crafted_config_is_refused_before_any_network_is_built(tmp_path, monkeypatch):
    import mibench.gan.stylegan2 as module
    from mibench.errors import CheckpointError
    from mibench.gan.stylegan2_files import load_stylegan2

    built = []
    monkeypatch.setattr(module.StyleGAN2Generator, "__init__", lambda self, config: built.append(config))
    crafted = tmp_path / "crafted.pt"
    torch.save({"config": {"resolution": 1 << 20, "channel_max": 1 << 20}, "state_dict": {}}, crafted)
    with pytest.raises(CheckpointError, match=r"out of range: channel_max=1048576 \(at most 2048\), resolution="):
        load_stylegan2(crafted)
    odd = tmp_path / "odd.pt"
    torch.save({"config": {"resolution": "64; rm -rf /"}, "state_dict": {}}, odd)
    with pytest.raises(CheckpointError, match="values that are not numbers"):
        load_stylegan2(odd)
    assert built == []


def test_a_file_whose_config_asks_for_gigabytes_but_holds_a_few_tensors_is_refused_before_allocating(tmp_path):
    # the configuration is within the bounds (a 4.4 GB network), the state dict a single tensor: refused by
    # comparing against a weightless (meta-device) copy, in a fresh process whose peak memory stays small
    import subprocess

    path = tmp_path / "bounds.pt"
    config = StyleGAN2Config(4096, 4096, 4096, 4, 32, 1 << 17, 2048, 256, 0.01)
    torch.save({"config": asdict(config), "state_dict": {"mapping.fc0.weight": torch.zeros(2, 2)}}, path)
    script = (
        "import sys\n"
        "from mibench.errors import CheckpointError\n"
        "from mibench.gan.stylegan2_files import load_stylegan2\n"
        "try:\n"
        f"    load_stylegan2({str(path)!r})\n"
        "except CheckpointError as exc:\n"
        "    print('refused', 'missing keys' in str(exc))\n"
        # the peak of this process's own memory (VmHWM starts afresh at exec; ru_maxrss would include the
        # parent's size at fork, several GB late in a test run)
        "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) // 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "refused True"
    assert int(out[1]) < 1500, out  # MiB: torch itself, not the 4.4 GB network
