"""PLG-MI+ / PLG-MI++: trapdoor and auxiliary signatures, their loss terms, and what the harness tells the attack."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mibench.api.context import RunContext
from mibench.api.oracle import Access, DefenderKnowledge, TargetOracle
from mibench.api.records import read_records
from mibench.attacks.plgmi import PLGMI
from mibench.attacks.plgmi_adaptive import (
    PLGMIPlus,
    PLGMIPlusPlus,
    auxiliary_signatures,
    signature_terms,
)
from mibench.data.base import to_float
from mibench.models.base import ClassifierOutput
from mibench.training.trapdoor import balanced_targets, blend_triggers, trapdoor_signatures
from tests.conftest import run_suite_file, white_box, write_suite


class PixelFeatures(torch.nn.Module):
    """A stand-in classifier whose penultimate feature is the flattened image."""

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        f = x.flatten(1)
        return ClassifierOutput(f, f[:, :3])


def test_trapdoor_signatures_equal_brute_force():
    images = torch.rand(10, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    pattern, mask = blend_triggers(3, (1, 2, 2), 0.3, torch.Generator().manual_seed(1))
    got = trapdoor_signatures(PixelFeatures(), images, pattern, mask, torch.Generator().manual_seed(2), batch_size=4)
    targets = balanced_targets(10, 3, torch.Generator().manual_seed(2))
    for c in range(3):
        injected = 0.7 * images[targets == c] + 0.3 * pattern[c]
        torch.testing.assert_close(got[c], F.normalize(injected.flatten(1).mean(0), dim=0))


def test_signature_terms_hand_computed():
    aux = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    trap = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    out = ClassifierOutput(torch.tensor([[1.0, 1.0], [0.0, 2.0]]), torch.tensor([[0.0, 1.0], [5.0, 0.0]]))
    labels = torch.tensor([0, 1])
    # Sample 0: cos to aux[0] = 1/sqrt2; predicted class 1, cos to trap[1] = 1/sqrt2.
    # Sample 1: cos to aux[1] = 1; predicted class 0, cos to trap[0] = 1.
    r = 2**-0.5
    both = signature_terms(aux, trap, auxiliary_weight=2.0, trapdoor_weight=0.5)(out, labels)
    torch.testing.assert_close(both, torch.tensor([0.5 * r - 2 * r, 0.5 - 2.0]))
    aux_only = signature_terms(aux, None, auxiliary_weight=1.0, trapdoor_weight=0.5)(out, labels)
    torch.testing.assert_close(aux_only, torch.tensor([-r, -1.0]))


def cosine_to(signatures, target, images, labels=None):
    """Mean cosine of the target's features to the signature of each image's label (default: predicted class)."""
    with torch.no_grad():
        out = target(images)
    index = out.logits.argmax(1) if labels is None else labels
    return (F.normalize(out.features, dim=1) * F.normalize(signatures, dim=1)[index]).sum(1).mean().item()


def test_signature_terms_steer_the_latent_search(attack_setting, plgmi_prior):
    """Started from the same latents, PLG-MI++ ends further from the trapdoor signatures and PLG-MI+ nearer the
    auxiliary ones than PLG-MI does (fake signatures on an undefended target: the mechanics, not the defense)."""
    target, data = attack_setting
    plain, prior = plgmi_prior
    search = {"cgan": plain.params.cgan, "iterations": 60, "restarts": 2}
    trapdoor = F.normalize(torch.randn(6, 64, generator=torch.Generator().manual_seed(5)), dim=1)
    knowing = TargetOracle(
        target, Access.WHITE_BOX, num_classes=6, image_shape=(3, 16, 16), defender=DefenderKnowledge(trapdoor)
    )
    prior.auxiliary_signatures = auxiliary_signatures(white_box(target), data.public, prior.pseudo_labels, "cpu")
    assert prior.auxiliary_signatures.shape == (6, 64)
    classes = torch.arange(6)
    base = plain.__class__(plain.params.model_copy(update={"iterations": 60, "restarts": 2}))
    ref = base.invert(prior, white_box(target), classes, RunContext(seed=3))
    pp = PLGMIPlusPlus(PLGMIPlusPlus.Params(**search, trapdoor_weight=20.0, auxiliary_weight=0.0))
    adapted = pp.invert(prior, knowing, classes, RunContext(seed=3))
    assert cosine_to(trapdoor, target, adapted.images) < cosine_to(trapdoor, target, ref.images) - 0.05
    plus = PLGMIPlus(PLGMIPlus.Params(**search, auxiliary_weight=20.0))
    pulled = plus.invert(prior, white_box(target), classes, RunContext(seed=3))
    aux = prior.auxiliary_signatures
    assert cosine_to(aux, target, pulled.images, pulled.labels) > cosine_to(aux, target, ref.images, ref.labels)


def test_auxiliary_signatures_are_pseudo_label_means(attack_setting, plgmi_prior):
    target, data = attack_setting
    _, prior = plgmi_prior
    got = auxiliary_signatures(white_box(target), data.public, prior.pseudo_labels, "cpu")
    with torch.no_grad():
        expected = target(to_float(data.public.images[prior.pseudo_labels[4]])).features.mean(0)
    torch.testing.assert_close(got[4], expected)


def test_only_plgmi_plusplus_is_told_the_trapdoors(tmp_path, tiny_suite, monkeypatch):
    """End to end on a trapdoored tiny target: the harness hands signatures to PLG-MI++ alone."""
    seen = {}
    original = PLGMI.invert

    def spy(self, prior, oracle, classes, ctx):
        seen[self.name] = oracle.defender
        return original(self, prior, oracle, classes, ctx)

    monkeypatch.setattr(PLGMI, "invert", spy)
    tiny_suite["seeds"] = [0]
    tiny_suite["defenses"] = [{"name": "trap-mid", "label": "Trap-MID", "params": {"alpha": 0.25, "augment": False}}]
    budget = {"cgan": {"ch": 8, "z_dim": 8, "iterations": 3, "top_n": 4, "batch_size": 8}, "iterations": 2}
    tiny_suite["attacks"] = [
        {"name": "plgmi-plus", "params": budget},
        {"name": "plgmi-plusplus", "params": budget},
    ]
    tiny_suite["metrics"] += ["trapdoor-detection", "nn-private-share"]
    run_suite_file(write_suite(tmp_path / "s.yaml", tiny_suite), tmp_path / "cache", tmp_path / "run")
    records = [r for r in read_records(tmp_path / "run" / "records.jsonl") if r.attack is not None]
    for metric in ("trapdoor_recall", "trapdoor_auc", "nn_private_share"):
        values = [r.value for r in records if r.metric == metric]
        assert len(values) == 2 and all(0 <= v <= 1 for v in values), metric
    tau = next(r for r in records if r.metric == "trapdoor_recall").details["tau"]
    assert -1 <= tau <= 1
    assert seen["plgmi-plus"] is None
    signatures = seen["plgmi-plusplus"].trapdoor_signatures
    assert signatures.shape == (6, 64)
    torch.testing.assert_close(signatures.norm(dim=1), torch.ones(6))


def test_signature_terms_enter_the_cgan_loss_with_their_own_weight_not_alpha():
    """Eq. 7's prose: two terms added to the original generator loss; PLG-MI's alpha scales only its max-margin."""
    from mibench.attacks.plgmi import cgan_generator_loss
    from mibench.inversion.losses import max_margin_identity

    d_fake, logits, labels = torch.tensor([0.5, -0.5]), torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    extra = torch.tensor([0.3, -0.1])
    base = -d_fake.mean() + 0.2 * max_margin_identity(logits, labels).mean()
    torch.testing.assert_close(cgan_generator_loss(d_fake, logits, labels, 0.2), base)
    torch.testing.assert_close(cgan_generator_loss(d_fake, logits, labels, 0.2, extra), base + extra.mean())
