"""Shared fixtures: a tiny suite (same code paths as the paper suites, small sizes) and helpers."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from mibench.running.hostmem import OPT_OUT_VARIABLE
from mibench.running.store import ArtifactStore

torch.set_num_threads(2)
# The test process runs many small jobs in one long life: with mibench's CPU allocator setting (running.hostmem: no
# mmap for large blocks, heap never trimmed), which a job start applies to the whole process, later tests ran up to
# 16x slower (a PLG-MI search test 37 s instead of 2.3 s, the PLG-MI cGAN fixture 34 s instead of 9 s). Tests keep
# glibc's default here; tests/test_hostmem.py and the fresh-process byte check of tests/test_reliability.py run the
# setting in their own processes.
os.environ[OPT_OUT_VARIABLE] = "default"

# MID trains with the official identity-balanced sampler (16 identities x 4 per batch); tiny data has too few.
MID_SHUFFLED: dict[str, Any] = {"recipe": {"sampler": "shuffle"}}

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


def run_suite_file(suite_path: Path, cache: Path, run_dir: Path, force=()):
    """Plan and run a suite file on the CPU, silently; returns the run summary."""
    from mibench.api.progress import SILENT
    from mibench.running.plan import build_plan
    from mibench.running.runner import run_plan
    from mibench.suite import load_suite

    plan = build_plan(load_suite(suite_path))
    return run_plan(
        plan, store=ArtifactStore(cache), run_dir=run_dir, device=torch.device("cpu"), reporter=SILENT, force=force
    )


def tiny_model(seed: int = 0, num_classes: int = 5):
    """An untrained tiny CNN for 16x16 RGB inputs, initialised from `seed`."""
    from mibench.models.base import build_classifier

    torch.manual_seed(seed)
    return build_classifier("tiny-cnn", {}, num_classes=num_classes, in_channels=3, image_size=16)


@pytest.fixture(scope="session")
def defense_data():
    """Five private identities at 16x16 (defense tests)."""
    from mibench.data.synthetic import SyntheticIdentities, SyntheticParams

    return SyntheticIdentities(SyntheticParams(num_private=5, num_public=2)).load(None, 16, None)


@pytest.fixture(scope="session")
def attack_setting():
    """A frozen tiny target trained on six private identities, and the data (twelve disjoint public identities)."""
    from mibench.api.context import RunContext
    from mibench.api.recipe import TrainSpec
    from mibench.data.synthetic import SyntheticIdentities, SyntheticParams
    from mibench.models.base import freeze
    from mibench.training.classifier import train_classifier

    data = SyntheticIdentities(SyntheticParams(num_private=6, num_public=12, public_per_identity=30)).load(
        None, 16, None
    )
    target = tiny_model(0, num_classes=6)
    spec = TrainSpec(epochs=6, batch_size=32, lr=0.05, selection="last")
    train_classifier(target, data.private_train, data.private_test, spec, RunContext(seed=1))
    return freeze(target), data


def white_box(target):
    """White-box access to a target of the attack setting."""
    from mibench.api.oracle import Access, TargetOracle

    return TargetOracle(target, Access.WHITE_BOX, num_classes=6, image_shape=(3, 16, 16))


def hit_rate(target, images, labels) -> float:
    """How often the target classifies `images` as `labels`."""
    with torch.no_grad():
        return (target(images).logits.argmax(1) == labels).float().mean().item()


@pytest.fixture(scope="session")
def gmi_gan(attack_setting):
    """A GMI WGAN-GP trained on the attack setting's public identities: (GMI attack, its prior)."""
    from mibench.api.attack import DataInfo
    from mibench.api.context import RunContext
    from mibench.attacks.gmi import GMI, GMIParams
    from mibench.gan.wgan_gp import WGANGPParams

    _, data = attack_setting
    torch.manual_seed(0)
    params = GMIParams(gan=WGANGPParams(z_dim=16, width=16, epochs=80, batch_size=32), iterations=60, restarts=3)
    attack = GMI(params)
    prior = attack.build_prior(DataInfo(3, 16, 6))
    attack.train_prior(prior, data.public, None, RunContext(seed=2))
    return attack, prior


@pytest.fixture(scope="session")
def plgmi_prior(attack_setting):
    """A PLG-MI conditional GAN trained against the attack setting's target: (PLG-MI attack, its prior)."""
    from mibench.api.attack import DataInfo
    from mibench.api.context import RunContext
    from mibench.attacks.plgmi import PLGMI, CGANParams, PLGMIParams

    target, data = attack_setting
    torch.manual_seed(0)
    params = PLGMIParams(
        cgan=CGANParams(ch=16, z_dim=32, iterations=40, top_n=20, batch_size=32), iterations=100, restarts=3
    )
    attack = PLGMI(params)
    prior = attack.build_prior(DataInfo(3, 16, 6))
    attack.train_prior(prior, data.public, white_box(target), RunContext(seed=2))
    return attack, prior


def random_uint8_images(n: int, seed: int, size: int = 16) -> torch.Tensor:
    """n random RGB uint8 images (a fixture for feature-space metrics)."""
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def random_measure_inputs(private_labels: list[int], recon: torch.Tensor, recon_labels: list[int], classes=(0, 1)):
    """MeasureInputs over random private images with `private_labels`, the given reconstructions, identity models."""
    from mibench.api.attack import Reconstructions
    from mibench.api.metric import MeasureInputs
    from mibench.data.base import UNLABELLED, DataBundle, ImageSet

    private = ImageSet(random_uint8_images(len(private_labels), 0), torch.tensor(private_labels))
    test = ImageSet(random_uint8_images(2, 1), torch.tensor([0, 1]))
    public = ImageSet(random_uint8_images(1, 2), torch.tensor([UNLABELLED]))
    data = DataBundle(private, test, public, max(private_labels) + 1, "random")
    labels = torch.tensor(recon_labels)
    return MeasureInputs(
        target=torch.nn.Identity(),
        evaluator=torch.nn.Identity(),
        evaluator_accuracy=1.0,
        data=data,
        eval_data=data,
        classes=torch.tensor(classes),
        reconstructions=Reconstructions(recon, labels, torch.zeros(len(labels), dtype=torch.long)),
        device=torch.device("cpu"),
    )


TINY_STYLE_GAN = {"z_dim": 16, "w_dim": 16, "width": 16, "epochs": 40, "batch_size": 32}


@pytest.fixture(scope="session")
def tiny_style_prior(attack_setting):
    """A tiny style generator trained on the attack setting's public identities (PPA's and Mirror's prior)."""
    from mibench.api.attack import DataInfo
    from mibench.api.context import RunContext
    from mibench.attacks.ppa import PPA, PPAParams
    from mibench.gan.style_prior import StyleGANParams

    _, data = attack_setting
    torch.manual_seed(0)
    attack = PPA(PPAParams(gan=StyleGANParams(**TINY_STYLE_GAN)))
    prior = attack.build_prior(DataInfo(3, 16, 6))
    attack.train_prior(prior, data.public, None, RunContext(seed=3))
    return prior


def artifact_bytes(store: ArtifactStore, stage: str, key: str) -> dict:
    """What an artifact holds, timings excepted: file hashes, and values.json without wall times."""
    files = dict(store.meta(stage, key)["files"])
    files.pop("values.json")
    measured = [v for v in store.read_json(stage, key, "values.json") if not v["metric"].endswith("time_s")]
    return {"files": {name: entry["sha256"] for name, entry in files.items()}, "values": measured}
