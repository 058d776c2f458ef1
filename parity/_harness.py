"""Glue shared by the parity generators: the official checkouts, CPU-only patches, the golden files and manifest.

A generator imports an official repository from a local export of the commit FIDELITY.md names, runs its functions
on tiny inputs built from a fixed seed, runs mibench's counterpart on the same inputs, and writes both the official
outputs (the golden) and the largest difference it saw (the manifest). Generators never run in CI; the tests in
`tests/test_parity.py` compare mibench against the goldens alone.
"""

from __future__ import annotations

import ast
import contextlib
import datetime
import hashlib
import json
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
GOLDENS = ROOT / "tests" / "goldens"
MANIFEST = GOLDENS / "manifest.json"


def official_checkout(repository: str, commit: str) -> Path:
    """The local export of `repository` at `commit`, from $MIBENCH_OFFICIAL_<NAME> (NAME: the repository's name).

    Export it from a mirror with `git -C MIRROR archive COMMIT | tar -x -C DIR`; the folder's own name is free.
    """
    variable = "MIBENCH_OFFICIAL_" + repository.split("/")[1].upper().replace("-", "_")
    value = os.environ.get(variable)
    if not value or not Path(value).is_dir():
        sys.exit(f"set {variable} to an export of {repository} at commit {commit} (git archive {commit} | tar -x)")
    return Path(value)


@contextlib.contextmanager
def official_modules(path: Path, *names: str) -> Iterator[None]:
    """`path` first on sys.path, and the official repository's generic module names (utils, loss) fresh in and out."""

    def purge() -> None:
        for name in list(sys.modules):
            if name.split(".")[0] in names:
                del sys.modules[name]

    purge()
    sys.path.insert(0, str(path))
    try:
        yield
    finally:
        sys.path.remove(str(path))
        purge()


@contextlib.contextmanager
def on_cpu() -> Iterator[None]:
    """The official code's `.cuda()` calls leave tensors and modules where they are (the CPU)."""
    saved = torch.Tensor.cuda, nn.Module.cuda
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    nn.Module.cuda = lambda self, *args, **kwargs: self  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.Tensor.cuda, nn.Module.cuda = saved


def seeded(seed: int) -> torch.Generator:
    """A CPU generator for the tiny inputs (never the global stream)."""
    return torch.Generator().manual_seed(seed)


def largest_difference(ours: dict[str, torch.Tensor], official: dict[str, torch.Tensor]) -> float:
    """The largest max |ours - official| / max |official| over the outputs (what tests/test_parity.py bounds)."""
    worst = 0.0
    for name, expected in official.items():
        got, expected = ours[name].detach().double(), expected.detach().double()
        scale = float(expected.abs().max()) if expected.numel() else 0.0
        worst = max(worst, float((got - expected).abs().max()) / max(scale, 1e-12) if got.numel() else 0.0)
    return worst


def write_golden(
    name: str,
    tensors: dict[str, torch.Tensor | list],
    *,
    outputs: list[str],
    method: str,
    repository: str,
    commit: str,
    files: list[str],
    functions: list[str],
    units: str,
    injected: str,
    not_covered: str,
    difference: float,
    component: str | None = None,
) -> None:
    """Save `tensors` as tests/goldens/<name>.pt and its manifest entry; `outputs` names the official results in it.

    `component`: a shared piece from another official repository than the method's own (NVIDIA's StyleGAN2 in PPA).
    """
    GOLDENS.mkdir(parents=True, exist_ok=True)
    path = GOLDENS / f"{name}.pt"
    # tensors, and plain lists (parameter names and shapes) that torch.load(weights_only=True) reads back
    torch.save({k: v.detach().cpu().clone().contiguous() if isinstance(v, torch.Tensor) else v
                for k, v in tensors.items()}, path)  # fmt: skip
    generator = Path(sys.argv[0]).resolve()
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {}
    manifest[name] = {
        "method": method,
        **({"component": component} if component else {}),
        "outputs": outputs,
        "repository": repository,
        "commit": commit,
        "files": files,
        "functions": functions,
        "units": units,
        "injected": injected,
        "not_covered": not_covered,
        "largest_relative_difference": float(f"{difference:.3g}"),
        "generator": str(generator.relative_to(ROOT)),
        "generator_sha256": hashlib.sha256(generator.read_bytes()).hexdigest(),
        "golden_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
    }
    MANIFEST.write_text(json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")
    print(f"{path.relative_to(ROOT)}: {len(tensors)} tensors; largest relative difference of mibench {difference:.3g}")


def stub_modules(**attributes: dict[str, object]) -> None:
    """Empty stand-ins for packages the official code imports but the parity units never call (ipdb, progress)."""
    for name, attrs in attributes.items():
        module = types.ModuleType(name.replace("__", "."))
        module.__dict__.update(attrs)
        sys.modules.setdefault(name.replace("__", "."), module)


def compiled(path: Path, name: str, namespace: dict) -> object:
    """The class or function `name` ("Class.method" for a method) compiled alone from `path`'s source."""
    scope: ast.AST = ast.parse(path.read_text())
    *owners, name = name.split(".")
    for owner in owners:
        scope = next(n for n in ast.walk(scope) if isinstance(n, ast.ClassDef) and n.name == owner)
    node = next(n for n in ast.walk(scope) if isinstance(n, ast.ClassDef | ast.FunctionDef) and n.name == name)
    node.decorator_list = []
    exec(compile(ast.Module([node], []), f"{path}:{name}", "exec"), namespace)
    return namespace[name]


class Call(nn.Module):
    """A function as a module: stand-in networks the official code calls (`.eval()`, `.cuda()`) and mibench wraps."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


def seeded_state(layout: list, seed: int) -> dict[str, torch.Tensor]:
    """Values for every [name, shape, is-float] of a layout in order: N(0, 1/fan-in), BatchNorm variances in
    [0.5, 1.5), integer buffers 0. Large official weights are regenerated from this, never stored in a golden."""
    g = seeded(seed)
    state = {}
    for name, shape, is_float in layout:
        shape = tuple(shape)
        if not is_float:
            state[name] = torch.zeros(shape, dtype=torch.long)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=g) + 0.5
        else:
            fan_in = int(torch.tensor(shape[1:]).prod()) if len(shape) > 1 else max(shape[0] if shape else 1, 1)
            state[name] = torch.randn(shape, generator=g) / fan_in**0.5
    return state


def seed_network(net: nn.Module, seed: int) -> list:
    """Fill an official network from `seeded_state` in its own state-dict order; returns the layout a golden stores."""
    layout = [[k, list(v.shape), v.is_floating_point()] for k, v in net.state_dict().items()]
    net.load_state_dict(seeded_state(layout, seed))
    return layout


def load_in_order(net: nn.Module, state: dict[str, torch.Tensor], reshape: bool = False) -> None:
    """Load `state`'s values into `net` by position, for networks whose parameters correspond one to one in order
    under other names; shapes must agree (with `reshape`, sizes, for tensors stored in another layout)."""
    own = net.state_dict()
    assert len(own) == len(state), f"{len(own)} tensors against {len(state)}"
    loaded = {}
    for (key, mine), value in zip(own.items(), state.values(), strict=True):
        fits = mine.numel() == value.numel() if reshape else mine.shape == value.shape
        assert fits, f"{key}: {tuple(mine.shape)} against {tuple(value.shape)}"
        loaded[key] = value.reshape(mine.shape)
    net.load_state_dict(loaded)


@contextlib.contextmanager
def replaced(module: object, **attributes: object) -> Iterator[None]:
    """Set attributes of a module for the block: mibench's sources of randomness replaced by the golden's draws, or
    an official repository's calls that cannot run here (a download) replaced by ones that can."""
    saved = {name: getattr(module, name) for name in attributes}
    for name, value in attributes.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def without_download(module: object, *builders: str) -> contextlib.AbstractContextManager[None]:
    """torchvision builders that old official code calls with `pretrained=True`, building randomly initialised
    networks instead (the seeded weights replace the ImageNet ones; the architecture is torchvision's own)."""

    def offline(build):
        return lambda pretrained=False, **kwargs: build(weights=None)

    return replaced(module, **{name: offline(getattr(module, name)) for name in builders})
