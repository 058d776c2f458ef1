"""mibench against outputs of the official implementations (tests/goldens/, written by the generators in parity/).

Each golden holds tiny inputs, the random draws both sides share, and what the official code computed from them;
`parity.<name>.ours` runs mibench's counterpart on the same inputs. Floats must agree to a relative 1e-5 of each
output's largest magnitude, integers exactly.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path

import pytest
import torch

from parity import table

GOLDENS = Path(__file__).parent / "goldens"
MANIFEST = json.loads((GOLDENS / "manifest.json").read_text())
RELATIVE = 1e-5


def load(name: str) -> dict[str, torch.Tensor]:
    return torch.load(GOLDENS / f"{name}.pt", weights_only=True)


def mismatches(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> list[str]:
    """'name: how far' for every output outside the tolerance (empty when all agree)."""
    problems = []
    for name, want in expected.items():
        have = got[name].detach().cpu()
        if have.shape != want.shape:
            problems.append(f"{name}: shape {tuple(have.shape)}, official {tuple(want.shape)}")
        elif not want.is_floating_point():
            if not torch.equal(have, want):
                problems.append(f"{name}: {int((have != want).sum())} of {want.numel()} values differ")
        else:
            scale = float(want.abs().max()) if want.numel() else 0.0
            worst = float((have.double() - want.double()).abs().max()) if want.numel() else 0.0
            if worst > RELATIVE * max(scale, 1e-12):
                problems.append(f"{name}: max difference {worst:.3g} (largest official value {scale:.3g})")
    return problems


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_mibench_computes_what_the_official_code_computed(name):
    golden = load(name)
    expected = {k: golden[k] for k in MANIFEST[name]["outputs"]}
    got = importlib.import_module(f"parity.{name}").ours(golden)
    assert not mismatches(got, expected), f"{name} ({MANIFEST[name]['repository']}): {mismatches(got, expected)}"


@pytest.mark.parametrize("name", ["negls", "trap_mid"])
def test_a_golden_perturbed_by_a_thousandth_fails(name):
    golden = load(name)
    expected = {k: golden[k] for k in MANIFEST[name]["outputs"]}
    got = importlib.import_module(f"parity.{name}").ours(golden)
    assert not mismatches(got, expected)
    first = next(k for k in sorted(expected) if expected[k].is_floating_point() and expected[k].abs().max() > 0)
    perturbed = {**expected, first: expected[first] * (1 + 1e-3)}
    assert any(p.startswith(f"{first}:") for p in mismatches(got, perturbed))


def test_each_golden_is_the_file_its_manifest_entry_names_and_all_stay_small():
    total = 0
    for name, entry in MANIFEST.items():
        data = (GOLDENS / f"{name}.pt").read_bytes()
        total += len(data)
        assert hashlib.sha256(data).hexdigest() == entry["golden_sha256"], name
        assert (Path(__file__).parents[1] / entry["generator"]).is_file(), name
    assert total < 20 * 2**20


def test_each_golden_was_made_from_the_official_commit_the_method_declares():
    for name, entry in MANIFEST.items():
        if "component" in entry:  # a shared piece from another repository (NVIDIA's StyleGAN2 in PPA)
            continue
        for method in entry["method"].split(","):
            declared = getattr(table.method_class(method), "official", None)  # architectures declare none
            assert declared in (None, f"{entry['repository']} @ {entry['commit']}"), (name, method)


def test_fidelity_md_carries_the_parity_table_of_the_manifest():
    text = (Path(__file__).parents[1] / "FIDELITY.md").read_text()
    assert table.render(MANIFEST) in text, "FIDELITY.md's parity table is stale: python -m parity.table"
    # the table is one block between one pair of markers (splicing it in beside the old markers once left copies)
    assert text.count(table.BEGIN) == 1 and text.count(table.END) == 1
