"""Report statistics against scipy and hand-computed values."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from mibench.reporting.stats import holm, seeds_for_power, t_interval, welch_p


def test_t_interval_equals_scipys():
    values = [0.12, 0.18, 0.15, 0.11, 0.16]
    low, high = t_interval(values)
    ref = stats.t.interval(0.95, len(values) - 1, loc=sum(values) / 5, scale=stats.sem(values))
    assert (low, high) == pytest.approx(ref)
    assert t_interval([0.3]) is None


def test_welch_p_equals_scipys():
    a, b = [0.86, 0.88, 0.85, 0.87, 0.84], [0.80, 0.82, 0.83, 0.79, 0.81]
    assert welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert welch_p([0.5, 0.5], [0.4, 0.4]) is None  # no spread anywhere: undefined, never "significant"
    assert welch_p([0.5], [0.4, 0.6]) is None


def test_holm_adjustment_by_hand():
    # Sorted 0.01, 0.02, 0.03, 0.04 with m = 4: 4 x 0.01 = 0.04, 3 x 0.02 = 0.06, 2 x 0.03 = 0.06 (monotone), 0.04.
    assert holm([0.03, 0.01, 0.04, 0.02]) == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])


def test_seeds_for_power_normal_approximation():
    a, b = [1.0, 2.0, 3.0], [2.0, 3.0, 4.0]  # difference 1, both variances 1
    assert seeds_for_power(a, b) == math.ceil(2 * (1.959963984540054 + 0.8416212335729143) ** 2)
    assert seeds_for_power(a, a) is None
