"""Reading image files into uint8 tensors once, with errors that say which file to put where."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from mibench.data.base import ImageSet, height_width
from mibench.errors import DataError
from mibench.hashing import content_key


def require_file(path: Path, what: str, hint: str) -> Path:
    """`path` if it is a file, else a `DataError` naming it and where it comes from."""
    if not path.is_file():
        raise DataError(f"missing {what}: {path} ({hint})")
    return path


def require_dir(path: Path, what: str, hint: str) -> Path:
    """`path` if it is a folder, else a `DataError` naming it."""
    if not path.is_dir():
        raise DataError(f"missing {what}: {path} ({hint})")
    return path


Size = int | tuple[int, int]  # a square side, or (height, width)


def load_crop_resize(path: Path, box: tuple[int, int, int, int] | None, size: Size, grey: bool = False) -> torch.Tensor:
    """Open an image as RGB (or grey), crop (left, top, right, bottom), resize (PIL bilinear), uint8 C x H x W.

    `size` is a square side or (height, width); an image already of that size is not resampled.
    """
    height, width = height_width(size)
    try:
        with Image.open(path) as img:
            img = img.convert("L" if grey else "RGB")
            if box is not None:
                img = img.crop(box)
            if img.size != (width, height):
                img = img.resize((width, height), Image.BILINEAR)
            array = np.asarray(img, dtype=np.uint8).copy()
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None
    if grey:
        array = array[:, :, None]
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def load_images(
    paths: list[Path], box: tuple[int, int, int, int] | None, size: Size, grey: bool = False
) -> torch.Tensor:
    """Stack `load_crop_resize` over `paths` (N x C x H x W uint8; C is 1 for grey, else 3)."""
    if not paths:
        return torch.zeros(0, 1 if grey else 3, *height_width(size), dtype=torch.uint8)
    return torch.stack([load_crop_resize(p, box, size, grey) for p in paths])


def cached_sets(cache_dir: Path, description: dict, build: Callable[[], dict[str, ImageSet]]) -> dict[str, ImageSet]:
    """Preprocess once: the image sets `build` returns are saved as one tensor file keyed by `description`."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{description.get('dataset', 'data')}-{content_key(description)}.pt"
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        return {k: ImageSet(v["images"], v["labels"]) for k, v in saved.items()}
    sets = build()
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    torch.save({k: {"images": s.images, "labels": s.labels} for k, s in sets.items()}, tmp)
    os.replace(tmp, path)
    return sets
