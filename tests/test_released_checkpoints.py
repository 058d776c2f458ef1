"""The released-checkpoint manifest: digests checked on read, published clean accuracies checked before attacks."""

from __future__ import annotations

import pytest
import torch

from mibench.checkpoints import (
    ACCURACY_TOLERANCE,
    check_released_accuracy,
    read_state_dict,
    released_checkpoints,
)
from mibench.errors import CheckpointError


def test_a_file_under_a_released_name_must_have_its_digest(tmp_path):
    forged = tmp_path / "resnet18-f37072fd.pth"  # torch.hub's name: the SHA-256 starts with f37072fd
    torch.save({"fc.weight": torch.zeros(2, 2)}, forged)
    with pytest.raises(CheckpointError, match=r"resnet18-f37072fd\.pth: SHA-256 [0-9a-f]{12}\.\.\. is not that of "):
        read_state_dict(forged, what="ResNet-18 ImageNet weights")
    renamed = tmp_path / "resnet18-mine.pth"  # the same bytes under a name of one's own are one's own file
    renamed.write_bytes(forged.read_bytes())
    assert set(read_state_dict(renamed)) == {"fc.weight"}


def test_published_accuracy_is_checked_with_a_tolerance_for_other_splits():
    published = released_checkpoints()["FaceNet_95.88.tar"]["accuracy"]
    assert published == 0.9588
    with pytest.raises(CheckpointError, match=r"10\.00% clean test accuracy .* \(3009 images\), published 95\.88%"):
        check_released_accuracy("/w/FaceNet_95.88.tar", 0.10, 3009, "evaluator checkpoint")
    # just inside the tolerance is another split or resolution, recorded, not refused
    assert "95.88%" in check_released_accuracy("/w/FaceNet_95.88.tar", published - ACCURACY_TOLERANCE + 1e-6, 10, "e")
    assert check_released_accuracy("/w/my_evaluator.tar", 0.10, 10, "e") is None  # not a released file


def test_every_entry_names_its_source_and_prefixes_agree_with_the_torch_hub_names():
    for name, entry in released_checkpoints().items():
        assert entry["source"] and entry["kind"] in {"evaluator", "target", "backbone", "metric", "gan"}, name
        if "sha256_prefix" in entry:
            assert name.rsplit(".", 1)[0].endswith("-" + entry["sha256_prefix"]), name
        if "accuracy" in entry:
            assert 0 < entry["accuracy"] < 1 and entry["accuracy_source"], name
