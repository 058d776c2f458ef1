"""The training recipe a target is trained with (the suite's `target.train`), as defenses and attacks receive it."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from mibench.params import Params


class RandomErasingSpec(Params):
    """torchvision's `RandomErasing` of each training image: a rectangle of random area and place, filled."""

    p: float = Field(1.0, ge=0, le=1, description="probability that an image is erased")
    scale: tuple[float, float] = Field((0.1, 0.4), description="range of the erased share of the image's area")
    ratio: tuple[float, float] = Field((1.0, 1.0), description="range of the rectangle's aspect ratio (square: 1)")
    fill: list[float] = Field(
        default_factory=lambda: [0.7425, 0.728, 0.703],
        description="fill per channel in [0, 1] pixels (grey images: their mean); MIDRE's value [0.485, 0.456, "
        "0.406] is given after its Normalize(0.5, 0.5), i.e. 0.5 + 0.5 v in pixels",
    )


class TrainSpec(Params):
    """Classifier training hyperparameters; defaults are the KED-MI/Trap-MID VGG16 recipe (spec §3)."""

    # Specs without erasing dump as they did before the field existed, so cache keys stay what they were.
    added_later: ClassVar[dict[str, Any]] = {"erasing": None}

    epochs: int = Field(50, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0)
    weight_decay: float = Field(1e-4, ge=0)
    milestones: list[int] = Field(default_factory=list, description="MultiStepLR epochs; none in the official recipe")
    gamma: float = Field(0.1, gt=0)
    hflip: bool = Field(True, description="random horizontal flip, p = 0.5 (the dataset-level augmentation)")
    crop_scale: tuple[float, float] | None = Field(
        None, description="random resized crop with this area range, e.g. PPA's [0.85, 1]; none by default"
    )
    crop_ratio: tuple[float, float] = Field((1.0, 1.0), description="its aspect-ratio range (PPA's configs: square)")
    color_jitter: tuple[float, float, float, float] | None = Field(
        None, description="ColorJitter (brightness, contrast, saturation, hue), e.g. PPA's [0.2, 0.2, 0.1, 0.1]"
    )
    erasing: RandomErasingSpec | None = Field(
        None, description="random erasing after the other augmentations (the random-erasing defense sets it)"
    )
    drop_last: bool = True
    sampler: Literal["shuffle", "identity"] = Field(
        "shuffle", description="identity: batches of batch_size / images_per_identity identities (BiDO's sampler)"
    )
    images_per_identity: int = Field(4, ge=1)
    # The official code keeps the epoch with the best *test* accuracy (test-set model selection). It is the
    # default for faithfulness; `last` is the methodologically clean choice.
    selection: Literal["best_test", "last"] = "best_test"
    # Throughput on CUDA only (ignored on CPU): bf16 autocast and channels_last memory format. The official code
    # trains in float32, so float32 is the default; `amp: true` is an explicit speed option, recorded with the target.
    amp: bool = False
    channels_last: bool = True
