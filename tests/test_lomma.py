"""LOMMA: its losses on fixed tensors, knowledge distillation, sharing the base GAN, and the attack beating random."""

from __future__ import annotations

import math

import pytest
import torch

from mibench.api.attack import DataInfo
from mibench.api.context import RunContext
from mibench.attacks.lomma import LOMMAGMI, LOMMAKEDMI, STUDENTS, LOMMAGMIParams, LOMMAParams
from mibench.inversion.losses import feature_regulariser, poincare_identity
from mibench.models.base import NetworkSpec
from mibench.running.plan import build_plan
from mibench.suite import load_suite
from mibench.training.classifier import distill
from tests.conftest import MID_SHUFFLED, hit_rate, tiny_model, white_box, write_suite

TINY_STUDENTS = [NetworkSpec(architecture="tiny-cnn", params={"width": 8}), NetworkSpec(architecture="tiny-resnet")]


def test_feature_regulariser_and_poincare_closed_forms():
    f = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    anchor = torch.tensor([1.0, 0.0, 1.0])
    torch.testing.assert_close(feature_regulariser(f, anchor), torch.tensor([(0 + 4 + 4) / 3, (1 + 0 + 1) / 3]))
    # u = (1, -1, 2) / 4, v = (0, 0, 0.9999): |u - v|^2 = 0.125 + 0.4999^2, |u|^2 = 0.375, |v|^2 = 0.9999^2.
    delta = 2 * (0.125 + 0.4999**2) / ((1 - 0.375) * (1 - 0.9999**2))
    got = poincare_identity(torch.tensor([[1.0, -1.0, 2.0]], dtype=torch.float64), torch.tensor([2]))
    torch.testing.assert_close(got, torch.tensor([math.acosh(1 + delta)], dtype=torch.float64), rtol=1e-10, atol=0)
    # The loss falls as the logits concentrate on the target class.
    sharper = poincare_identity(torch.tensor([[0.1, -0.1, 5.0]]), torch.tensor([2]))
    assert sharper < got


def test_unknown_student_architecture_is_named():
    with pytest.raises(ValueError, match="unknown architecture 'efficientnet-b9'; did you mean"):
        NetworkSpec(architecture="efficientnet-b9")


def test_distilled_student_agrees_with_teacher(attack_setting):
    target, data = attack_setting
    teacher = white_box(target)
    public = data.public.images.float() / 255
    with torch.no_grad():
        wanted = target(public).logits.argmax(1)
        before = (tiny_model(3, 6)(public).logits.argmax(1) == wanted).float().mean().item()
    student = distill(
        tiny_model(3, 6),
        teacher.logits,
        data.public.images,
        epochs=15,
        batch_size=32,
        lr=0.05,
        momentum=0.9,
        weight_decay=1e-4,
        temperature=1.0,
        ctx=RunContext(seed=0),
    )
    with torch.no_grad():
        after = (student(public).logits.argmax(1) == wanted).float().mean().item()
    assert after >= 0.8 and after >= before + 0.3


def lomma_gmi(variant: str = "ours", **search) -> LOMMAGMI:
    lomma = LOMMAParams(variant=variant, students=TINY_STUDENTS)
    lomma = lomma.model_copy(update={"distill": lomma.distill.model_copy(update={"epochs": 10, "lr": 0.05})})
    return LOMMAGMI(LOMMAGMIParams(gan={"z_dim": 16, "width": 16}, lomma=lomma, **search))


@pytest.fixture(scope="module")
def lomma_prior(attack_setting, gmi_gan):
    """LOMMA-GMI's priors: the shared GMI GAN and students distilled from the tiny target."""
    target, data = attack_setting
    attack = lomma_gmi()
    students = attack.build_prior(DataInfo(3, 16, 6), STUDENTS)
    attack.train_prior(students, data.public, white_box(target), RunContext(seed=4), STUDENTS)
    return {"gmi-wgan-gp": gmi_gan[1], STUDENTS: students}


def test_identity_loss_matches_the_formula(attack_setting, lomma_prior):
    target, data = attack_setting
    images, labels = data.private_test.images[:8].float() / 255, data.private_test.labels[:8]
    students = lomma_prior[STUDENTS]
    assert len(students.students) == 2 and students.feature_mean.shape == (64,)
    with torch.no_grad():
        out = target(images)
        models = [out.logits] + [s(images).logits for s in students.students]
        logit_term = torch.stack([-m.gather(1, labels.view(-1, 1)).squeeze(1) for m in models]).mean(0)
        reg = ((out.features - students.feature_mean) ** 2).mean(1)
        ours = lomma_gmi().identity_loss(white_box(target), lomma_prior, RunContext())(images, labels)
        ce = lomma_gmi("baseline").identity_loss(white_box(target), lomma_prior, RunContext())(images, labels)
    torch.testing.assert_close(ours, logit_term + reg)  # L_reg is on the target only, not divided by |M|
    torch.testing.assert_close(ce, torch.nn.functional.cross_entropy(out.logits, labels, reduction="none"))


def test_feature_mean_is_the_public_mean(attack_setting, lomma_prior):
    target, data = attack_setting
    with torch.no_grad():  # fewer public images than reg_samples: all of them
        expected = target(data.public.images.float() / 255).features.mean(0)
    torch.testing.assert_close(lomma_prior[STUDENTS].feature_mean, expected, rtol=1e-4, atol=1e-5)


def test_lomma_gmi_beats_random_latents(attack_setting, lomma_prior):
    target, _ = attack_setting
    attack = lomma_gmi(iterations=60, restarts=3)
    recon = attack.invert(lomma_prior, white_box(target), torch.arange(6), RunContext(seed=3))
    with torch.no_grad():
        random = lomma_prior["gmi-wgan-gp"].generator(torch.randn(18, 16, generator=torch.Generator().manual_seed(0)))
    attacked, baseline = hit_rate(target, recon.images, recon.labels), hit_rate(target, random, recon.labels)
    assert attacked >= 0.6 and attacked >= baseline + 0.35


def test_students_prior_is_per_target_and_the_gan_is_shared(tmp_path, tiny_suite):
    tiny_suite["defenses"].append({"name": "mid", "label": "MID", "params": MID_SHUFFLED})
    tiny_suite["attacks"] = [
        {"name": "gmi", "params": {"gan": {"z_dim": 8}}},
        {"name": "lomma-gmi", "params": {"gan": {"z_dim": 8}}},
        {"name": "lomma-kedmi", "params": {"lomma": {"variant": "L_logit"}}},
    ]
    plan = build_plan(load_suite(write_suite(tmp_path / "s.yaml", tiny_suite)))
    priors = [j.payload for j in plan.by_stage()["prior"]]
    names = sorted(p["prior"] for p in priors)
    targets = len(tiny_suite["seeds"]) * 2
    # One GMI GAN for everything; KED-MI's GAN and LOMMA's students per target (two LOMMA attacks, one each).
    assert names.count("gmi-wgan-gp") == 1
    assert names.count("kedmi-gan") == targets
    assert names.count(STUDENTS) == 2 * targets  # lomma-gmi (3 EfficientNets) and lomma-kedmi (L_logit: none)
    assert any(p["params"]["students"] == [] for p in priors if p["prior"] == STUDENTS)
    inverts = [j.payload for j in plan.by_stage()["invert"] if j.payload["attack"]["name"] == "lomma-kedmi"]
    assert all(set(p["priors"]) == {"kedmi-gan", STUDENTS} for p in inverts)


def test_lomma_kedmi_clamps_in_graph_by_default():
    assert LOMMAKEDMI(LOMMAKEDMI.Params()).params.clip_z == "in_graph"
