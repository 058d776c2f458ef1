"""RoLSS / SSF / TTS (Koh et al., ECCV 2024): the shortcut factors change the forward pass exactly where they should,
the released stage-3 tail, the refusal of plain networks before any work, and TTS's two stages.

The released network's logits are pinned by tests/goldens/rolss.pt (tests/test_parity.py)."""

from __future__ import annotations

import pytest
import torch

from mibench.api.context import RunContext
from mibench.api.recipe import TrainSpec
from mibench.defenses.rolss import SSF, TTS, RoLSS, RoLSSParams, SSFParams, TTSParams
from mibench.errors import ConfigError, MibenchError
from mibench.models.base import build_classifier
from mibench.suite import resolve_suite
from mibench.training.stack import DefenseStack


def resnet18(seed: int = 0):
    torch.manual_seed(seed)
    return build_classifier("resnet18", {}, num_classes=4, in_channels=3, image_size=32).eval()


def stage_outputs(model, x) -> list[torch.Tensor]:
    outputs = []
    hooks = [stage.register_forward_hook(lambda m, i, o: outputs.append(o)) for stage in model.hidden_layers()]
    with torch.no_grad():
        logits = model(x).logits
    for hook in hooks:
        hook.remove()
    return [*outputs, logits]


def test_removing_the_last_stage_changes_only_what_follows_it():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    plain, defended = resnet18(), resnet18()
    RoLSS(RoLSSParams(stage3_split=1.0)).wrap(defended)
    before, after = stage_outputs(plain, x), stage_outputs(defended, x)
    for stage in range(3):
        assert torch.equal(before[stage], after[stage]), f"stage {stage + 1} changed"
    assert not torch.allclose(before[3], after[3]) and not torch.allclose(before[4], after[4])
    # every factor 1 leaves the network bit for bit as it was
    RoLSS(RoLSSParams(stage_scales=[1, 1, 1, 1], stage3_split=1.0)).wrap(again := resnet18())
    assert all(torch.equal(a, b) for a, b in zip(before, stage_outputs(again, x), strict=True))
    # names unchanged: the same state dict loads into both
    assert list(plain.state_dict()) == list(defended.state_dict())


def test_the_released_stage3_tail_loses_its_shortcut_in_every_config():
    model = resnet18()
    factors = RoLSS(RoLSSParams(stage_scales=[1, 1, 1, 1])).factors(model)
    assert [f for _, f in factors] == [1, 1, 1, 1, 1, 0, 1, 1]  # layer3 has 2 blocks: int(0.8 * 2) = 1
    ir152 = build_classifier("ir152", {}, num_classes=4, in_channels=3, image_size=64)
    factors = RoLSS(RoLSSParams()).factors(ir152)
    stage3 = [f for _, f in factors[3 + 8 : 3 + 8 + 36]]
    assert stage3 == [1.0] * 28 + [0.0] * 8  # int(0.8 * 36) = 28
    assert [f for _, f in factors[-3:]] == [0.0, 0.0, 0.0]


def test_a_scaled_shortcut_is_branch_plus_factor_times_input_and_zero_skips_the_projection():
    tiny = build_classifier("tiny-resnet", {"blocks": 1}, num_classes=3, in_channels=1, image_size=8)
    block = tiny.blocks[0].eval()
    x = torch.randn(2, 16, 4, 4)
    with torch.no_grad():
        branch = block.branch(x)
        SSF(SSFParams(last_stage_scale=0.25)).wrap(tiny)
        torch.testing.assert_close(block(x), branch + 0.25 * x)
    model = resnet18()
    RoLSS(RoLSSParams()).wrap(model)
    first = model.body.layer4[0]
    model.train()
    model(torch.rand(2, 3, 32, 32)).logits.sum().backward()
    assert all(p.grad is None for p in first.downsample.parameters())  # the projection is not used at factor 0
    assert first.conv1.weight.grad is not None


def test_plain_networks_are_refused_with_the_suite_before_any_work(tiny_suite):
    tiny_suite["defenses"] = [{"name": "rolss", "label": "RoLSS"}, {"name": "none"}]
    with pytest.raises(ConfigError) as info:
        resolve_suite(tiny_suite)
    assert "RoLSS" in str(info.value) and "'tiny-cnn' has no additive skip connections" in str(info.value)
    tiny_suite["target"]["architecture"] = "tiny-resnet"
    assert resolve_suite(tiny_suite).defenses[0].members[0].name == "rolss"
    with pytest.raises(MibenchError, match="3 factors, architecture 'resnet18' has 4 stages"):
        RoLSS(RoLSSParams(stage_scales=[1, 1, 0])).factors(resnet18())


def test_tts_trains_a_first_stage_with_every_skip_then_continues_without_the_last(defense_data):
    spec = TrainSpec(epochs=1, batch_size=16, lr=0.05, selection="last")
    torch.manual_seed(0)
    model = build_classifier("tiny-resnet", {"width": 8}, num_classes=5, in_channels=3, image_size=16)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    original = TTS.wrap

    def spy(self, net):
        seen.append({k: v.clone() for k, v in net.state_dict().items()})
        return original(self, net)

    TTS.wrap = spy
    try:
        stack = DefenseStack([TTS(TTSParams(first_stage_epochs=1))])
        trained = stack.fit(model, defense_data, spec, RunContext(seed=4))
    finally:
        TTS.wrap = original
    # wrap saw the first stage's weights (trained with every skip), and the second stage moved them on
    assert any(not torch.equal(start[k], seen[0][k]) for k in start)
    assert all(b.skip_scale == 0 for b in trained.model.blocks)
    assert any(not torch.equal(seen[0][k], v) for k, v in trained.model.state_dict().items())
    stat = next(s for s in trained.stats if s.metric == "skips_removed_fraction")
    assert stat.value == 1.0  # tiny-resnet: one stage, its last
