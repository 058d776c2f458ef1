"""An out-of-tree attack, defense and metric, written against `mibench.api` only, registered through
`MIBENCH_PLUGINS` and run end to end by `mibench run` (in its own process, as a user would)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from mibench.registry import PLUGINS_VARIABLE
from tests.conftest import TINY_SUITE, write_suite

PLUGIN = '''
"""A plug-in living outside mibench: only the documented interfaces."""

import torch

from mibench.api import (
    ATTACKS, DEFENSES, METRICS, Access, Attack, Defense, Measurement, Metric, NoParams, Params, Reconstructions,
    TrainingSetup,
)


class ShrinkParams(Params):
    weight: float = 0.01


@DEFENSES.register
class LogitShrink(Defense):
    """Adds weight * mean squared logit to the loss."""
    name = "plugin-shrink"
    paper = "plug-in test"
    Params = ShrinkParams

    def configure(self, setup: TrainingSetup) -> TrainingSetup:
        weight = self.params.weight
        return setup.with_term("shrink", lambda model, x, y, out: {"shrink": weight * out.logits.pow(2).mean()})


@ATTACKS.register
class RandomSearch(Attack):
    """Per class, the first of 8 random images the target labels as that class (label-only access)."""
    name = "plugin-random"
    paper = "plug-in test"
    access = Access.LABELS
    Params = NoParams

    def invert(self, prior, oracle, classes, ctx):
        candidates = torch.rand(8, *oracle.image_shape, generator=ctx.generator("candidates"))
        labels = oracle.labels(candidates)
        picks = [int((labels == c).nonzero()[0]) if (labels == c).any() else 0 for c in classes.tolist()]
        return Reconstructions(images=candidates[picks], labels=classes.clone(), restarts=torch.zeros_like(classes))


@METRICS.register
class PixelMean(Metric):
    """The mean pixel value of the reconstructions."""
    name = "plugin-pixel-mean"
    paper = "plug-in test"
    Params = NoParams
    scope = "attack"

    def compute(self, inputs, ctx):
        return [Measurement("pixel_mean", float(inputs.reconstructions.images.mean()), None, "score")]
'''


def test_an_out_of_tree_attack_defense_and_metric_run_through_the_documented_paths(tmp_path):
    (tmp_path / "my_mi_plugin.py").write_text(textwrap.dedent(PLUGIN))
    suite = {
        **TINY_SUITE,
        "seeds": [0],
        "defenses": [{"name": "none", "label": "-"}, {"name": "plugin-shrink", "label": "Shrink"}],
        "attacks": [{"name": "plugin-random", "label": "Random"}],
        "metrics": ["test-accuracy", "plugin-pixel-mean"],
    }
    path = write_suite(tmp_path / "suite.yaml", suite)
    env = {**os.environ, PLUGINS_VARIABLE: "my_mi_plugin", "PYTHONPATH": str(tmp_path)}
    listed = subprocess.run(
        [sys.executable, "-m", "mibench", "list"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "plugin-shrink" in listed and "plugin-random" in listed and "plugin-pixel-mean" in listed
    done = subprocess.run(
        [sys.executable, "-m", "mibench", "run", str(path), "--device", "cpu", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    means = [r for r in records if r["metric"] == "pixel_mean"]
    assert {r["defense"] for r in means} == {"-", "Shrink"} and {r["attack"] for r in means} == {"Random"}
    assert all(0.0 <= r["value"] <= 1.0 for r in means)
    accuracy = {r["defense"]: r["value"] for r in records if r["metric"] == "acc"}
    assert set(accuracy) == {"-", "Shrink"}
