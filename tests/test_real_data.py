"""Real-data loaders on fixture folders the tests generate, and the bundled digit datasets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import mibench.data.files as files
from mibench.data.base import UNLABELLED
from mibench.data.celeba import FFHQ, CelebA, CelebAParams, FFHQParams, ImageFolder, ImageFolderParams
from mibench.data.digits import Digits, DigitsProtocolParams, MNIST5k
from mibench.errors import DataError


def write_image(path, colour, size=(178, 218)):
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    array[:] = colour
    array[55:163, 35:143] = 255 - np.array(colour)  # the crop box gets the inverse colour
    Image.fromarray(array).save(path)


@pytest.fixture
def celeba_root(tmp_path):
    """6 identities: ids 1-3 have 10 images, 4-6 have 4; aligned 178x218 JPEGs and identity_CelebA.txt."""
    root = tmp_path / "celeba"
    lines, n = [], 0
    for identity, count in [(1, 10), (2, 10), (3, 10), (4, 4), (5, 4), (6, 4)]:
        for _ in range(count):
            n += 1
            name = f"{n:06d}.jpg"
            write_image(root / "img_align_celeba" / name, (identity * 30, 0, 0))
            lines.append(f"{name} {identity}")
    (root / "identity_CelebA.txt").write_text("\n".join(lines) + "\n")
    return root


def protocol(**kw):
    return CelebA(CelebAParams(split="protocol", num_private=3, test_fraction=0.2, public_size=8, **kw))


def test_celeba_protocol_structure(celeba_root, tmp_path):
    bundle = protocol().load(celeba_root, 16, tmp_path / "cache")
    assert bundle.num_classes == 3
    assert (len(bundle.private_train), len(bundle.private_test), len(bundle.public)) == (24, 6, 8)
    assert torch.bincount(bundle.private_train.labels).tolist() == [8, 8, 8]
    assert set(bundle.public.labels.tolist()) == {UNLABELLED}
    # public identity labels (for TL-DMI and C2FMI) follow identity_CelebA.txt, relabelled 0..2
    red_of_identity = {0: 135, 1: 105, 2: 75}  # identities 4, 5, 6
    for image, identity in zip(bundle.public.images, bundle.public_identities.tolist(), strict=True):
        assert abs(int(image[0, 8, 8]) - red_of_identity[identity]) <= 3

    # Identity-disjoint: public images come from identities 4-6 (red 120..180), private from 1-3 (30..90).
    # The crop keeps only the inverse-coloured centre: red channel 255 - 30 k.
    def near(values, targets):
        return all(min(abs(v - t) for t in targets) <= 3 for v in values)

    private_red = bundle.private_train.images[:, 0, 8, 8].tolist()
    public_red = bundle.public.images[:, 0, 8, 8].tolist()
    assert near(private_red, [225, 195, 165]) and near(public_red, [135, 105, 75])
    assert bundle.private_train.images.shape == (24, 3, 16, 16)


def test_celeba_is_preprocessed_once(celeba_root, tmp_path, monkeypatch):
    first = protocol().load(celeba_root, 16, tmp_path / "cache")
    monkeypatch.setattr(files, "load_crop_resize", lambda *a: pytest.fail("decoded again"))
    second = protocol().load(celeba_root, 16, tmp_path / "cache")
    assert torch.equal(first.private_train.images, second.private_train.images)


def test_celeba_official_lists(celeba_root, tmp_path):
    (celeba_root / "celeba_trainset.txt").write_text("000001.jpg 0\n000002.jpg 0\n000011.jpg 1\n")
    (celeba_root / "celeba_testset.txt").write_text("000003.jpg 0\n000012.jpg 1\n")
    (celeba_root / "celeba_ganset.txt").write_text("000031.jpg\n000035.jpg\n")
    with pytest.raises(DataError, match=r"celeba_trainset\.txt: not the released KED-MI split list .*27,018 lines"):
        CelebA(CelebAParams()).load(celeba_root, 8, tmp_path / "cache")
    bundle = CelebA(CelebAParams(verify_lists=False)).load(celeba_root, 8, tmp_path / "cache")
    assert bundle.private_train.labels.tolist() == [0, 0, 1] and bundle.num_classes == 2
    assert len(bundle.public) == 2
    assert bundle.public_identities.tolist() == [0, 1]  # 000031 is identity 4, 000035 identity 5
    (celeba_root / "identity_CelebA.txt").unlink()
    assert CelebA(CelebAParams(verify_lists=False)).load(celeba_root, 8, tmp_path / "cache").public_identities is None


def test_celeba_missing_files_are_named(celeba_root, tmp_path):
    with pytest.raises(DataError, match=r"missing CelebA train split list: .*celeba_trainset\.txt \(the KED-MI"):
        CelebA(CelebAParams()).load(celeba_root, 16, tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"missing CelebA image folder: .*empty/img_align_celeba"):
        protocol().load(tmp_path / "empty", 16, tmp_path / "cache")
    (celeba_root / "identity_CelebA.txt").unlink()
    with pytest.raises(DataError, match="missing CelebA identity file"):
        protocol().load(celeba_root, 16, tmp_path / "cache")


def test_corrupted_image_is_named(celeba_root, tmp_path):
    (celeba_root / "img_align_celeba" / "000004.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match=r"cannot read image .*000004\.jpg"):
        protocol().load(celeba_root, 16, tmp_path / "cache")


def test_ffhq_public_only(tmp_path):
    for i in range(3):
        write_image(tmp_path / "ffhq" / "thumbnails128x128" / "00000" / f"{i:05d}.png", (i * 50, 10, 10), (128, 128))
    public = FFHQ(FFHQParams()).load_public(tmp_path / "ffhq", 16, tmp_path / "cache")
    assert public.images.shape == (3, 3, 16, 16) and set(public.labels.tolist()) == {UNLABELLED}
    with pytest.raises(DataError, match="public images only"):
        FFHQ(FFHQParams()).load(tmp_path / "ffhq", 16, tmp_path / "cache")
    with pytest.raises(DataError, match="missing FFHQ thumbnail folder"):
        FFHQ(FFHQParams()).load_public(tmp_path / "nope", 16, tmp_path / "cache")


def test_image_folder(tmp_path):
    for c, name in enumerate(["alice", "bob", "carol", "dave"]):
        for i in range(5):
            write_image(tmp_path / "faces" / name / f"{i}.png", (c * 60, 0, 0), (20, 20))
    bundle = ImageFolder(ImageFolderParams(private_classes=["alice", "carol"])).load(
        tmp_path / "faces", 8, tmp_path / "cache"
    )
    assert bundle.num_classes == 2 and (len(bundle.private_train), len(bundle.private_test), len(bundle.public)) == (
        8,
        2,
        10,
    )
    with pytest.raises(DataError, match=r"private class folders not found: \['eve'\]"):
        ImageFolder(ImageFolderParams(private_classes=["eve"])).load(tmp_path / "faces", 8, tmp_path / "cache")


@pytest.mark.parametrize("cls", [MNIST5k, Digits])
def test_bundled_digits_follow_gmi_protocol(cls):
    bundle = cls(DigitsProtocolParams()).load(None, 32, None)
    assert bundle.num_classes == 5 and bundle.channels == 3 and bundle.image_size == 32
    assert set(bundle.private_train.labels.tolist()) == set(range(5))
    assert set(bundle.public.labels.tolist()) == {UNLABELLED}
    n_private = len(bundle.private_train) + len(bundle.private_test)
    assert len(bundle.private_test) == pytest.approx(0.2 * n_private, abs=5)
    # Grey digits expanded to RGB.
    assert torch.equal(bundle.private_train.images[:, 0], bundle.private_train.images[:, 2])


def test_the_released_list_check_leaves_cache_keys_as_they_were():
    """Verification never changes the data it lets through: the default dumps without the field (stable keys);
    turning it off is part of the key."""
    assert "verify_lists" not in CelebAParams().model_dump(mode="json")
    off = CelebAParams(verify_lists=False).model_dump(mode="json")
    assert off["verify_lists"] is False and CelebAParams.model_validate(off).verify_lists is False
