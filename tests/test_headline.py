"""The one-sentence summary `mibench run` prints under its table, on hand-made records."""

from __future__ import annotations

import pytest

from mibench.errors import MibenchError
from mibench.registry import PLUGINS_VARIABLE, load_plugins
from mibench.reporting.headline import headline
from tests.test_report import rec


def _run(seeds=(0,)):
    out = []
    for seed in seeds:
        out += [rec("-", None, "acc", seed, 0.99, True), rec("Trap-MID", None, "acc", seed, 0.97, True),
                rec("MID", None, "acc", seed, 0.985, True)]  # fmt: skip
        out += [rec("-", "GMI", "aa1", seed, 0.60, False), rec("Trap-MID", "GMI", "aa1", seed, 0.20, False),
                rec("MID", "GMI", "aa1", seed, 0.40, False)]  # fmt: skip
        out += [rec("-", "KED-MI", "aa1", seed, 0.30, False), rec("Trap-MID", "KED-MI", "aa1", seed, 0.35, False)]
    return out


def test_headline_names_the_strongest_defense_its_aa1_and_its_accuracy_cost():
    text = headline(_run(), "-")
    assert text.startswith("Against GMI, the undefended target gives AA-1 60.0%; Trap-MID lowers it most, to 20.0% "
                           "for 2.0 points of test accuracy.")  # fmt: skip
    assert "Against KED-MI, the undefended target gives AA-1 30.0% and no defense lowers it." in text
    assert text.endswith("One seed: a direction, not a difference measured against seed noise (add seeds for that).")


def test_headline_with_seeds_says_nothing_of_noise_and_without_a_baseline_is_empty():
    assert "One seed" not in headline(_run((0, 1)), "-")
    assert headline(_run(), None) == ""
    assert headline([r for r in _run() if r.defense != "-"], "-") == ""


def test_a_plugin_module_that_cannot_be_imported_is_one_clear_error(monkeypatch):
    import mibench.registry as registry

    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setenv(PLUGINS_VARIABLE, "no_such_mibench_plugin")
    with pytest.raises(MibenchError, match="MIBENCH_PLUGINS: cannot import plug-in module 'no_such_mibench_plugin'"):
        load_plugins()
