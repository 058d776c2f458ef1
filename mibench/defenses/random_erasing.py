"""Random Erasing as an MI defense (MIDRE).

"Random Erasing vs. Model Inversion: A Promising Defense or a False Hope?", Tran, Nguyen, Mai, Vandierendonck,
Assent, Kot, Cheung, TMLR 2025. Training images are partially erased at random locations; a model that never sees a
whole face learns features that MI reconstructions of whole faces do not reproduce, at a small cost in accuracy.
Official code: ngoc-nguyen-0/MIDRE_TMLR @ eb1aba1 (`configs/training/targets/ResNet18_FaceScrub_midre_{0.4,0.8}.yaml`,
`utils/training_config_parser.py`), which adds torchvision's `RandomErasing(p=1.0, scale=(0.1, 0.4 or 0.8),
ratio=(1, 1), value=[0.485, 0.456, 0.406])` as the last training transform, after the dataset's crop, jitter and flip
and after `Normalize(0.5, 0.5)`: the fill is therefore 0.5 + 0.5 v in [0, 1] pixels (0.7425, 0.728, 0.703), not the
ImageNet mean it reads as.

mibench sets the recipe's `erasing` (`mibench.api.recipe.RandomErasingSpec`), which the shared training loop and the
defenses with loops of their own (Trap-MID, DP-SGD) apply after their other augmentations, so it composes with every
training defense. The strength knob is the largest erased share (`max_area`: the official 0.4 and 0.8).
"""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

from pydantic import Field, model_validator

from mibench.api.defense import Defense, TrainingSetup
from mibench.api.recipe import RandomErasingSpec
from mibench.params import Params
from mibench.registry import DEFENSES


class RandomErasingParams(Params):
    """The official configuration (`ResNet18_FaceScrub_midre_0.4.yaml`): always erase 10-40% of the image, square."""

    p: float = Field(1.0, ge=0, le=1, description="probability that a training image is erased")
    min_area: float = Field(0.1, gt=0, lt=1, description="smallest erased share of the image")
    max_area: float = Field(0.4, gt=0, lt=1, description="largest erased share (official configs: 0.4 and 0.8)")
    ratio: tuple[float, float] = Field((1.0, 1.0), description="aspect-ratio range of the erased rectangle")
    fill: list[float] = Field(
        default_factory=lambda: RandomErasingSpec().fill,
        description="[0, 1] pixel fill per channel (the official value after its Normalize(0.5, 0.5))",
    )

    @model_validator(mode="after")
    def _ordered(self) -> RandomErasingParams:
        if self.min_area > self.max_area:
            raise ValueError(f"min_area {self.min_area} is above max_area {self.max_area}")
        if not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"ratio must be an increasing positive range, got {self.ratio}")
        return self


@DEFENSES.register
class RandomErasing(Defense):
    """Train on partially erased images (random location and area)."""

    name: ClassVar[str] = "random-erasing"
    paper: ClassVar[str] = (
        "Tran, Nguyen et al., Random Erasing vs. Model Inversion: A Promising Defense or a False Hope?, TMLR 2025"
    )
    official: ClassVar[str | None] = "ngoc-nguyen-0/MIDRE_TMLR @ eb1aba1"
    Params = RandomErasingParams
    strength: ClassVar[tuple[str, ...]] = ("max_area",)

    def configure(self, setup: TrainingSetup) -> TrainingSetup:
        """The recipe with random erasing as its last augmentation."""
        p: RandomErasingParams = self.params
        erasing = RandomErasingSpec(p=p.p, scale=(p.min_area, p.max_area), ratio=p.ratio, fill=p.fill)
        return replace(setup, spec=setup.spec.model_copy(update={"erasing": erasing}))
