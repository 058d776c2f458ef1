"""Cache keys: stable under YAML reordering and spelled-out defaults; changed by any parameter."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mibench.hashing import canonical_json, content_key, derive_seed
from mibench.running.plan import build_plan
from mibench.suite import resolve_suite


def keys(suite: dict) -> dict[str, str]:
    plan = build_plan(resolve_suite(copy.deepcopy(suite)))
    return {job.label: job.key for job in plan.jobs.values()}


def reorder(obj):
    if isinstance(obj, dict):
        return {k: reorder(obj[k]) for k in reversed(list(obj))}
    if isinstance(obj, list):
        return [reorder(v) for v in obj]
    return obj


def test_keys_stable_under_key_reordering(tiny_suite):
    assert keys(tiny_suite) == keys(reorder(tiny_suite))


def test_keys_stable_when_a_default_is_spelled_out(tiny_suite):
    before = keys(tiny_suite)
    tiny_suite["attacks"][0]["params"]["lr"] = 0.02
    tiny_suite["attacks"][0]["params"]["momentum"] = 0.9
    tiny_suite["target"]["train"]["momentum"] = 0.9
    assert keys(tiny_suite) == before


def test_labels_do_not_change_keys(tiny_suite):
    before = set(keys(tiny_suite).values())
    tiny_suite["attacks"][0]["label"] = "Generative MI"
    tiny_suite["name"] = "renamed"
    assert set(keys(tiny_suite).values()) == before


@pytest.mark.parametrize(
    ("path", "value", "changed", "unchanged"),
    [
        (("attacks", 0, "params", "iterations"), 6, {"invert", "measure"}, {"evaluator", "target", "prior"}),
        (("attacks", 0, "params", "gan", "epochs"), 3, {"prior", "invert", "measure"}, {"evaluator", "target"}),
        (("target", "train", "lr"), 0.04, {"target", "invert", "measure"}, {"evaluator", "prior"}),
        (("evaluator", "train", "epochs"), 4, {"evaluator", "measure"}, {"target", "prior", "invert"}),
        (("data", "params", "seed"), 7, {"evaluator", "target", "prior", "invert", "measure"}, set()),
        (("attacked_classes",), 3, {"invert", "measure"}, {"evaluator", "target", "prior"}),
    ],
)
def test_each_parameter_changes_exactly_the_dependent_keys(tiny_suite, path, value, changed, unchanged):
    plan_before = build_plan(resolve_suite(copy.deepcopy(tiny_suite)))
    node = tiny_suite
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    plan_after = build_plan(resolve_suite(tiny_suite))
    by_stage = lambda plan: {s: {j.key for j in jobs} for s, jobs in plan.by_stage().items()}  # noqa: E731
    before, after = by_stage(plan_before), by_stage(plan_after)
    for stage in changed:
        assert before[stage].isdisjoint(after[stage]) or stage == "measure", stage
        assert before[stage] != after[stage], stage
    for stage in unchanged:
        assert before[stage] == after[stage], stage


def test_plan_shares_target_independent_prior_and_evaluator(tiny_suite):
    tiny_suite["seeds"] = [0, 1, 2]
    stages = build_plan(resolve_suite(tiny_suite)).by_stage()
    assert len(stages["evaluator"]) == 1
    assert len(stages["prior"]) == 1  # GMI's GAN does not depend on the target
    assert len(stages["target"]) == 3
    assert len(stages["invert"]) == 3
    assert len(stages["measure"]) == 6  # target-scope + attack-scope per seed


def test_seeds_change_run_jobs_but_not_shared_ones(tiny_suite):
    plan = build_plan(resolve_suite(tiny_suite))
    targets = [j.payload["seed"] for j in plan.by_stage()["target"]]
    assert len(set(targets)) == 2


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(max_size=5), json_values, max_size=6))
def test_content_key_ignores_dict_order(payload):
    shuffled = dict(reversed(list(payload.items())))
    assert content_key(payload) == content_key(shuffled)
    assert canonical_json(payload) == canonical_json(shuffled)


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed(0, "target") == derive_seed(0, "target")
    assert len({derive_seed(s, role) for s in range(20) for role in ("target", "invert")}) == 40
    assert all(0 <= derive_seed(s) < 2**31 for s in range(100))
