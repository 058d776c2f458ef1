"""CelebA (private and public), FFHQ (public) and generic image folders, preprocessed once into uint8 tensors.

CelebA protocol (KED-MI split used by GMI/KED-MI/PLG-MI/LOMMA/Trap-MID, spec §1): the private set is the 1,000
identities with the most images (27,018 train / 3,009 test in the official lists), the public set 30,000 images of
other identities. Each aligned 178x218 image is cropped to the central 108x108 box (top 55, left 35) and resized to
the target resolution with PIL bilinear (64 for targets, 112 for the FaceNet evaluator). `split: official` reads the
released split lists (`celeba_trainset.txt`, `celeba_testset.txt`, `celeba_ganset.txt`, lines "<file> <label>");
`split: protocol` rebuilds an equivalent split from `identity_CelebA.txt`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from mibench.checkpoints import file_sha256
from mibench.data.base import UNLABELLED, DataBundle, Dataset, ImageSet
from mibench.data.files import cached_sets, load_images, require_dir, require_file
from mibench.errors import DataError
from mibench.params import Params
from mibench.registry import DATASETS

CELEBA_BOX = (35, 55, 143, 163)  # left, top, right, bottom: 108 x 108 at (55, 35) of a 178 x 218 image
FFHQ_BOX = (20, 20, 108, 108)  # 88 x 88 at (20, 20) of a 128 x 128 thumbnail
_SPLIT_HINT = "the KED-MI split lists ship in PLG-MI-Attack/data_files and Trap-MID/data; put them in the CelebA root"
# The released KED-MI split lists (LetheSec/PLG-MI-Attack @ 3cf8735 `data_files/`, identical in Trap-MID's `data/`):
# SHA-256 and line count of each. The lists themselves are the authors' files and are not shipped; these digests make
# every run on the official split provably the same split.
KED_MI_LISTS = {
    "celeba_trainset.txt": ("fd758026dab640c7217797f12e713436b23278087ffd2a70e88a7255259eabf7", 27018),
    "celeba_testset.txt": ("b67ef7f4770fa3606817392f01ae185f1534c38243987928ab881464cb09c434", 3009),
    "celeba_ganset.txt": ("1c2173015bfb2951b117eeb766b4da310be9b82bddf8801b8b531bf80e6b8f49", 30000),
}


class CelebAParams(Params):
    """File layout and split protocol."""

    # Verification never changes the data it lets through: keeping it on dumps as before the field existed.
    added_later: ClassVar[dict[str, Any]] = {"verify_lists": True}

    images_dir: str = "img_align_celeba"
    split: Literal["official", "protocol"] = "official"
    train_list: str = "celeba_trainset.txt"
    test_list: str = "celeba_testset.txt"
    public_list: str = "celeba_ganset.txt"
    verify_lists: bool = Field(
        True, description="official: lists under the released names must be the released KED-MI lists (SHA-256)"
    )
    identity_file: str = "identity_CelebA.txt"
    num_private: int = Field(1000, ge=2, description="protocol: identities with the most images")
    test_fraction: float = Field(0.1, gt=0, lt=1, description="protocol: share of each identity's images for test")
    public_size: int = Field(30000, ge=1, description="protocol: public images from the other identities")
    seed: int = 0


def verify_released_list(path: Path) -> None:
    """A list under a released name must be the released list: its SHA-256 (`KED_MI_LISTS`)."""
    expected = KED_MI_LISTS.get(path.name)
    if expected is None:
        return
    digest = file_sha256(path)
    if digest != expected[0]:
        raise DataError(
            f"{path}: not the released KED-MI split list (SHA-256 {digest[:12]}..., released {expected[0][:12]}..., "
            f"{expected[1]:,} lines): use the file from PLG-MI-Attack/data_files, or data.params.verify_lists: false "
            "for a split of your own (its numbers are then not the papers')"
        )


def read_list(path: Path) -> list[tuple[str, int]]:
    """Lines "<file> <label>" (label may be absent for public lists)."""
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            out.append((parts[0], int(parts[1]) if len(parts) > 1 else UNLABELLED))
        except ValueError:
            raise DataError(f"{path}:{i}: expected '<file> <label>', got {line!r}") from None
    return out


def protocol_split(identities: list[tuple[str, int]], p: CelebAParams) -> dict[str, list[tuple[str, int]]]:
    """Rebuild the MI split from CelebA's identity file.

    Private = the `num_private` identities with most images (ties by id), relabelled 0..K-1 by that rank; per
    identity the last `test_fraction` of its files (sorted) are test; public = `public_size` files of the other
    identities, drawn with the seed.
    """
    counts = Counter(identity for _, identity in identities)
    if len(counts) <= p.num_private:
        raise DataError(f"CelebA has {len(counts)} identities; the protocol needs more than {p.num_private}")
    ranked = sorted(counts, key=lambda i: (-counts[i], i))[: p.num_private]
    label = {identity: k for k, identity in enumerate(ranked)}
    by_identity: dict[int, list[str]] = {}
    for name, identity in sorted(identities):
        by_identity.setdefault(identity, []).append(name)
    train, test = [], []
    for identity in ranked:
        files = by_identity[identity]
        n_test = max(1, round(p.test_fraction * len(files)))
        train += [(f, label[identity]) for f in files[:-n_test]]
        test += [(f, label[identity]) for f in files[-n_test:]]
    others = [f for identity, files in sorted(by_identity.items()) if identity not in label for f in files]
    order = torch.randperm(len(others), generator=torch.Generator().manual_seed(p.seed))[: p.public_size]
    return {"train": train, "test": test, "public": [(others[i], UNLABELLED) for i in order.tolist()]}


@DATASETS.register
class CelebA(Dataset):
    """CelebA aligned faces under the MI protocol (needs `root`: the folder holding img_align_celeba/)."""

    name: ClassVar[str] = "celeba"
    paper: ClassVar[str] = "Liu et al., Deep Learning Face Attributes in the Wild, ICCV 2015; KED-MI split (ICCV 2021)"
    Params = CelebAParams

    @classmethod
    def class_count(cls, params: CelebAParams) -> int:
        """1,000 identities by the official split lists; num_private when the split is rebuilt."""
        return params.num_private if params.split == "protocol" else 1000

    def load(self, root: Path | None, image_size: int, cache_dir: Path) -> DataBundle:
        """Read (once) and preprocess the three parts."""
        p: CelebAParams = self.params
        root = require_dir(Path(root or "."), "CelebA root folder", "set data.root, e.g. root: ${CELEBA_ROOT}")
        images = require_dir(root / p.images_dir, "CelebA image folder", "unzip img_align_celeba.zip into the root")
        split = self._split(root)
        description = {
            "dataset": self.name,
            "params": p.model_dump(),
            "size": image_size,
            "files": {k: len(v) for k, v in split.items()},
            "first": {k: v[:3] for k, v in split.items()},
        }

        def build() -> dict[str, ImageSet]:
            return {
                part: ImageSet(
                    load_images([images / f for f, _ in rows], CELEBA_BOX, image_size),
                    torch.tensor([y for _, y in rows], dtype=torch.long),
                )
                for part, rows in split.items()
            }

        sets = cached_sets(cache_dir, description, build)
        classes = int(sets["train"].labels.max()) + 1 if len(sets["train"]) else 0
        public_ids = self._public_identities(root, [f for f, _ in split["public"]])
        return DataBundle(sets["train"], sets["test"], sets["public"], classes, self.name, public_ids)

    def _public_identities(self, root: Path, public_files: list[str]) -> torch.Tensor | None:
        """CelebA identities of the public files, relabelled 0..n-1 (identity_CelebA.txt); None without the file.

        For defenders that pre-train on them (TL-DMI) and attacks that train on labelled public faces (C2FMI).
        """
        path = root / self.params.identity_file
        if not path.is_file():
            return None
        identity = dict(read_list(path))
        if any(f not in identity for f in public_files):
            return None
        return torch.unique(torch.tensor([identity[f] for f in public_files]), return_inverse=True)[1]

    def _split(self, root: Path) -> dict[str, list[tuple[str, int]]]:
        p: CelebAParams = self.params
        if p.split == "official":
            rows = {}
            for part, name in (("train", p.train_list), ("test", p.test_list), ("public", p.public_list)):
                path = require_file(root / name, f"CelebA {part} split list", _SPLIT_HINT)
                if p.verify_lists:
                    verify_released_list(path)
                rows[part] = read_list(path)
            rows["public"] = [(f, UNLABELLED) for f, _ in rows["public"]]
            return rows
        identity_file = require_file(
            root / p.identity_file,
            "CelebA identity file",
            "identity_CelebA.txt comes with the CelebA annotations ('Anno' folder)",
        )
        return protocol_split(read_list(identity_file), p)


class FFHQParams(Params):
    """Thumbnail folder and how many images to use (70,000 in the papers)."""

    images_dir: str = "thumbnails128x128"
    max_images: int | None = Field(None, ge=1)


@DATASETS.register
class FFHQ(Dataset):
    """FFHQ 128x128 thumbnails as public data (distribution-shift setting): crop 88 at (20, 20), resize (spec §1.1)."""

    name: ClassVar[str] = "ffhq"
    paper: ClassVar[str] = "Karras et al., A Style-Based Generator Architecture for GANs (FFHQ), CVPR 2019"
    Params = FFHQParams

    def load(self, root: Path | None, image_size: int, cache_dir: Path) -> DataBundle:
        """FFHQ has no private part; use it as `data.public` of a suite."""
        raise DataError("ffhq provides public images only: use it under data.public, with CelebA as data.dataset")

    def load_public(self, root: Path | None, image_size: int, cache_dir: Path) -> ImageSet:
        """All PNGs below the thumbnail folder, sorted, cropped and resized (cached)."""
        p: FFHQParams = self.params
        folder = require_dir(
            Path(root or ".") / p.images_dir,
            "FFHQ thumbnail folder",
            "download thumbnails128x128 from the FFHQ release into data.public.root",
        )
        files = sorted(folder.rglob("*.png"))[: p.max_images]
        if not files:
            raise DataError(f"no PNG images found below {folder}")
        description = {
            "dataset": self.name,
            "params": p.model_dump(),
            "size": image_size,
            "n": len(files),
            "first": [str(f.relative_to(folder)) for f in files[:3]],
        }
        sets = cached_sets(
            cache_dir,
            description,
            lambda: {
                "public": ImageSet(load_images(files, FFHQ_BOX, image_size), torch.full((len(files),), UNLABELLED))
            },
        )
        return sets["public"]


# What the image-folder dataset reads (PGM for the AT&T/ORL faces of Fredrikson et al. and MIDAS).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".pgm", ".bmp")


class ImageFolderParams(Params):
    """Which class folders are private (the rest are public), and the test share."""

    private_classes: int | list[str] | None = Field(
        None, description="the first N sorted class folders, or their names; default: the first half"
    )
    test_fraction: float = Field(0.2, gt=0, lt=1)
    crop: tuple[int, int, int, int] | None = Field(None, description="left, top, right, bottom box before resizing")
    grey: bool = Field(False, description="read one grey channel (AT&T faces) instead of RGB")


@DATASETS.register
class ImageFolder(Dataset):
    """A user's own data: one sub-folder per identity, images inside (jpg, jpeg, png, pgm, bmp)."""

    name: ClassVar[str] = "image-folder"
    paper: ClassVar[str] = "generic layout (torchvision ImageFolder convention)"
    Params = ImageFolderParams
    rectangular: ClassVar[bool] = True

    @classmethod
    def class_count(cls, params: ImageFolderParams) -> int | None:
        """The private class folders, when the suite counts or names them."""
        if isinstance(params.private_classes, int):
            return params.private_classes
        return len(params.private_classes) if params.private_classes is not None else None

    def load(self, root: Path | None, image_size: int, cache_dir: Path) -> DataBundle:
        """Private classes split into train/test per class by sorted file name; other classes are public."""
        p: ImageFolderParams = self.params
        root = require_dir(Path(root or "."), "image folder root", "set data.root to a folder of class folders")
        classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        if p.private_classes is None:
            private = classes[: len(classes) // 2]
        elif isinstance(p.private_classes, int):
            private = classes[: p.private_classes]
        else:
            private = list(p.private_classes)
        unknown = sorted(set(private) - set(classes))
        if unknown:
            raise DataError(f"{root}: private class folders not found: {unknown}; present: {classes}")
        rows: dict[str, list[tuple[Path, int]]] = {"train": [], "test": [], "public": []}
        for name in classes:
            files = sorted(f for f in (root / name).iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if name in private:
                n_test = max(1, round(p.test_fraction * len(files)))
                rows["train"] += [(f, private.index(name)) for f in files[:-n_test]]
                rows["test"] += [(f, private.index(name)) for f in files[-n_test:]]
            else:
                rows["public"] += [(f, UNLABELLED) for f in files]
        description = {
            "dataset": self.name,
            "root": str(root.resolve()),
            "params": p.model_dump(),
            "size": image_size,
            "files": {k: len(v) for k, v in rows.items()},
        }
        sets = cached_sets(
            cache_dir,
            description,
            lambda: {
                part: ImageSet(
                    load_images([f for f, _ in r], p.crop, image_size, p.grey),
                    torch.tensor([y for _, y in r], dtype=torch.long),
                )
                for part, r in rows.items()
            },
        )
        return DataBundle(sets["train"], sets["test"], sets["public"], len(private), self.name)
