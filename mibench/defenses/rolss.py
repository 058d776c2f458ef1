"""RoLSS, SSF and TTS: MI-resilient residual architectures (Koh, Ho, Nguyen, Cheung, ECCV 2024).

"On the Vulnerability of Skip Connections to Model Inversion Attacks": skip connections let an inversion's gradient
bypass the residual branches, and those of the last stage matter most. Three designs follow:

* **RoLSS**, Removal of Last Stage Skip-connections: the last stage's shortcuts are multiplied by 0.
* **SSF**, Skip-connection Scaling Factor: they are multiplied by a factor in (0, 1) instead.
* **TTS**, Two-stage Training Scheme: the network is first trained with all its skips, then with the last stage's
  removed (or scaled), starting from the first stage's weights.

Official code: Pillowkoh/RoLSS @ 304b147 (`models/torchvision/models/resnet.py`, `models/classifier.py`,
`configs/training/targets/*/skip.yaml`). What it does, and mibench with it:

* each block computes `out += skip * identity` when its stage's `skip` is non-zero and leaves the shortcut (the
  projection included) out at 0 (`mibench.models.skips`);
* the configs give one factor per stage: `[1, 1, 1, 0]` for ResNet-34/50/101/152 (RoLSS), `[1, 1, 1, 0.6]` for
  ResNet-18 (SSF's factor, mibench's `ssf` default);
* the released `_make_layer` hard-codes `split=0.8` for `layer3` of every ResNet, full baselines included: the blocks
  of stage 3 from `int(0.8 n)` on have no shortcut whatever the config says (`stage3_split`; 1.0 is the paper's
  architecture). mibench's undefended ResNets are torchvision's, so the released baselines' stage-3 tail is a
  difference between the `none` row and the paper's "full" one (FIDELITY.md);
* training: the configs' Adam lr 1e-3, MultiStep [75, 90] x 0.1, 100 epochs, batch 128 (the FaceScrub recipe the
  suites give; the defense sets no recipe of its own).

TTS is in neither the release nor the two re-implementations read (DaredEVAL's `defenses/rolss.py`, the MI toolbox's
`SkipConnectionWrapper`); mibench trains a first stage with every skip (`first_stage_epochs`, the suite's recipe)
and continues from its weights with the scaled skips, and FIDELITY.md says this is read from the paper's summary.
Concatenative skips (the released DenseNet variant keeps a share of the concatenated channels) are not implemented.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from torch import nn

from mibench.api.context import RunContext
from mibench.api.defense import Defense
from mibench.api.metric import Measurement
from mibench.api.recipe import TrainSpec
from mibench.data.base import DataBundle
from mibench.errors import MibenchError
from mibench.models.base import Classifier
from mibench.models.skips import scale_block, stage_scales_per_block
from mibench.params import Params
from mibench.registry import DEFENSES
from mibench.training.classifier import train_classifier

PAPER = "Koh, Ho, Nguyen, Cheung, On the Vulnerability of Skip Connections to Model Inversion Attacks ({}), ECCV 2024"


class RoLSSParams(Params):
    """Shortcut factors per stage (the released configs' `skip`), and the TTS first stage."""

    last_stage_scale: float = Field(
        0.0, ge=0, description="factor of the last stage's shortcuts: 0 removes them (RoLSS), (0, 1) scales (SSF)"
    )
    stage_scales: list[float] | None = Field(
        None, description="one factor per stage, front to back (overrides last_stage_scale; the configs' `skip`)"
    )
    stage3_split: float = Field(
        0.8,
        ge=0,
        le=1,
        description="stage 3's blocks from int(split x n) on lose their shortcut (the release's hard-coded 0.8 for "
        "every ResNet; 1.0: the paper's architecture); only with four or more stages",
    )
    two_stage: bool = Field(False, description="TTS: first train with every skip, then with the scaled ones")
    first_stage_epochs: int | None = Field(None, ge=1, description="TTS's first stage; default the suite's epochs")


@DEFENSES.register
class RoLSS(Defense):
    """Remove (or scale) the last stage's skip connections of a residual target."""

    name: ClassVar[str] = "rolss"
    paper: ClassVar[str] = PAPER.format("RoLSS")
    official: ClassVar[str | None] = "Pillowkoh/RoLSS @ 304b147"
    Params = RoLSSParams
    strength: ClassVar[tuple[str, ...]] = ("last_stage_scale",)

    def __init__(self, params: RoLSSParams):
        super().__init__(params)
        self._stats: list[Measurement] = []

    @classmethod
    def architecture_problem(cls, architecture: type) -> str | None:
        """A target without additive skip connections (one that lists no `residual_stages`)."""
        if getattr(architecture, "residual_stages", None) is not Classifier.residual_stages:
            return None
        return no_skips_message(cls.name, getattr(architecture, "name", architecture.__name__))

    def factors(self, model: nn.Module) -> list[tuple[nn.Module, float]]:
        """(block, shortcut factor) for every residual block of `model`; a clear error where there are none."""
        stages = model.residual_stages() if isinstance(model, Classifier) else []
        name = getattr(model, "name", type(model).__name__)
        if not stages:
            raise MibenchError(no_skips_message(self.name, name))
        p: RoLSSParams = self.params
        scales = p.stage_scales or [1.0] * (len(stages) - 1) + [p.last_stage_scale]
        if len(scales) != len(stages):
            raise MibenchError(
                f"{self.name}: stage_scales has {len(scales)} factors, architecture {name!r} has {len(stages)} stages"
            )
        return stage_scales_per_block(stages, scales, p.stage3_split)

    def prepare(self, model: nn.Module, data: DataBundle, spec: TrainSpec, ctx: RunContext) -> nn.Module:
        """TTS's first stage: train the network with every skip (nothing for RoLSS and SSF)."""
        factors = self.factors(model)  # refuse a plain network before any training
        removed = sum(1 for _, f in factors if f == 0)
        details = {"blocks": len(factors), "removed": removed, "scaled": sum(1 for _, f in factors if 0 < f < 1)}
        self._stats = [Measurement("skips_removed_fraction", removed / len(factors), None, "fraction", details)]
        p: RoLSSParams = self.params
        if p.two_stage:
            first = spec.model_copy(update={"epochs": p.first_stage_epochs or spec.epochs, "selection": "last"})
            train_classifier(
                model, data.private_train, data.private_test, first, ctx.child("tts"), description="TTS stage 1"
            )
        return model

    def wrap(self, model: nn.Module) -> nn.Module:
        """Set every residual block's shortcut factor (deterministic: loading a target rebuilds it)."""
        for block, factor in self.factors(model):
            scale_block(block, factor)
        return model

    def preparation_stats(self) -> list[Measurement]:
        """The share of residual blocks left without a shortcut."""
        return self._stats


def no_skips_message(defense: str, architecture: str) -> str:
    """The one line refusing a network without additive skip connections."""
    return (
        f"{defense}: architecture {architecture!r} has no additive skip connections to remove: RoLSS, SSF and TTS "
        "apply to residual networks (resnet*, the IR nets, tiny-resnet), not to plain ones such as vgg16 or "
        "tiny-cnn; DenseNet's concatenative skips are not implemented"
    )


class SSFParams(RoLSSParams):
    """RoLSSParams with the released ResNet-18 config's last-stage factor (`skip: [1, 1, 1, 0.6]`)."""

    last_stage_scale: float = Field(0.6, ge=0, description="factor of the last stage's shortcuts")


@DEFENSES.register
class SSF(RoLSS):
    """Scale the last stage's skip connections by a factor below 1."""

    name: ClassVar[str] = "ssf"
    paper: ClassVar[str] = PAPER.format("SSF")
    Params = SSFParams


class TTSParams(RoLSSParams):
    """RoLSSParams with the two-stage scheme on."""

    two_stage: bool = Field(True, description="first train with every skip, then with the scaled ones")


@DEFENSES.register
class TTS(RoLSS):
    """Train with every skip, then remove the last stage's and train on from those weights."""

    name: ClassVar[str] = "tts"
    paper: ClassVar[str] = PAPER.format("TTS")
    Params = TTSParams
