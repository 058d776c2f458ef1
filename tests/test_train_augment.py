"""PPA's target-training augmentations: torchvision-exact colour adjustments per image, and their use in training."""

from __future__ import annotations

import torch
import torchvision.transforms.functional as TF

from mibench.augmentation import adjust_colors, random_color_jitter, shift_hue
from mibench.context import RunContext
from mibench.suite import TrainSpec
from mibench.training import augment_batch, train_classifier
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
