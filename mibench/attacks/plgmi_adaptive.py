"""PLG-MI+ and PLG-MI++: PLG-MI adapted to trapdoor defenses (Liu & Chen, Trap-MID, NeurIPS 2024, Sec. 4.2, App. E.7).

The adversary knows the target is trapdoored. Both variants add signature terms to PLG-MI's inversion loss, in the
cGAN's generator loss (stage 1, Eq. 7) and in the latent search (stage 2), on the target's penultimate feature phi
of each augmented generated image x meant for class y:

    PLG-MI++:  + lambda1 cos(phi(x), s_trap[argmax T(x)])  - lambda2 cos(phi(x), s_aux[y])
    PLG-MI+ :                                              - lambda2 cos(phi(x), s_aux[y])   (Eq. 12)

* s_aux[y], the auxiliary signature: the mean target feature of the public images that PLG-MI's top-n
  pseudo-labelling assigned to class y (Eq. 8). It pulls samples towards the benign public distribution.
* s_trap[c], the trapdoor signature: the normalised mean feature of trigger-injected images of class c, computed by
  the harness from the defender's triggers and private training data (`oracle.defender`; only PLG-MI++ knows it).
  It pushes samples away from the trapdoor shortcut. Against a target without triggers the term is zero.

Weights. In the cGAN stage the two terms are added to the original generator loss with their own weights lambda1,
lambda2, not scaled by PLG-MI's alpha = 0.2 (Eq. 7's prose: "modifying the generator objective" with two added
terms; mibench version 1 put them inside the alpha-scaled term, 5x weaker). In the latent search they are added to
each augmented view's inversion loss, as PLG-MI's max-margin term is, so the two views of the search count them
twice, as they count the max-margin term. The paper's values of lambda1 and lambda2 were lost from the text mibench
works from (specs/seed-notes.md): both default to 1.0, the weight of the max-margin term in the search, i.e. the
signature terms weigh as much as the identity term there; they are parameters, and Tables 4/15/16 depend on them.
This is a reconstruction from the paper's prose, not from released code (the Trap-MID repository ships no adaptive
attack).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field

from mibench.api.context import RunContext
from mibench.api.oracle import TargetOracle
from mibench.attacks.plgmi import PLGMI, CGANParams, Penalty, PLGMIParams, PLGPrior
from mibench.data.base import ImageSet, to_float
from mibench.models.base import ClassifierOutput
from mibench.params import Params
from mibench.registry import ATTACKS


class PLGMIPlusParams(PLGMIParams):
    """PLG-MI's settings plus lambda2, the weight of the auxiliary-signature pull."""

    auxiliary_weight: float = Field(1.0, ge=0, description="lambda2 (paper value lost; 1.0 is mibench's choice)")


class PLGMIPlusPlusParams(PLGMIPlusParams):
    """PLG-MI+'s settings plus lambda1, the weight of the trapdoor-signature push."""

    trapdoor_weight: float = Field(1.0, ge=0, description="lambda1 (paper value lost; 1.0 is mibench's choice)")


class AdaptiveCGANParams(Params):
    """What determines the adaptive cGAN: PLG-MI's cGAN settings and the signature weights."""

    cgan: CGANParams
    auxiliary_weight: float
    trapdoor_weight: float


@torch.no_grad()
def auxiliary_signatures(
    oracle: TargetOracle, public: ImageSet, pseudo_labels: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """K x D: the mean target feature of each class's pseudo-labelled public images (Eq. 8)."""
    return torch.stack([oracle(to_float(public.images[idx], device)).features.mean(0).cpu() for idx in pseudo_labels])


def signature_terms(
    auxiliary: torch.Tensor, trapdoor: torch.Tensor | None, auxiliary_weight: float, trapdoor_weight: float
) -> Penalty:
    """Per sample: trapdoor_weight cos(phi, s_trap[argmax]) - auxiliary_weight cos(phi, s_aux[y])."""

    def penalty(out: ClassifierOutput, labels: torch.Tensor) -> torch.Tensor:
        features = F.normalize(out.features, dim=1)
        loss = -auxiliary_weight * (features * F.normalize(auxiliary.to(features.device), dim=1)[labels]).sum(1)
        if trapdoor is not None and trapdoor_weight:
            predicted = out.logits.argmax(1)
            loss = loss + trapdoor_weight * (features * trapdoor.to(features.device)[predicted]).sum(1)
        return loss

    return penalty


@ATTACKS.register
class PLGMIPlus(PLGMI):
    """PLG-MI with the auxiliary-signature term in both stages (knows only that trapdoors exist)."""

    name: ClassVar[str] = "plgmi-plus"
    paper: ClassVar[str] = "Liu & Chen, Trap-MID, NeurIPS 2024 (Sec. 4.2, App. E.7): adaptive PLG-MI+ (reconstruction)"
    official: ClassVar[str | None] = None  # no official code (FIDELITY.md)
    Params = PLGMIPlusParams
    version: ClassVar[int] = 2  # 2: stage-1 signature terms outside the alpha-scaled term
    prior_name: ClassVar[str] = "plgmi-adaptive-cgan"
    prior_version: ClassVar[int] = 2

    def prior_params(self) -> AdaptiveCGANParams:
        """The cGAN depends on the signature weights, since they enter its generator loss."""
        return AdaptiveCGANParams(
            cgan=self.params.cgan,
            auxiliary_weight=self.params.auxiliary_weight,
            trapdoor_weight=self._trapdoor_weight(),
        )

    def _trapdoor_weight(self) -> float:
        return 0.0

    def signature_penalty(
        self, prior: PLGPrior, public: ImageSet | None, oracle: TargetOracle, ctx: RunContext
    ) -> Penalty:
        """Compute the auxiliary signatures into the prior when public data is given (stage 1), then the terms."""
        if public is not None:
            prior.auxiliary_signatures = auxiliary_signatures(oracle, public, prior.pseudo_labels, ctx.device)
        trapdoor = oracle.defender.trapdoor_signatures if oracle.defender is not None else None
        return signature_terms(
            prior.auxiliary_signatures, trapdoor, self.params.auxiliary_weight, self._trapdoor_weight()
        )


@ATTACKS.register
class PLGMIPlusPlus(PLGMIPlus):
    """PLG-MI+ that also knows the trapdoor signatures and pushes its samples away from them."""

    name: ClassVar[str] = "plgmi-plusplus"
    paper: ClassVar[str] = "Liu & Chen, Trap-MID, NeurIPS 2024 (Sec. 4.2, Eq. 7): adaptive PLG-MI++ (reconstruction)"
    official: ClassVar[str | None] = None  # no official code (FIDELITY.md)
    Params = PLGMIPlusPlusParams
    knows_defense: ClassVar[bool] = True

    def _trapdoor_weight(self) -> float:
        return self.params.trapdoor_weight
