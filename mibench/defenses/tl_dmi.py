"""TL-DMI: "Model Inversion Robustness: Can Transfer Learning Help?" (Ho et al., CVPR 2024).

The private data should shape as few layers as possible: the network is pre-trained on public data, then only the
layers after a split are trained on the private data; the front layers keep their public weights. Official code:
hosytuyen/TL-DMI @ e3495df (`models/classify.py` `VGG16_TL`, `FaceNet64`, `IR152`; `train_classifier.py`;
`config/celeba/training_classifiers/classify.json`), read for this file; the MI toolbox integrates the same scheme.

As the official code does it:

* Split: children 0..k of the architecture's layer list get `requires_grad = False` (`i <= freeze_layers`), k = 26
  of the VGG16-BN body's 44 children, k = 46 of IR-152's 50 body units, k = 5 of FaceNet64's (IR-50) 24 units
  (`Classifier.transfer_split`). The IR nets' input layer is meant to be frozen too, but the official line has a typo
  (`param.requries_grad = False`) that leaves it trainable; `freeze_input_layer: false` (the default) reproduces
  what the code does, `true` what it meant.
* Pre-training: VGG16 starts from torchvision's ImageNet weights (`public_dataset: IN1K`), the IR nets from their
  MS-Celeb-1M backbones: the architecture's own `pretrained` weights (`pretrain: architecture`). The head is new.
  Data sets the official code can also pre-train on (FaceScrub, PubFig) are public images with identity labels:
  `pretrain: public` trains a copy of the network on the bundle's public split and keeps everything but the head
  (mibench's route for test models, which have no released weights). `auto` takes the architecture's weights when
  it has them, else the public pre-training, except on FaceNet64: the official `get_classifier` loads a backbone only
  for the names `FaceNet`, `FaceNet_all`, `FaceNet_64`, `IR50` and `IR152`, so the run named `FaceNet64` trains a
  randomly initialised IR-50 whose front units are frozen at random values; `auto` follows the code there
  (`pretrain: none`, random weights even when the suite gives a backbone), `architecture` what it meant.
* Frozen BatchNorm layers still update their running statistics during private training (the whole network is in
  train mode, as in the official loop); their weights do not change.
* Recipe (classify.json, VGG16): SGD lr 0.08, momentum 0.9, weight decay 1e-4, batch 64, 200 epochs, no schedule
  (the `adjust_epochs` are read only for a model named "Test"), best test epoch kept. IR-152: lr 0.01, 100 epochs;
  FaceNet64: lr 0.008, batch 8, 200 epochs (set them in the suite's `recipe`).

TL-DMI composes with every defense that trains through the shared loop or its own (BiDO, MID, NegLS, Trap-MID,
DP-SGD): `prepare` only initialises and freezes; the loop trains whatever still requires gradients.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field
from torch import nn

from mibench.api.context import RunContext
from mibench.api.defense import Defense, RecipeParams, TrainingSetup
from mibench.api.metric import Measurement
from mibench.api.recipe import TrainSpec
from mibench.data.base import DataBundle, ImageSet
from mibench.errors import MibenchError
from mibench.models.base import Classifier
from mibench.params import Params
from mibench.registry import DEFENSES
from mibench.training.classifier import train_classifier


class TLDMIRecipe(RecipeParams):
    """The official VGG16 CelebA recipe (`classify.json`)."""

    optimizer: Literal["sgd", "adam"] | None = "sgd"
    lr: float | None = 0.08
    weight_decay: float | None = 1e-4
    batch_size: int | None = 64
    epochs: int | None = 200
    milestones: list[int] | None = Field(default_factory=list)


class TLDMIParams(Params):
    """Where to split, how to pre-train, and the private fine-tuning recipe (a null field keeps the suite's)."""

    freeze_until: int | None = Field(
        None, ge=0, description="last frozen index of the architecture's layer list; default: its published split"
    )
    freeze_input_layer: bool = Field(False, description="also freeze the IR nets' input layer (the official typo)")
    pretrain: Literal["auto", "architecture", "public", "none"] = Field(
        "auto",
        description="auto: the architecture's weights, else public pre-training; on FaceNet64 `none`, as the official "
        "code (its backbone is never loaded: a name typo); none: random initial weights",
    )
    pretrain_epochs: int = Field(20, ge=1, description="epochs of `pretrain: public` (suite recipe otherwise)")
    recipe: TLDMIRecipe = Field(default_factory=TLDMIRecipe)


# Where the official code's own behaviour overrides `auto`: `get_classifier` loads a backbone only for the names
# FaceNet, FaceNet_all, FaceNet_64, IR50 and IR152 (models/classify.py:1006-1011); the configured name is FaceNet64.
OFFICIAL_ROUTES = {"facenet64": "none"}


@DEFENSES.register
class TLDMI(Defense):
    """Public pre-training, then private fine-tuning of the layers after the split only."""

    name: ClassVar[str] = "tl-dmi"
    paper: ClassVar[str] = "Ho et al., Model Inversion Robustness: Can Transfer Learning Help? (TL-DMI), CVPR 2024"
    official: ClassVar[str | None] = "hosytuyen/TL-DMI @ e3495df"
    # 2: `auto` on FaceNet64 starts from random weights, as the official code (its backbone load never runs)
    version: ClassVar[int] = 2
    Params = TLDMIParams
    strength: ClassVar[tuple[str, ...]] = ("freeze_until",)

    def __init__(self, params: TLDMIParams):
        super().__init__(params)
        self._stats: list[Measurement] = []

    def configure(self, setup: TrainingSetup) -> TrainingSetup:
        """The paper's fine-tuning recipe."""
        return setup.with_recipe(self.params.recipe)

    def prepare(self, model: nn.Module, data: DataBundle, spec: TrainSpec, ctx: RunContext) -> nn.Module:
        """Pre-train (on public data, unless the architecture's weights are the pre-training), then freeze."""
        if not isinstance(model, Classifier) or not model.transfer_layers():
            raise MibenchError(
                f"tl-dmi: architecture {getattr(model, 'name', type(model).__name__)!r} lists no "
                "layers to freeze (Classifier.transfer_layers)"
            )
        p: TLDMIParams = self.params
        has_weights = bool(getattr(model.params, "pretrained", None))
        route = p.pretrain
        if route == "auto":
            route = OFFICIAL_ROUTES.get(model.name) or ("architecture" if has_weights else "public")
        if route == "architecture" and not has_weights:
            raise MibenchError(
                f"tl-dmi: pretrain: architecture, but {model.name!r} has no `pretrained` weights in "
                "the suite (give target.params.pretrained, or pretrain: public)"
            )
        if route == "public":
            pretrain_on_public(model, data, spec.model_copy(update={"epochs": p.pretrain_epochs}), ctx)
        elif route == "none":  # every layer back to its initialisation (the runner seeds it from the job key)
            for module in model.modules():
                if module is not model and hasattr(module, "reset_parameters"):
                    module.reset_parameters()
        split = p.freeze_until if p.freeze_until is not None else model.transfer_split
        layers = model.transfer_layers()
        if split is None or split >= len(layers):
            raise MibenchError(
                f"tl-dmi: {model.name!r} has {len(layers)} layers to split and no published split; "
                "give freeze_until below that"
            )
        frozen = layers[: split + 1]
        stem = model.transfer_stem()
        if p.freeze_input_layer and stem is not None:
            frozen.append(stem)
        for layer in frozen:
            layer.requires_grad_(False)
        total = sum(q.numel() for q in model.parameters())
        fixed = sum(q.numel() for q in model.parameters() if not q.requires_grad)
        details = {"split": split, "layers": len(layers), "pretraining": route, "frozen_parameters": fixed}
        self._stats = [Measurement("tl_frozen_fraction", fixed / total, None, "fraction", details)]
        return model

    def preparation_stats(self) -> list[Measurement]:
        """The frozen share of the parameters, the split and the pre-training route."""
        return self._stats


def pretrain_on_public(model: Classifier, data: DataBundle, spec: TrainSpec, ctx: RunContext) -> None:
    """Pre-train `model` on the public identities, its head excepted.

    A twin with one output per public identity is trained on the public split; every weight but the head is then
    copied into `model`, whose head keeps its own initialisation.
    """
    labels = data.public_identities
    if labels is None:
        raise MibenchError(
            f"tl-dmi: pretrain: public needs identity labels of the public images, which dataset {data.name!r} "
            "does not give (use the architecture's pretrained weights: pretrain: architecture)"
        )
    classes = int(labels.max()) + 1
    twin = type(model)(classes, model.in_channels, model.image_size, model.params)
    twin.load_state_dict(_same_shapes(model.state_dict(), twin.state_dict()), strict=False)
    public = ImageSet(data.public.images, labels.long())
    train_classifier(
        twin,
        public,
        public,
        spec.model_copy(update={"selection": "last"}),
        ctx,
        description="TL-DMI public pre-training",
    )
    model.load_state_dict(_same_shapes(twin.state_dict(), model.state_dict()), strict=False)


def _same_shapes(source: dict, target: dict) -> dict:
    """The entries of `source` that fit `target` (everything but a head sized for other classes)."""
    return {k: v for k, v in source.items() if k in target and target[k].shape == v.shape}
