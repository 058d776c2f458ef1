"""SSD (Stealthy Shield Defense, ICLR 2025): the water-filling solution's constraints and optimality, q_y within the
budget, the released model's outputs, and the deploy-only plumbing (no retraining)."""

from __future__ import annotations

import torch

from mibench.defenses.ssd import SSD, SSDParams, class_mean_outputs, shield, water_fill


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return (p * (p / q).log()).sum(1)


def test_water_filling_stays_in_the_simplex_spends_its_budget_and_beats_other_feasible_points():
    g = torch.Generator().manual_seed(0)
    f = (torch.randn(50, 6, generator=g, dtype=torch.float64) * 2).softmax(1)
    q = (torch.randn(50, 6, generator=g, dtype=torch.float64) * 2).softmax(1)
    budget = torch.full((50,), 0.3, dtype=torch.float64)
    p = water_fill(f, q, budget)
    assert (p >= 0).all()
    torch.testing.assert_close(p.sum(1), torch.ones(50, dtype=torch.float64))
    moved = (p - f).abs().sum(1)
    far = (f - q).abs().sum(1) > 0.3
    torch.testing.assert_close(moved[far], budget[far])  # the whole budget is spent where q is out of reach
    assert torch.equal(p[~far], q[~far])  # q itself where it is within reach
    # optimality: no random feasible point (a mix of p with another point inside the budget) has a lower KL
    for _ in range(20):
        other = (torch.randn(50, 6, generator=g, dtype=torch.float64)).softmax(1)
        step = budget / (other - f).abs().sum(1)
        candidate = f + step.clamp(max=1).unsqueeze(1) * (other - f)  # on the segment towards other: feasible
        assert (_kl(p, q) <= _kl(candidate, q) + 1e-9).all()


def test_shield_keeps_the_label_when_the_draw_is_the_top_class_and_q_agrees():
    # T -> 0 draws the top class; with class means whose top is their own class, p moves towards it: the label stays
    means = torch.full((4, 4), 0.1) + 0.6 * torch.eye(4)
    f = torch.tensor([[0.55, 0.25, 0.1, 0.1], [0.1, 0.2, 0.6, 0.1]])
    p = shield(f, means, SSDParams(temperature=1e-4, epsilon=0.5), torch.Generator().manual_seed(0))
    assert p.argmax(1).tolist() == [0, 2]
    entropy = -(f * f.log()).sum(1)
    assert ((p - f).abs().sum(1) <= 0.5 * entropy + 1e-6).all()


def test_ssd_is_deploy_only_and_releases_log_probabilities_of_its_output():
    from mibench.api.context import RunContext
    from tests.conftest import tiny_model

    assert SSD.deploy_only
    model = tiny_model().eval()
    data = type("Data", (), {})()
    images = torch.randint(0, 256, (30, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    data.private_test = type("Split", (), {"images": images, "labels": torch.arange(30) % 5, "__len__": lambda s: 30})()
    data.num_classes = 5
    defense = SSD(SSDParams())
    extras, _ = defense.finish(model, data, RunContext())
    torch.testing.assert_close(
        extras["class_means"], class_mean_outputs(model, data.private_test, 5, torch.device("cpu"))
    )
    torch.testing.assert_close(extras["class_means"].sum(1), torch.ones(5))
    restored = SSD(SSDParams())
    restored.restore(model, extras)
    released = restored.deploy(model, torch.Generator().manual_seed(2))
    x = torch.rand(6, 3, 16, 16)
    out = released(x)
    expected = shield(model(x).logits.softmax(1), extras["class_means"], SSDParams(), torch.Generator().manual_seed(2))
    torch.testing.assert_close(out.logits.softmax(1), expected)
    torch.testing.assert_close(out.features, model(x).features)


def test_white_box_attacks_differentiate_through_the_post_processing():
    # the smoke suite's white-box attacks against SSD: gradients reach the input (zero where p* is q_y), no error
    from tests.conftest import tiny_model

    model = tiny_model().eval()
    means = (torch.rand(5, 5, generator=torch.Generator().manual_seed(0)) + 2 * torch.eye(5)).softmax(1)
    released = SSD(SSDParams())
    released.restore(model, {"class_means": means})
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    released.deploy(model, torch.Generator().manual_seed(1))(x).logits.logsumexp(1).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_a_non_finite_query_passes_through_and_the_others_are_shielded():
    means = torch.full((3, 3), 0.2) + 0.4 * torch.eye(3)
    f = torch.tensor([[0.7, 0.2, 0.1], [float("nan")] * 3])
    p = shield(f, means, SSDParams(), torch.Generator().manual_seed(0))
    assert torch.isnan(p[1]).all() and torch.isfinite(p[0]).all()
    torch.testing.assert_close(p[:1], shield(f[:1], means, SSDParams(), torch.Generator().manual_seed(0)))
