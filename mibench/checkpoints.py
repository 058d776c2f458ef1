"""Reading checkpoints safely and loading them strictly.

Official MI checkpoints are `{'state_dict': DataParallel_model.state_dict()}` with `module.`-prefixed keys, and the
official attack scripts load them with `strict=False`, so a key mismatch silently leaves random weights (spec §3).
mibench reads with `weights_only=True`, unwraps and strips prefixes, then loads strictly: a missing, unexpected or
mis-shaped key is an error that names it.

Released files the field shares (KED-MI's FaceNet evaluator and targets, torchvision's ImageNet weights, the FID
Inception) are listed in `mibench/reference/released_checkpoints.json` by file name: a file read under a listed name
must have the listed SHA-256 (or torch.hub's 8-hex prefix in its name), and a released classifier must reach its
published clean accuracy on the suite's test split before anything reads it (`check_released_accuracy`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mibench.errors import CheckpointError

_WRAPPERS = ("state_dict", "model", "model_state_dict")
_MAX_WRAPPING = 8


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file (cache keys and records name checkpoints by content, not by path).

    Memoised per process on the file's path, size and modification time, so that planning and every measurement
    naming the same weights hash them once.
    """
    stat = Path(path).stat()
    return _sha256_of(str(path), stat.st_size, stat.st_mtime_ns)


@cache
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_file(explicit: str | None, default_name: str, what: str, provenance: str, hint: str) -> Path:
    """A released weights file: `explicit`, else $MIBENCH_WEIGHTS/<default_name>.

    Nothing is downloaded: an absent file is a CheckpointError naming it, where it came from (`provenance`) and where
    it goes (the $MIBENCH_WEIGHTS folder, or the metric parameter `hint`).
    """
    path = Path(explicit) if explicit else None
    if path is None and os.environ.get("MIBENCH_WEIGHTS"):
        path = Path(os.environ["MIBENCH_WEIGHTS"]) / default_name
    if path is None:
        raise CheckpointError(
            f"{what} needs {default_name} ({provenance}): put it in the folder $MIBENCH_WEIGHTS names, or give the "
            f"metric params: {hint}"
        )
    if not path.is_file():
        raise CheckpointError(
            f"{what} weights not found: {path} (expected {default_name}, {provenance}; mibench never downloads)"
        )
    return path


# SHA-256 by path of the files outside the cache the running job's plan keyed it on (set by the runner around a job):
# whatever this module (or the network-pickle reader) reads from such a path is checked against it, however deep in a
# model's constructor the read happens (an architecture's `pretrained` file).
_PLANNED: ContextVar[dict[str, str] | None] = ContextVar("mibench_planned_files", default=None)


@contextmanager
def planned_files(hashes: Mapping[str, str]) -> Iterator[None]:
    """Within the block, reads of the files in `hashes` ({path: SHA-256}) must find the planned bytes."""
    token = _PLANNED.set({str(Path(p)): digest for p, digest in hashes.items()})
    try:
        yield
    finally:
        _PLANNED.reset(token)


def planned_sha256(path: str | Path) -> str | None:
    """The SHA-256 the running job's plan recorded for `path`, None outside a job or for a file it did not key."""
    return (_PLANNED.get() or {}).get(str(Path(path)))


def read_verified_bytes(path: Path, sha256: str, what: str) -> bytes:
    """The bytes of `path`, read once and checked against the SHA-256 the plan keyed the job on."""
    data = path.read_bytes()
    require_planned(path, hashlib.sha256(data).hexdigest(), sha256, what)
    return data


def read_planned_bytes(path: Path, what: str) -> bytes | None:
    """The bytes of a planned file, checked against its planned SHA-256; None when the job did not key the file."""
    planned = planned_sha256(path)
    return None if planned is None else read_verified_bytes(path, planned, what)


def read_checkpoint(
    path: str | Path, *, what: str = "checkpoint", sha256: str | None = None, released_check: bool = True
) -> object:
    """The contents of a checkpoint file, read with `torch.load(weights_only=True)` onto the CPU.

    A missing, corrupt or unsafe file is a CheckpointError naming it. With `sha256` (what the plan hashed into the
    job's key), the bytes are read once, hashed and loaded from memory: a file replaced after planning is an error,
    never published under the old file's hash. A file under a released name must be that file
    (`check_released_digest`), unless the reader labels other files itself (`released_check=False`: the published
    FID names a non-released Inception's number `fd_inception`).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} file not found: {path}")
    check_declared_size(path, what)
    source: Path | io.BytesIO = path
    sha256 = sha256 or planned_sha256(path)
    if sha256 is not None:
        source = io.BytesIO(read_verified_bytes(path, sha256, what))
    if released_check:
        check_released_digest(path, sha256, what)
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise CheckpointError(f"cannot read {what} {path}: {exc}") from None


# A released classifier whose clean accuracy on the suite's test split falls this far below the published one is
# loaded wrongly (a loader, normalisation, resolution or split error reads as chance accuracy), not just on other
# data.
ACCURACY_TOLERANCE = 0.10


@cache
def released_checkpoints() -> dict[str, dict[str, Any]]:
    """The released weight files mibench knows, by file name (`reference/released_checkpoints.json`)."""
    text = (resources.files("mibench") / "reference" / "released_checkpoints.json").read_text()
    return json.loads(text)["files"]


def check_released_digest(path: Path, sha256: str | None, what: str) -> None:
    """A file under a released name must be the released file: its SHA-256, or torch.hub's prefix of it.

    `sha256`: the digest already known (the plan's); otherwise the file is hashed, and only when its name is listed.
    """
    entry = released_checkpoints().get(path.name)
    if entry is None or entry["kind"] == "metric":  # metrics label a non-released file's number as a stand-in
        return
    sha256 = sha256 or file_sha256(path)
    full, prefix = entry.get("sha256"), entry.get("sha256_prefix")
    if (full and sha256 != full) or (prefix and not sha256.startswith(prefix)):
        raise CheckpointError(
            f"{what} {path}: SHA-256 {sha256[:12]}... is not that of the released {path.name} "
            f"({(full or prefix)[:12]}..., {entry['source']}): a different or damaged file under the released name"
        )


def check_released_accuracy(path: str | Path, accuracy: float, images: int, what: str) -> str | None:
    """A released classifier's clean test accuracy against its published one, before anything reads it.

    Far below (more than `ACCURACY_TOLERANCE`): a CheckpointError naming both numbers. Returns the published value's
    description for the record (None for files the manifest does not list or gives no accuracy for).
    """
    entry = released_checkpoints().get(Path(path).name)
    if entry is None or "accuracy" not in entry:
        return None
    published = entry["accuracy"]
    if accuracy < published - ACCURACY_TOLERANCE:
        raise CheckpointError(
            f"{what} {Path(path).name}: {100 * accuracy:.2f}% clean test accuracy on this suite's test split "
            f"({images} images), published {100 * published:.2f}% ({entry['source']}): a wrong loader, "
            "normalisation, resolution or split; nothing that reads it runs"
        )
    return f"{100 * published:.2f}% ({entry['accuracy_source']})"


def require_planned(path: Path, found: str, planned: str | None, what: str) -> None:
    """The bytes a job read must be the ones its plan keyed it on (SHA-256); a file replaced since is an error."""
    if planned is not None and found != planned:
        raise CheckpointError(
            f"{what} {path} changed since the run was planned (SHA-256 {found[:12]}..., planned {planned[:12]}...): "
            "run again to plan with the new file"
        )


def check_declared_size(path: Path, what: str) -> None:
    """Refuse a zip checkpoint whose entries declare more bytes than the file could hold, before anything is read.

    `torch.save` stores its tensors uncompressed, so a real checkpoint declares about its own size; a crafted zip of
    deflated zeros declares gigabytes in a few megabytes and would be allocated whole by the loader.
    """
    if not zipfile.is_zipfile(path):
        return
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"cannot read {what} {path}: {exc}") from None
    if declared > 2 * size + (1 << 20):
        raise CheckpointError(
            f"{what} {path} declares {declared:,} bytes of tensors in a {size:,}-byte file (compressed entries; "
            "torch.save writes none): refused before loading"
        )


def read_state_dict(
    path: str | Path, *, what: str = "checkpoint", sha256: str | None = None, released_check: bool = True
) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: unwrapped from {'state_dict': ...} and with `module.` prefixes removed.

    `sha256`: the content the plan keyed the job on (see `read_checkpoint`).
    """
    obj = read_checkpoint(path, what=what, sha256=sha256, released_check=released_check)
    seen: set[int] = set()
    while isinstance(obj, Mapping) and len(obj) >= 1 and any(k in obj for k in _WRAPPERS):
        # A crafted file can nest wrappers deeply or make a dict contain itself: bound the unwrapping.
        if id(obj) in seen or len(seen) >= _MAX_WRAPPING:
            raise CheckpointError(f"{what} {path}: state-dict wrappers nest in a cycle or over {_MAX_WRAPPING} deep")
        seen.add(id(obj))
        obj = next(obj[k] for k in _WRAPPERS if k in obj)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{what} {path} holds no state dict")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{what} {path}: entries that are not named tensors: {bad[:5]}")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def state_problems(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> list[str]:
    """How `state` fails to fit a module whose state dict is `own`: keys, shapes, types, non-finite values."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    shared = sorted(set(own) & set(state))
    types = [k for k in shared if own[k].dtype.is_floating_point != state[k].dtype.is_floating_point]
    nonfinite = [k for k in shared if state[k].dtype.is_floating_point and not torch.isfinite(state[k]).all()]
    problems = []
    if missing:
        problems.append(f"missing keys {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_few(unexpected)}")
    if shapes:
        problems.append(
            "shape mismatch " + ", ".join(f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in shapes[:5])
        )
    if types:
        problems.append("wrongly typed " + ", ".join(f"{k}: {state[k].dtype} vs {own[k].dtype}" for k in types[:5]))
    if nonfinite:
        problems.append(f"non-finite values in {_few(nonfinite)}")
    return problems


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load every parameter and buffer of `module` from `state`; any mismatch raises naming the keys."""
    problems = state_problems(module.state_dict(), state)
    if problems:
        raise CheckpointError(f"{source} does not match {type(module).__name__}: " + "; ".join(problems))
    module.load_state_dict(state)


def build_strict(build: Callable[[], nn.Module], state: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """`build()` loaded strictly from `state`, the fit checked on a weightless copy before anything is allocated.

    The copy is built on PyTorch's meta device (shapes without storage): a file whose configuration asks for a
    network of gigabytes but holds a few tensors is refused before the gigabytes are allocated.
    """
    with torch.device("meta"):
        skeleton = build()
    problems = state_problems(skeleton.state_dict(), state)
    if problems:
        raise CheckpointError(f"{source} does not match {type(skeleton).__name__}: " + "; ".join(problems))
    module = build()
    module.load_state_dict(state)
    return module


def load_part(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    prefixes: tuple[str, ...],
    source: str,
    exclude: tuple[str, ...] = (),
) -> None:
    """Initialise the submodules named by `prefixes` (e.g. a pretrained backbone) strictly; leave the rest.

    Submodules named by `exclude` (new heads inside the backbone) keep their own initialisation.
    """
    own = module.state_dict()
    # torchvision's ImageNet files predate BatchNorm's `num_batches_tracked` counter (PyTorch 0.4.1); it is not a
    # weight, so a file without it keeps the module's own.
    wanted = {
        k
        for k in own
        if k.startswith(prefixes)
        and not (exclude and k.startswith(exclude))
        and not (k.endswith("num_batches_tracked") and k not in state)
    }
    missing = sorted(wanted - set(state))
    shapes = sorted(k for k in wanted & set(state) if own[k].shape != state[k].shape)
    if missing or shapes:
        raise CheckpointError(
            f"{source} cannot initialise {', '.join(prefixes)}: missing {_few(missing)}, shape mismatch {_few(shapes)}"
        )
    module.load_state_dict({**own, **{k: state[k] for k in wanted}})


def _few(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")
