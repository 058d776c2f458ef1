"""Fredrikson's shallow targets and the AT&T-style PGM image folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mibench.data.celeba import ImageFolder, ImageFolderParams
from mibench.models.base import build_classifier


@pytest.mark.parametrize(
    ("arch", "params", "expected"),
    [
        ("softmax-regression", {}, 40 * 3 * 32 * 32 + 40),
        ("mlp", {"hidden": 30}, (3 * 32 * 32 * 30 + 30) + (30 * 40 + 40)),
    ],
)
def test_shallow_parameter_counts_and_outputs(arch, params, expected):
    model = build_classifier(arch, params, num_classes=40, in_channels=3, image_size=32)
    assert sum(p.numel() for p in model.parameters()) == expected
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    out = model(x)
    assert out.logits.shape == (2, 40)
    out.logits[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_image_folder_reads_pgm_faces(tmp_path):
    rng = np.random.default_rng(0)
    for person in ("s1", "s2", "s3"):
        (tmp_path / person).mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (28, 23), dtype=np.uint8)).save(tmp_path / person / f"{i}.pgm")
    bundle = ImageFolder(ImageFolderParams(private_classes=3, test_fraction=0.2)).load(tmp_path, 16, tmp_path / "c")
    assert len(bundle.private_train) == 12 and len(bundle.private_test) == 3 and len(bundle.public) == 0
    assert bundle.private_train.images.shape[1:] == (3, 16, 16)
