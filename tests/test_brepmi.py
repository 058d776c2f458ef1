"""BREP-MI: the walk on a closed-form toy, label-only access, and the attack beating random latents."""

from __future__ import annotations

import pytest
import torch

from mibench.api.context import RunContext
from mibench.api.oracle import Access, TargetOracle
from mibench.attacks.brepmi import BREPMI, BREPMIParams, boundary_repulsion, initial_points
from tests.conftest import hit_rate


def half_space(z: torch.Tensor) -> torch.Tensor:
    """Class 0 where z_0 < 0, class 1 elsewhere."""
    return (z[:, 0] >= 0).long()


def toy_params(**kw) -> BREPMIParams:
    return BREPMIParams(gan={"z_dim": 2}, sphere_points=16, initial_radius=0.2, patience=5, max_iterations=300, **kw)


def test_walk_moves_away_from_the_boundary_and_stops():
    z = torch.tensor([[-0.05, 0.0], [0.05, 0.0]])
    labels = torch.tensor([0, 1])
    walk = boundary_repulsion(half_space, z.clone(), labels, toy_params(), RunContext(seed=0))
    final = walk["final"]
    assert final[0, 0] < -0.05 and final[1, 0] > 0.05  # each walked away from z_0 = 0, into its own class
    assert half_space(final).tolist() == [0, 1]  # rejected moves keep every point inside its class
    assert final.abs().max() <= 1.5  # the box
    assert not walk["capped"].any()  # both met the patience rule
    # Each iteration costs the sphere plus one candidate query.
    assert (walk["queries"] % 17 == 0).all() and (walk["queries"] > 0).all()


def test_walk_respects_the_iteration_cap():
    p = toy_params().model_copy(update={"patience": 10_000, "max_iterations": 7})
    walk = boundary_repulsion(half_space, torch.tensor([[-0.05, 0.0]]), torch.tensor([0]), p, RunContext(seed=0))
    assert walk["capped"].tolist() == [True] and walk["queries"].tolist() == [7 * 17]


def _sphere_with(inside: int, n: int = 32):
    """labels_of for one class-0 walk: `inside` of each sphere's n points stay in class 0; every move is accepted."""

    def labels_of(z):
        if len(z) == n:
            return (torch.arange(n) >= inside).long()
        return torch.zeros(len(z), dtype=torch.long)

    return labels_of


@pytest.mark.parametrize(("inside", "expands"), [(28, False), (29, True), (32, True)])
def test_expansion_needs_29_of_32_points_inside(inside, expands):
    """Official rule: the +1/-1 scores sum to more than 0.75 N, 2 * 29 - 32 = 26 > 24 but 2 * 28 - 32 = 24 is not."""
    p = BREPMIParams(gan={"z_dim": 2}, patience=1, max_iterations=1)
    walk = boundary_repulsion(_sphere_with(inside), torch.zeros(1, 2), torch.tensor([0]), p, RunContext(seed=0))
    assert walk["expanded"].tolist() == [expands]


def test_a_class_without_an_accepted_expansion_is_a_failure(attack_setting, gmi_gan):
    target, _ = attack_setting
    _, prior = gmi_gan
    oracle = TargetOracle(target, Access.LABELS, num_classes=6, image_shape=(3, 16, 16))
    # A fraction above 1 can never be met (the sum of 32 scores is at most 32): no class ever expands.
    params = BREPMIParams(gan={"z_dim": 16}, sphere_points=8, patience=2, initial_batch=64, expansion_fraction=1.0)
    recon = BREPMI(params).invert(prior, oracle, torch.arange(2), RunContext(seed=0))
    assert recon.failed is not None and recon.failed.all()
    assert recon.stats["walks_without_expansion"] == len(recon.labels)
    assert BREPMIParams().mode == "untargeted" and BREPMIParams().output == "last_expansion"  # official defaults


def test_initial_points_targeted_and_untargeted():
    def labels_of(z):  # four classes by quadrant
        return (z[:, 0] > 0).long() + 2 * (z[:, 1] > 0).long()

    p = toy_params(initial_batch=8, mode="targeted")
    found, rounds = initial_points(labels_of, torch.tensor([1, 3]), p, RunContext(seed=1))
    assert set(found) == {1, 3} and rounds >= 1
    assert all(int(labels_of(found[c][None])) == c for c in found)
    p = toy_params(initial_batch=8, mode="untargeted")
    found, _ = initial_points(labels_of, torch.tensor([0, 1, 2]), p, RunContext(seed=1))
    assert len(found) == 3  # any three classes, whichever the generator hits first


def test_brepmi_uses_labels_only_and_beats_random_latents(attack_setting, gmi_gan):
    target, _ = attack_setting
    _, prior = gmi_gan
    oracle = TargetOracle(target, Access.LABELS, num_classes=6, image_shape=(3, 16, 16))
    params = BREPMIParams(
        gan={"z_dim": 16},
        sphere_points=16,
        patience=15,
        max_iterations=150,
        initial_batch=64,
        max_initial_rounds=20,
        mode="untargeted",  # the official mode: the GAN of public identities need not hit every private class
    )
    recon = BREPMI(params).invert(prior, oracle, torch.arange(4), RunContext(seed=0))
    assert len(set(recon.labels.tolist())) == 4 and recon.stats["classes_found"] == 4
    assert recon.stats["initial_rounds"] <= 20
    with torch.no_grad():
        random = prior.generator(torch.randn(4, 16, generator=torch.Generator().manual_seed(0)))
    # The walk never leaves the class, so the target agrees on every reconstruction.
    assert hit_rate(target, recon.images, recon.labels) == 1.0
    assert hit_rate(target, random, recon.labels) <= 0.5
    assert recon.stats["target_queries"] == oracle.queries > 6 * 17
