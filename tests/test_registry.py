"""The registries: decorator registration, loud duplicates, suggestions, and `mibench list`."""

from __future__ import annotations

from typing import ClassVar

import pytest

from mibench.api.defense import Defense
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


def test_fidelity_md_sections_agree_with_the_registry():
    """Every FIDELITY.md section names registered methods, their code's version and the official code they declare;
    every defense and attack (the baseline excepted) has a section (FIDELITY.md once said PLG-MI was version 1 while
    the code was version 2)."""
    import re
    from pathlib import Path

    from mibench.registry import ATTACKS, DEFENSES

    text = (Path(__file__).resolve().parents[1] / "FIDELITY.md").read_text()
    covered = set()
    for section in re.split(r"(?m)^### ", text)[1:]:
        header = section.splitlines()[0]
        names = re.findall(r"`([a-z0-9+-]+)`", header)
        version = re.search(r"— version (\d+)", header)
        assert names and version, header
        found = re.search(r"([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+) @ ([0-9a-f]{7,40})", section)
        for name in names:
            cls = DEFENSES.get(name) if name in DEFENSES else ATTACKS.get(name)
            assert cls.version == int(version.group(1)), f"{name}: FIDELITY.md {version.group(1)}, code {cls.version}"
            assert cls.official == (f"{found.group(1)} @ {found.group(2)}" if found else None), name
            covered.add(name)
    registered = {name for name, _ in DEFENSES} | {name for name, _ in ATTACKS}
    assert registered - covered == {"none"}


def test_every_attack_declares_the_published_pipeline_of_its_official_evaluation():
    """Which official evaluation code measures each attack under `protocol: published` (None: mibench's standard
    pipeline, said in the records). LOMMA (KED-MI) once inherited KED-MI's pipeline by the class hierarchy."""
    from mibench.registry import ATTACKS

    expected = {
        "gmi": "plgmi-baselines", "kedmi": "plgmi-baselines",  # PLG-MI's baselines/recovery.py
        "lomma-gmi": "lomma", "lomma-kedmi": "lomma",  # Trap-MID lomma/evaluation.py, both methods
        "plgmi": "plgmi", "plgmi-plus": "plgmi", "plgmi-plusplus": "plgmi",
        "ppa": "ppa", "if-gmi": "ppa",  # IF-GMI evaluates with PPA's code
        "brepmi": "brepmi",  # brep_mi_utils.decision_Evaluator: low2high before the evaluator
    }  # fmt: skip
    declared = {name: cls.published_pipeline for name, cls in ATTACKS}
    assert declared == {name: expected.get(name) for name in declared}
