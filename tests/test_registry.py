"""The registries: decorator registration, loud duplicates, suggestions, and `mibench list`."""

from __future__ import annotations

from typing import ClassVar

import pytest

from mibench.defense import Defense
from mibench.errors import UnknownNameError
from mibench.params import NoParams
from mibench.registry import ARCHITECTURES, ATTACKS, DATASETS, DEFENSES, METRICS, Registry


def make_defense(name: str) -> type:
    return type(f"D_{name}", (Defense,), {"name": name, "paper": "p", "Params": NoParams})


def test_register_and_get():
    reg = Registry("widget", base=Defense)
    cls = reg.register(make_defense("w1"))
    assert reg.get("w1") is cls
    assert "w1" in reg


def test_duplicate_name_raises_naming_both_classes():
    reg = Registry("widget")
    reg.register(make_defense("dup"))
    with pytest.raises(ValueError, match=r"widget 'dup' is registered twice: by .*D_dup and by .*D_dup"):
        reg.register(make_defense("dup"))


def test_base_class_and_attributes_checked():
    reg = Registry("widget", base=Defense)
    with pytest.raises(TypeError, match="must subclass Defense"):
        reg.register(type("X", (), {"name": "x", "paper": "p", "Params": NoParams}))
    with pytest.raises(TypeError, match="lacks the class attribute `paper`"):
        Registry("widget").register(type("Y", (), {"name": "y", "Params": NoParams}))


def test_unknown_name_suggests():
    with pytest.raises(UnknownNameError) as info:
        DEFENSES.get("nnoe")
    assert "did you mean 'none'?" in str(info.value)


def test_builtin_plugins_are_registered():
    assert "none" in DEFENSES.names()
    assert "gmi" in ATTACKS.names()
    assert {"test-accuracy", "attack-accuracy", "knn-distance", "frechet-distance"} <= set(METRICS.names())
    assert "synthetic-identities" in DATASETS.names()
    assert {"tiny-cnn", "tiny-resnet"} <= set(ARCHITECTURES.names())


@pytest.mark.parametrize("registry", [DEFENSES, ATTACKS, METRICS, DATASETS, ARCHITECTURES])
def test_every_entry_has_paper_version_and_default_params(registry):
    for name, cls in registry:
        assert cls.paper, name
        assert isinstance(cls.version, int)
        cls.Params()  # every parameter has a default (the paper's)


def test_list_command_prints_every_kind(capsys):
    from mibench.cli import main

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for word in ("defenses", "attacks", "metrics", "datasets", "architectures", "gmi", "Secret Revealer"):
        assert word in out


class _Unused:  # keeps ClassVar import meaningful for type checkers reading this file
    x: ClassVar[int] = 0
