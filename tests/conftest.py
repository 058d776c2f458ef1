"""Shared fixtures: a tiny suite (same code paths as the paper suites, small sizes) and helpers."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

torch.set_num_threads(2)

TINY_SUITE: dict[str, Any] = {
    "name": "tiny",
    "seed": 0,
    "seeds": [0, 1],
    "data": {
        "dataset": "synthetic-identities",
        "image_size": 16,
        "params": {
            "num_private": 6,
            "num_public": 8,
            "train_per_identity": 16,
            "test_per_identity": 6,
            "public_per_identity": 16,
        },
    },
    "target": {"architecture": "tiny-cnn", "train": {"epochs": 3, "batch_size": 32, "lr": 0.05, "selection": "last"}},
    "evaluator": {
        "architecture": "tiny-resnet",
        "input_size": 16,
        "train": {"epochs": 3, "batch_size": 32, "lr": 0.05, "selection": "last"},
    },
    "defenses": [{"name": "none", "label": "-"}],
    "attacks": [
        {
            "name": "gmi",
            "label": "GMI",
            "params": {"gan": {"z_dim": 8, "width": 8, "epochs": 2, "batch_size": 32}, "iterations": 5, "restarts": 2},
        }
    ],
    "attacked_classes": 4,
    "metrics": [
        "test-accuracy",
        "attack-accuracy",
        "knn-distance",
        {"name": "frechet-distance", "params": {"fake_subset": "all"}},
    ],
}


@pytest.fixture
def tiny_suite() -> dict[str, Any]:
    """A fresh, mutable copy of the tiny suite mapping."""
    return copy.deepcopy(TINY_SUITE)


def write_suite(path: Path, suite: dict[str, Any], tmp_root: Path | None = None) -> Path:
    """Write a suite YAML whose outputs go under `tmp_root` (default: the file's folder)."""
    root = tmp_root or path.parent
    suite = {**suite, "output": {"dir": str(root / "run"), "cache": str(root / "cache")}}
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path
