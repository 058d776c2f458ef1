"""Random Erasing (MIDRE, TMLR 2025): torchvision's RandomErasing as the official configuration applies it, the
erased region's share, and composition with other defenses through the recipe."""

from __future__ import annotations

import pytest
import torch

from mibench.api.defense import TrainingSetup
from mibench.api.recipe import TrainSpec
from mibench.defenses.random_erasing import RandomErasing, RandomErasingParams
from mibench.training.augmentation import random_erasing


def test_erasing_equals_torchvision_random_erasing_after_midres_normalisation():
    # MIDRE's pipeline: ToTensor, (crop, jitter, flip), Normalize(0.5, 0.5), RandomErasing(p 1, scale (0.1, 0.4),
    # ratio (1, 1), value [0.485, 0.456, 0.406]); the same draws (torchvision: the global stream) must give the same
    # pixels, mibench filling with 0.5 + 0.5 v in [0, 1] pixels
    from torchvision import transforms as T

    images = torch.rand(6, 3, 20, 20, generator=torch.Generator().manual_seed(0))
    official = T.RandomErasing(p=1.0, scale=(0.1, 0.4), ratio=(1, 1), value=[0.485, 0.456, 0.406])
    torch.manual_seed(5)
    expected = torch.stack([official((x - 0.5) / 0.5) * 0.5 + 0.5 for x in images])
    p = RandomErasingParams()
    got = random_erasing(images, p.p, (p.min_area, p.max_area), p.ratio, p.fill, torch.Generator().manual_seed(5))
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    assert not torch.equal(got, images)


def test_erased_share_lies_in_the_area_range_and_p_zero_erases_nothing():
    images = torch.zeros(200, 1, 32, 32)
    fill = [1.0]
    erased = random_erasing(images, 1.0, (0.1, 0.4), (1.0, 1.0), fill, torch.Generator().manual_seed(1))
    share = erased.flatten(1).mean(1)  # zeros erased to one: the share of erased pixels
    side = 32
    # a square of side round(sqrt(s) * 32) for s in [0.1, 0.4]: between round(10.1)^2 and round(20.2)^2 pixels
    assert share.min() >= 10**2 / side**2 and share.max() <= 20**2 / side**2
    assert 0.2 < share.mean() < 0.3  # E[s] = 0.25 (rounding moves it by under a pixel row)
    assert torch.equal(random_erasing(images, 0.0, (0.1, 0.4), (1.0, 1.0), fill, torch.Generator()), images)
    grey = random_erasing(images[:1], 1.0, (0.3, 0.3), (1.0, 1.0), [0.2, 0.4, 0.6], torch.Generator().manual_seed(2))
    torch.testing.assert_close(grey.unique(), torch.tensor([0.0, 0.4]))  # grey images take the mean of the fill


def test_the_defense_sets_the_recipe_and_composes_with_a_recipe_of_another_defense():
    from mibench.defenses.negls import NegLS, NegLSParams

    setup = RandomErasing(RandomErasingParams(max_area=0.8)).configure(TrainingSetup(TrainSpec()))
    assert setup.spec.erasing.scale == (0.1, 0.8) and setup.spec.erasing.p == 1.0
    both = NegLS(NegLSParams()).configure(setup)  # NegLS replaces the optimiser; the erasing stays
    assert both.spec.erasing == setup.spec.erasing and both.spec.optimizer == "adam"
    with pytest.raises(ValueError, match="above max_area"):
        RandomErasingParams(min_area=0.5, max_area=0.4)


def test_a_target_trains_with_erased_images(defense_data, monkeypatch):
    import mibench.training.classifier as loop
    from mibench.api.context import RunContext
    from mibench.training.stack import DefenseStack
    from tests.conftest import tiny_model

    seen = []
    original = loop.random_erasing
    monkeypatch.setattr(loop, "random_erasing", lambda x, *a: seen.append(x.shape) or original(x, *a))
    spec = TrainSpec(epochs=2, batch_size=32, lr=0.05, selection="last")
    trained = DefenseStack([RandomErasing(RandomErasingParams())]).fit(tiny_model(), defense_data, spec, RunContext())
    assert seen and all(s[0] == 32 for s in seen)  # every training batch, after the other augmentations
    assert trained.test_accuracy > 1 / defense_data.num_classes


def test_a_recipe_without_erasing_dumps_as_before_the_field_existed():
    # cache keys hash the dumped recipe: adding the field must not move the keys of every existing target
    assert "erasing" not in TrainSpec().model_dump(mode="json")
    erasing = TrainSpec(erasing={"scale": (0.1, 0.8)}).model_dump(mode="json")["erasing"]
    assert erasing["scale"] == [0.1, 0.8] and TrainSpec.model_validate(TrainSpec().model_dump()).erasing is None
