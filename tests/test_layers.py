"""The import-linter contracts in pyproject.toml hold today and fail on an upward import and on a circle.

Each case copies the package's sources, changes one import, and runs `lint-imports` on the copy (first on
`sys.path`), with the repository's own contracts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is a dev dependency: pip install -e '.[dev]'")


def lint(tmp_path: Path, edits: dict[str, str]) -> subprocess.CompletedProcess:
    """`lint-imports` over a copy of mibench/ with `edits` ({module path: line appended}) applied."""
    shutil.copytree(ROOT / "mibench", tmp_path / "mibench", ignore=shutil.ignore_patterns("__pycache__", "*.csv"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for module, line in edits.items():
        with open(tmp_path / module, "a", encoding="utf-8") as f:
            f.write(f"\n{line}\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    return subprocess.run([str(LINT), "--no-cache"], cwd=tmp_path, env=env, capture_output=True, text=True)


def test_the_contracts_hold_on_the_package(tmp_path):
    done = lint(tmp_path, {})
    assert done.returncode == 0, done.stdout[-3000:]
    assert "2 kept, 0 broken" in done.stdout


def test_an_interface_importing_the_runner_breaks_the_layers(tmp_path):
    done = lint(tmp_path, {"mibench/api/records.py": "import mibench.running.store  # noqa"})
    assert done.returncode == 1
    assert "layers" in done.stdout and "BROKEN" in done.stdout
    assert "mibench.api.records -> mibench.running.store" in done.stdout


def test_a_method_importing_another_method_breaks_their_independence(tmp_path):
    done = lint(tmp_path, {"mibench/attacks/gmi.py": "import mibench.defenses.mid  # noqa"})
    assert done.returncode == 1
    assert "mibench.attacks.gmi -> mibench.defenses.mid" in done.stdout


def test_two_modules_of_one_package_importing_each_other_break_the_circle_contract(tmp_path):
    # suite.schema is imported by suite.loading; the reverse import closes a circle inside one layer
    done = lint(tmp_path, {"mibench/suite/schema.py": "import mibench.suite.loading  # noqa"})
    assert done.returncode == 1
    assert "no import circles" in done.stdout and "BROKEN" in done.stdout
