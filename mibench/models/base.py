"""The classifier interface every target and evaluation model implements.

All MI codebases of the GMI/KED-MI/PLG-MI lineage have `forward(x) -> (feature, logits)` and index the tuple
positionally; VIB models break that convention. mibench makes it a named tuple, so attacks and metrics read
`.features` and `.logits`, never `[-1]`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import torch
from pydantic import Field, field_validator
from torch import nn

from mibench.data.base import height_width
from mibench.errors import unknown_name_message
from mibench.params import Params
from mibench.registry import ARCHITECTURES, build_params


class ClassifierOutput(NamedTuple):
    """Penultimate features (N x D), class logits (N x K), and optional auxiliary logits.

    `aux_logits`: an auxiliary classifier's output where a network has one and is training (Inception-v3); the
    training losses add its cross-entropy with weight 1, as PPA does.
    """

    features: torch.Tensor
    logits: torch.Tensor
    aux_logits: torch.Tensor | None = None


class Classifier(nn.Module):
    """Base class of registered architectures.

    Args:
        num_classes: Size of the logit layer.
        in_channels: Image channels.
        image_size: Side of the square [0, 1] input the network is built for.
        params: The architecture's `Params`.
    """

    name: ClassVar[str]
    paper: ClassVar[str]
    version: ClassVar[int] = 1
    Params: ClassVar[type[Params]]
    # Whether the network takes rectangular images (image_size given as (height, width)).
    rectangular_input: ClassVar[bool] = False
    # MID's bottleneck width on this architecture; None: half the width of `bottleneck_input` (the official default).
    vib_bottleneck: ClassVar[int | None] = None
    # Whether BiDO regularises the penultimate feature besides `hidden_layers()` (VGG16: yes, its official model
    # returns the BN1d feature among the hiddens; IR nets: no, "the four major ResNet blocks").
    dependency_on_feature: ClassVar[bool] = True
    # TL-DMI (Ho et al., CVPR 2024): the index into `transfer_layers()` of the last layer frozen during private
    # training (the official `freeze_layers`, inclusive); None: the architecture has no published split.
    transfer_split: ClassVar[int | None] = None

    def __init__(self, num_classes: int, in_channels: int, image_size: int, params: Params):
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.image_size = image_size
        self.params = params

    @classmethod
    def from_official_names(cls, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A state dict saved by the official code (a released checkpoint), under this module's names.

        Default: the same names. Checked against the official classes by tests/goldens/architectures.pt.
        """
        return state

    def hidden_layers(self) -> list[nn.Module]:
        """Modules whose outputs are the hidden representations dependency-based defenses regularise (BiDO)."""
        return []

    def residual_stages(self) -> list[list[nn.Module]]:
        """Blocks with an additive skip connection (a `skip_scale`), per stage front to back (empty: none; RoLSS)."""
        return []

    def transfer_layers(self) -> list[nn.Module]:
        """The front-to-back layers TL-DMI's `freeze_layers` index counts (empty: TL-DMI is not defined here)."""
        return []

    def transfer_stem(self) -> nn.Module | None:
        """A layer before `transfer_layers()` that TL-DMI may freeze separately (the IR nets' input layer)."""
        return None

    def bottleneck_input(self, x: torch.Tensor) -> torch.Tensor:
        """The feature a variational bottleneck (MID) reads in place of the head: the penultimate feature."""
        return self(x).features

    def forward(self, x: torch.Tensor) -> ClassifierOutput:  # pragma: no cover - interface
        """Features and logits of [0, 1] images (N x C x H x W)."""
        raise NotImplementedError


def build_classifier(
    architecture: str,
    params: dict[str, Any] | None,
    *,
    num_classes: int,
    in_channels: int,
    image_size: int | tuple[int, int],
) -> Classifier:
    """Instantiate a registered architecture by name."""
    cls = ARCHITECTURES.get(architecture)
    if not isinstance(image_size, int) and not cls.rectangular_input:
        raise ValueError(f"architecture {architecture!r} needs square images, got height x width {tuple(image_size)}")
    return cls(num_classes, in_channels, image_size, build_params(cls, params))


class NetworkSpec(Params):
    """An auxiliary network an attack trains (LOMMA's students, LOKT's surrogates): an architecture and its params."""

    architecture: str
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("architecture")
    @classmethod
    def _registered(cls, name: str) -> str:
        if name not in ARCHITECTURES.names():
            raise ValueError(unknown_name_message("architecture", name, ARCHITECTURES.names()))
        return name

    def build(self, *, num_classes: int, in_channels: int, image_size: int) -> Classifier:
        """The untrained network."""
        return build_classifier(
            self.architecture, self.params, num_classes=num_classes, in_channels=in_channels, image_size=image_size
        )


def clone_model(model: nn.Module) -> nn.Module:
    """A deep copy of `model`, also when a module keeps a graph tensor of its last forward as an attribute.

    (MID's bottleneck keeps the batch's KL for its loss term; `copy.deepcopy` refuses non-leaf tensors, so they are
    copied detached.)
    """
    memo: dict[int, Any] = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    return copy.deepcopy(model, memo)


def freeze(model: nn.Module) -> nn.Module:
    """Put `model` in eval mode and stop gradients into its weights (inputs may still get gradients)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def probe_width(model: Classifier, read: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> int:
    """Width of what `read(model, x)` returns for one blank input of the model's shape, computed in eval mode.

    Defenses that put a new head on a network (MID's bottleneck, LoFt's neck) size it from the feature it reads;
    the model's training mode is restored afterwards.
    """
    height, width = height_width(model.image_size)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return read(model, torch.zeros(1, model.in_channels, height, width)).shape[1]
    finally:
        model.train(was_training)


def pixel_count(image_size: int | tuple[int, int]) -> int:
    """Pixels per channel of a square side or a (height, width) pair."""
    height, width = height_width(image_size)
    return height * width


class SavedShapeBuffers(nn.Module):
    """A module whose buffers take the shape of the state dict they are loaded from.

    For priors holding statistics of the target (a feature mean, class signatures) whose size is only known once the
    target has been queried: they are built empty and filled by training or by loading.
    """

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name, buffer in self._buffers.items():
            saved = state_dict.get(prefix + name)
            if buffer is not None and saved is not None and saved.shape != buffer.shape:
                self._buffers[name] = torch.empty_like(saved)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
