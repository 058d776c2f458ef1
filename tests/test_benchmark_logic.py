"""The benchmark's measurement logic (not timings): warm-ups first, interleaved rounds, median and spread."""

from __future__ import annotations

import pytest
import torch

from benchmarks.stages import interleaved_seconds, rate_summary


def test_candidates_are_warmed_up_then_timed_in_interleaved_rounds():
    calls = []

    def factory(name):  # preparation (untimed) and the run (timed) are both recorded
        def prepare():
            calls.append(f"prepare {name}")
            return lambda: calls.append(name)

        return prepare

    candidates = {name: factory(name) for name in ("a", "b", "c")}
    seconds = interleaved_seconds(candidates, repeats=2, device=torch.device("cpu"))
    rounds = [step for name in ("a", "b", "c") for step in (f"prepare {name}", name)]
    assert calls == rounds * 3  # one warm-up each, then two rounds a, b, c, each run freshly prepared
    assert {k: len(v) for k, v in seconds.items()} == {"a": 2, "b": 2, "c": 2}


def test_rate_is_the_median_run_with_slowest_and_fastest():
    rate = rate_summary(100.0, [2.0, 1.0, 4.0])
    assert rate == {"per_s": pytest.approx(50.0), "per_s_min": 25.0, "per_s_max": 100.0, "runs": 3}
