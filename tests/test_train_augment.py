"""PPA's target-training augmentations: torchvision-exact colour adjustments per image, and their use in training."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.functional as TF

from mibench.api.context import RunContext
from mibench.api.recipe import TrainSpec
from mibench.training.augmentation import adjust_colors, random_color_jitter, shift_hue
from mibench.training.classifier import augment_batch, train_classifier
from tests.conftest import tiny_model


def _images() -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.rand(5, 3, 8, 8)
    x[0] = 0.4  # all grey
    x[1, :, :2] = x[1, :1, :2]  # grey pixels inside a colour image
    return x


def test_hue_shift_matches_torchvision():
    x, shift = _images(), torch.tensor([0.1, -0.05, 0.3, -0.5, 0.49])
    expected = torch.stack([TF.adjust_hue(img, float(h)) for img, h in zip(x, shift, strict=True)])
    torch.testing.assert_close(shift_hue(x, shift), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(shift_hue(x, torch.zeros(5)), x, rtol=0, atol=1e-6)


def test_colour_adjustments_match_torchvision_in_order():
    x = _images()
    b, c, s, h = (torch.tensor(v) for v in ([0.8, 1.2, 1.0, 0.9, 1.1], [0.85, 1.1, 1.2, 1.0, 0.8],
                                            [1.1, 0.9, 0.8, 1.2, 1.0], [0.1, -0.05, 0.0, 0.02, -0.1]))  # fmt: skip
    expected = []
    for i, img in enumerate(x):
        img = TF.adjust_contrast(TF.adjust_brightness(img, float(b[i])), float(c[i]))
        expected.append(TF.adjust_hue(TF.adjust_saturation(img, float(s[i])), float(h[i])))
    torch.testing.assert_close(adjust_colors(x, b, c, s, h), torch.stack(expected), rtol=0, atol=1e-5)


def test_random_jitter_stays_in_range_and_zero_strength_is_identity():
    x = _images()
    out = random_color_jitter(x, (0.2, 0.2, 0.1, 0.1), torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1 and not torch.allclose(out, x)
    torch.testing.assert_close(random_color_jitter(x, (0, 0, 0, 0), torch.Generator()), x, rtol=0, atol=1e-5)


def test_training_applies_the_configured_augmentations(defense_data):
    x = _images()
    plain = TrainSpec()
    assert augment_batch(x, plain, torch.Generator()) is x
    ppa = TrainSpec(crop_scale=(0.85, 1.0), color_jitter=(0.2, 0.2, 0.1, 0.1))
    assert not torch.allclose(augment_batch(x, ppa, torch.Generator().manual_seed(1)), x)
    spec = TrainSpec(epochs=2, batch_size=16, lr=0.05, selection="last", crop_scale=(0.85, 1.0),
                     color_jitter=(0.2, 0.2, 0.1, 0.1))  # fmt: skip
    result = train_classifier(tiny_model(0), defense_data.private_train, defense_data.private_test, spec, RunContext())
    assert result.test_accuracy > 0.5  # five classes: chance is 0.2


def test_random_resized_crop_draws_area_and_aspect_ratio_like_torchvision():
    """On coordinate ramps, the output's slope along x is the crop's width fraction and along y its height."""
    from mibench.training.augmentation import AffineAugmentParams, random_affine_augment

    n, size = 400, 32
    coords = (torch.arange(size) + 0.5) / size * 2 - 1  # pixel centres in [-1, 1]
    ramps = torch.stack([coords.expand(size, size), coords[:, None].expand(size, size)])  # x ramp, y ramp
    p = AffineAugmentParams(crop_scale=(0.5, 0.9), crop_ratio=(0.8, 1.2), crop_p=1.0, flip_p=0.0, rotation_p=0.0)
    out = random_affine_augment(ramps.expand(n, 2, size, size).contiguous(), p, torch.Generator().manual_seed(0))
    width = (out[:, 0, 16, 20] - out[:, 0, 16, 10]) / (coords[20] - coords[10])
    height = (out[:, 1, 20, 16] - out[:, 1, 10, 16]) / (coords[20] - coords[10])
    area, ratio = width * height, width / height
    assert area.min() > 0.5 - 1e-4 and area.max() < 0.9 + 1e-4
    assert ratio.min() > 0.8 - 1e-4 and ratio.max() < 1.2 + 1e-4
    assert ratio.min() < 0.85 and ratio.max() > 1.15  # the range is used, not just square crops
    square = random_affine_augment(ramps[None], p.model_copy(update={"crop_ratio": (1.0, 1.0)}), torch.Generator())
    w = (square[0, 0, 16, 20] - square[0, 0, 16, 10]) / (square[0, 1, 20, 16] - square[0, 1, 10, 16])
    assert w == pytest.approx(1.0, abs=1e-4)
